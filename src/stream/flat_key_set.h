// FlatKeySet: an open-addressing set of 64-bit keys, each with the event time it was
// inserted for, used for de-duplication over a time horizon. No per-insert allocation;
// expired keys are dropped when the table is rebuilt (when it would otherwise grow).
//
// Sized for memory: a device at 1 Hz with event ids holds an hour of keys (3,600), and the
// table is most of a device's state (src/stream README, "State, eviction, memory"). The
// capacity is any number of slots (a key's home slot is the high half of Mix(key) ×
// capacity, not a power-of-two mask), the table is rebuilt at 70 % full to 2.5 × its live
// keys (40 % full): 23–40 bytes per key, where power-of-two tables grown at half full to
// four times their keys took 32–128 (73 at 3,600 keys).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace joule::stream {

class FlatKeySet {
 public:
  struct Entry {
    uint64_t key = 0;  // 0 = empty slot
    int64_t t = 0;
  };

  // Inserts `key` (stamped with event time t). Returns false when already present.
  // Keys older than `expire_before` may be dropped while the table is rebuilt.
  bool Insert(uint64_t key, int64_t t, int64_t expire_before) {
    if (key == 0) key = 1;
    if ((size_ + 1) * 10 > slots_.size() * 7) Grow(expire_before);
    const size_t cap = slots_.size();
    for (size_t i = Home(key, cap);; i = i + 1 == cap ? 0 : i + 1) {
      Entry& e = slots_[i];
      if (e.key == key) return false;
      if (e.key == 0) {
        e.key = key;
        e.t = t;
        ++size_;
        return true;
      }
    }
  }

  size_t size() const { return size_; }
  size_t capacity() const { return slots_.size(); }
  template <typename F>
  void ForEach(F&& f) const {
    for (const Entry& e : slots_) {
      if (e.key != 0) f(e);
    }
  }
  void Clear() {
    slots_.clear();
    size_ = 0;
  }

 private:
  static constexpr size_t kMinSlots = 8;
  static uint64_t Mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
  }
  static size_t Home(uint64_t key, size_t cap) {
    return static_cast<size_t>((static_cast<unsigned __int128>(Mix(key)) * cap) >> 64);
  }
  // Rebuilds the table with room for its live keys (those at or after expire_before) and
  // the one being inserted at 40 % full: amortized O(1) per insert, and it shrinks when
  // most keys have expired.
  void Grow(int64_t expire_before) {
    size_t live = 0;
    for (const Entry& e : slots_) live += (e.key != 0 && e.t >= expire_before) ? 1 : 0;
    const size_t cap = (live + 1) * 5 / 2;
    Rebuild(cap < kMinSlots ? kMinSlots : cap, expire_before);
  }
  void Rebuild(size_t cap, int64_t expire_before) {
    std::vector<Entry> old;
    old.swap(slots_);
    slots_.assign(cap, Entry{});
    size_ = 0;
    for (const Entry& e : old) {
      if (e.key == 0 || e.t < expire_before) continue;
      for (size_t i = Home(e.key, cap);; i = i + 1 == cap ? 0 : i + 1) {
        if (slots_[i].key == 0) {
          slots_[i] = e;
          ++size_;
          break;
        }
      }
    }
  }

  std::vector<Entry> slots_;
  size_t size_ = 0;
};

}  // namespace joule::stream

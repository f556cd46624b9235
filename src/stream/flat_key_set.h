// FlatKeySet: an open-addressing set of 64-bit keys, each with the event time it was
// inserted for, used for de-duplication over a time horizon. No per-insert allocation;
// expired keys are dropped when the table would otherwise grow.
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
  // Keys older than `expire_before` may be dropped while growing.
  bool Insert(uint64_t key, int64_t t, int64_t expire_before) {
    if (key == 0) key = 1;
    if ((size_ + 1) * 2 > slots_.size()) Grow(expire_before);
    size_t mask = slots_.size() - 1;
    for (size_t i = Mix(key) & mask;; i = (i + 1) & mask) {
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

  // Drops keys with t < expire_before (rebuilds the table).
  void Expire(int64_t expire_before) { Rebuild(slots_.size(), expire_before); }

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
  static uint64_t Mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
  }
  // Sizes the table so that live keys fill at most a quarter of it: amortized O(1).
  void Grow(int64_t expire_before) {
    size_t live = 0;
    for (const Entry& e : slots_) live += (e.key != 0 && e.t >= expire_before) ? 1 : 0;
    size_t cap = 16;
    while (cap < 4 * (live + 1)) cap *= 2;
    Rebuild(cap, expire_before);
  }
  void Rebuild(size_t cap, int64_t expire_before) {
    std::vector<Entry> old;
    old.swap(slots_);
    slots_.assign(cap, Entry{});
    size_ = 0;
    size_t mask = cap - 1;
    for (const Entry& e : old) {
      if (e.key == 0 || e.t < expire_before) continue;
      for (size_t i = Mix(e.key) & mask;; i = (i + 1) & mask) {
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

// FlatStringMap: an insert-only hash map from strings (device ids) to values, for the
// per-event lookups of the processors and the memory latest store. Compared with
// std::unordered_map<std::string, V> (a bucket array pointing at the node before each
// chain, then one heap node per entry), a lookup here touches one slot in a flat
// open-addressing array (the 64-bit hash and an entry index, 16 bytes) and then the entry
// in a dense vector: two cache misses instead of three or four. The caller passes the hash
// (Hash(key)), so one hash serves several tables and a batch can prefetch ahead
// (PrefetchSlot, then PrefetchEntry once the slot is cached).
//
// Entries are never erased; pointers and references to values are invalidated by the next
// insertion (the entry vector may grow). Not thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace joule {

template <class V>
class FlatStringMap {
 public:
  using Entry = std::pair<std::string, V>;

  static uint64_t Hash(std::string_view key) { return std::hash<std::string_view>{}(key); }

  size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }
  // Insertion order; for iteration (checkpoints).
  const std::vector<Entry>& entries() const { return entries_; }
  std::vector<Entry>& entries() { return entries_; }

  V* Find(std::string_view key, uint64_t hash) {
    const uint32_t i = IndexOf(key, hash);
    return i == kNone ? nullptr : &entries_[i].second;
  }
  const V* Find(std::string_view key, uint64_t hash) const {
    const uint32_t i = IndexOf(key, hash);
    return i == kNone ? nullptr : &entries_[i].second;
  }
  V* Find(std::string_view key) { return Find(key, Hash(key)); }
  const V* Find(std::string_view key) const { return Find(key, Hash(key)); }

  // The value of `key`, default-constructed (and true) when it was not there.
  std::pair<V*, bool> TryEmplace(std::string_view key, uint64_t hash) {
    if (slots_.empty() || (entries_.size() + 1) * 2 > slots_.size()) Grow();
    size_t s = hash & mask_;
    for (;; s = (s + 1) & mask_) {
      const Slot& slot = slots_[s];
      if (slot.index == kNone) break;
      if (slot.hash == hash && entries_[slot.index].first == key) {
        return {&entries_[slot.index].second, false};
      }
    }
    slots_[s] = Slot{hash, static_cast<uint32_t>(entries_.size())};
    entries_.emplace_back(std::string(key), V());
    return {&entries_.back().second, true};
  }
  std::pair<V*, bool> TryEmplace(std::string_view key) { return TryEmplace(key, Hash(key)); }

  // Brings the slot `hash` starts probing at into the cache.
  void PrefetchSlot(uint64_t hash) const {
    if (!slots_.empty()) __builtin_prefetch(&slots_[hash & mask_]);
  }
  // Brings the entry of the first slot with this hash into the cache (reads the slot: call
  // PrefetchSlot some lookups earlier).
  void PrefetchEntry(uint64_t hash) const {
    if (slots_.empty()) return;
    for (size_t s = hash & mask_;; s = (s + 1) & mask_) {
      const Slot& slot = slots_[s];
      if (slot.index == kNone) return;
      if (slot.hash == hash) {
        __builtin_prefetch(&entries_[slot.index]);
        return;
      }
    }
  }

 private:
  static constexpr uint32_t kNone = 0xffffffffu;
  struct Slot {
    uint64_t hash = 0;
    uint32_t index = kNone;
  };

  uint32_t IndexOf(std::string_view key, uint64_t hash) const {
    if (slots_.empty()) return kNone;
    for (size_t s = hash & mask_;; s = (s + 1) & mask_) {
      const Slot& slot = slots_[s];
      if (slot.index == kNone) return kNone;
      if (slot.hash == hash && entries_[slot.index].first == key) return slot.index;
    }
  }

  void Grow() {
    const size_t capacity = slots_.empty() ? 16 : slots_.size() * 2;
    std::vector<Slot> slots(capacity);
    const size_t mask = capacity - 1;
    for (const Slot& old : slots_) {
      if (old.index == kNone) continue;
      size_t s = old.hash & mask;
      while (slots[s].index != kNone) s = (s + 1) & mask;
      slots[s] = old;
    }
    slots_ = std::move(slots);
    mask_ = mask;
    entries_.reserve(capacity / 2);
  }

  std::vector<Slot> slots_;  // load factor <= 1/2; a power of two
  size_t mask_ = 0;
  std::vector<Entry> entries_;
};

}  // namespace joule

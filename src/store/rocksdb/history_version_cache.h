// HistoryVersionCache: what the RocksDB history store knows about its stored versions
// without reading them, so that Put reads before writing only the keys it cannot answer
// (docs/formats/history.md, "Versioned upsert"). Per (device, resolution) it keeps
//
//  * a frontier F: every stored key of the device and resolution has window_start <= F, so
//    a key after it is known to be absent (a new window: no read);
//  * the exact stored version (or absence) of the device's kRecent most recently touched
//    window starts (a window's repeated partial and final writes, late updates: no read).
//
// A device seen for the first time gets the store-wide floor as its frontier: the largest
// window start any key may have (persisted by the store, raised when devices are evicted).
// Everything it says is exact as long as only this store writes the database (RocksDB's
// LOCK file keeps other processes out) and every write goes through Wrote / MaybeWrote.
//
// Bounded: at most `max_devices` devices; beyond, an arbitrary device is evicted and its
// frontiers raise the floor (so a re-appearing device never assumes less than it knew).
//
// Thread-safety: the cache is split into `stripes`; all calls for one stripe must be
// serialized by the caller (the store's stripe mutexes). The floor is shared (atomics).
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "model/aggregate_record.h"

namespace joule::store {

class HistoryVersionCache {
 public:
  static constexpr size_t kResolutions = 3;
  static constexpr size_t kRecent = 4;
  // Frontier values: nothing stored (a key at INT64_MIN itself is still read), and unknown
  // (any key may be stored: a database written before frontiers were persisted).
  static constexpr int64_t kNothing = std::numeric_limits<int64_t>::min();
  static constexpr int64_t kUnknown = std::numeric_limits<int64_t>::max();

  enum class Known { kUnknown, kAbsent, kStored };
  struct Answer {
    Known known = Known::kUnknown;
    uint64_t version = 0;  // when kStored
  };

  // `floor[r]`: every stored key of resolution r has window_start <= floor[r].
  HistoryVersionCache(size_t max_devices, size_t stripes,
                      const std::array<int64_t, kResolutions>& floor);

  Answer Find(size_t stripe, model::Resolution r, std::string_view device_id,
              int64_t window_start_ns) const;
  // A read found `version` stored (`present`) or nothing.
  void Learn(size_t stripe, model::Resolution r, std::string_view device_id,
             int64_t window_start_ns, bool present, uint64_t version);
  // A write of `version` succeeded.
  void Wrote(size_t stripe, model::Resolution r, std::string_view device_id,
             int64_t window_start_ns, uint64_t version);
  // A write failed: it may or may not have been applied.
  void MaybeWrote(size_t stripe, model::Resolution r, std::string_view device_id,
                  int64_t window_start_ns);

  int64_t floor(model::Resolution r) const {
    return floor_[static_cast<size_t>(r)].load(std::memory_order_acquire);
  }
  size_t devices() const { return devices_.load(std::memory_order_relaxed); }
  uint64_t evictions() const { return evictions_.load(std::memory_order_relaxed); }

 private:
  struct Family {
    int64_t frontier = kUnknown;
    uint8_t used = 0;         // slots in use
    uint8_t absent_mask = 0;  // slot i: known absent (its version is meaningless)
    std::array<int64_t, kRecent> window_start{};
    std::array<uint64_t, kRecent> version{};
  };
  struct Device {
    std::array<Family, kResolutions> families;
  };
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  struct Eq {
    using is_transparent = void;
    bool operator()(std::string_view a, std::string_view b) const { return a == b; }
  };
  using Map = std::unordered_map<std::string, Device, Hash, Eq>;
  struct Stripe {
    Map map;
    uint64_t rng = 0x9e3779b97f4a7c15ULL;  // picks eviction victims
  };

  Device& Entry(size_t stripe, std::string_view device_id);
  // Sets the slot of `window_start_ns` (replacing the oldest window start when full).
  static void Remember(Family& f, int64_t window_start_ns, bool present, uint64_t version);
  void RaiseFloor(size_t r, int64_t value);
  void Evict(Stripe& s);

  size_t per_stripe_;
  std::vector<Stripe> stripes_;
  std::array<std::atomic<int64_t>, kResolutions> floor_;
  std::atomic<size_t> devices_{0};
  std::atomic<uint64_t> evictions_{0};
};

}  // namespace joule::store

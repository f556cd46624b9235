// OwnerEnergyCache: the bodies of GET /v1/owners/{id}/energy answers, reused while none of
// the owner's devices' 1h / 1d series has been written since and the owner's device list
// is the same.
//
// The route reads every device's records of the range (a RocksDB iterator and a decode of
// each record per device) and builds the JSON per request: ~200 µs of server CPU for the
// harness's 4 devices × 30 days. A dashboard asks the same question again and again.
//
// Exactness. What an answer depends on: (1) the owner's device ids (the metadata store,
// through its cache: listed on every request), (2) the stored records of each device's
// series of the requested resolution within [from, to), (3) the read horizon (retention).
// (1) and (2) are one check: for (2) the history route's RecordJsonCache, attached to the store,
// counts the writes of each (device, resolution) series it holds (`WriteCount`; the store's write
// observer runs after a write is visible to reads). A Snapshot holds each device's series object
// and its count, taken *before* the store is read. A write either committed before the
// read (the read saw it) or its observer runs after the snapshot (the count moves on, and
// a later request's snapshot differs: a miss). A series evicted from the RecordJsonCache
// and opened again is a different object: a miss too. A series object belongs to one
// device (kept alive by the entry, so never reused), so an equal snapshot also means the
// same device ids in the same order: (1). A late event re-emits a 1d record
// with version + 1: a write of that series, so the next request reads the store again.
// For (3) the horizon only rises and only hides records: a kept answer is still the
// answer while its first bucket starts at or after the current horizon. (4) The devices'
// whole-home flags (their configs, which no series write follows) are in the route's key.
//
// Without an attached, enabled RecordJsonCache nothing is kept (every request reads the
// store). Only requests with an explicit `to` are kept (without one, `to` is the current
// time and no two requests are alike). Bounded by `max_bytes` of kept bodies and keys;
// when full, everything kept is dropped. Thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "api/record_json_cache.h"
#include "model/aggregate_record.h"

namespace joule::api {

class OwnerEnergyCache {
 public:
  struct Snapshot {
    // Per device (in the order of the device ids): its series and that series' write count.
    std::vector<std::pair<std::shared_ptr<RecordJsonCache::Series>, uint64_t>> series;
    bool operator==(const Snapshot& other) const { return series == other.series; }
  };

  explicit OwnerEnergyCache(size_t max_bytes = size_t{8} << 20) : max_bytes_(max_bytes) {}

  // The snapshot of `device_ids`' series of resolution `r`; false (nothing to cache
  // against) when `writes` is null, not attached or disabled.
  static bool Take(RecordJsonCache* writes, const std::vector<std::string>& device_ids,
                   model::Resolution r, Snapshot* out);

  // The body kept for `key` with an equal snapshot (the same series objects, so the same
  // devices, and the same write counts), if the read horizon `horizon_ns` hides none of
  // its buckets; nullptr otherwise.
  std::shared_ptr<const std::string> Find(const std::string& key, const Snapshot& now,
                                          int64_t horizon_ns);
  // Keeps `body`, read after `before` was taken; `first_bucket_ns` is the start of its
  // first bucket (INT64_MAX when it has none).
  void Keep(std::string key, Snapshot before, int64_t first_bucket_ns,
            std::shared_ptr<const std::string> body);

  size_t hits() const;
  size_t misses() const;
  size_t bytes() const;

 private:
  struct Entry {
    Snapshot snapshot;
    int64_t first_bucket_ns = 0;
    std::shared_ptr<const std::string> body;
    size_t cost = 0;
  };

  const size_t max_bytes_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Entry> entries_;  // guarded by mu_
  size_t bytes_ = 0;                                // guarded by mu_
  size_t hits_ = 0, misses_ = 0;                    // guarded by mu_
};

}  // namespace joule::api

// HistoryTailCache: the realtime route's memory of what HistoryStore::Latest returned for a
// device's base series, reused while no history write has reached that series since.
//
// The realtime route reads history whenever the latest store holds fewer windows than asked
// (after a restart, for a device younger than `windows` minutes, with an expired Redis key).
// For such a device every poll was a RocksDB iterator (seek, decode of each record): ~15 %
// of the server's CPU per realtime request in the harness's `api_p99_ms_half_load` run.
//
// Exactness. The history route's RecordJsonCache, attached to the store, counts the writes
// of each (device, resolution) series it holds (`WriteCount`; the store's write observer
// runs after each write is visible to reads). A kept answer records the series object and
// its write count taken *before* the store was read; it is reused only while the cache
// still holds that same series (not evicted and re-created) with the same count. A write
// either committed before the read (the read saw it) or its observer ran after the count
// was taken (the count moved on, the answer is dropped). Retention only hides records
// (HistoryStore::ReadHorizon): the newest n records at a later time are the kept ones at or
// after the new horizon, so a reused answer is filtered by the current horizon.
//
// Without an attached, enabled RecordJsonCache every call reads the store. Bounded by
// `max_records` records in total (a request for more is answered but not kept); when full,
// everything kept is dropped. Thread-safe.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "api/record_json_cache.h"
#include "common/status.h"
#include "model/aggregate_record.h"
#include "store/history_store.h"

namespace joule::api {

class HistoryTailCache {
 public:
  using Records = std::shared_ptr<const std::vector<model::AggregateRecord>>;

  explicit HistoryTailCache(size_t max_records = size_t{1} << 16) : max_records_(max_records) {}

  // HistoryStore::Latest(device_id, kBase, n) of `history`: the newest n base records,
  // newest first. `writes` may be null (then the store is read every time).
  Result<Records> Latest(store::HistoryStore& history, RecordJsonCache* writes,
                         std::string_view device_id, size_t n);

  size_t hits() const;
  size_t misses() const;

 private:
  struct Entry {
    std::shared_ptr<RecordJsonCache::Series> series;  // identity: the cache's series object
    uint64_t write_count = 0;
    size_t n = 0;
    Records records;
  };

  const size_t max_records_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Entry> entries_;  // guarded by mu_
  size_t records_ = 0;                              // guarded by mu_
  size_t hits_ = 0, misses_ = 0;                    // guarded by mu_
};

}  // namespace joule::api

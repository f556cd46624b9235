// RecordJsonCache: the CONTRACT §2 JSON of history records, kept by (device, resolution,
// window_start, version), so that the history API emits a record it has encoded before by
// copying its bytes instead of decoding the stored value and formatting ~40 numbers.
//
// Why no invalidation is needed: every emission of a key carries a strictly higher version
// (src/stream/README.md), and the history store never replaces a record with one of an
// equal or lower version. So the stored content of a (key, version) never changes, and a
// cached entry is valid exactly when its version equals the version the store holds now
// (which a HistoryStore::Scan reads without decoding). A newer version is a miss; its JSON
// replaces the old entry.
//
// Bounded by `max_bytes` (JSON bytes plus a per-entry overhead estimate); when over, whole
// (device, resolution) series are evicted, least recently opened first. 0 disables it.
// Thread-safe: one mutex for the series map and LRU order, one per series for its entries.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/metrics.h"
#include "model/aggregate_record.h"

namespace joule::api {

class RecordJsonCache {
 public:
  class Series;

  // `metrics` may be nullptr.
  RecordJsonCache(size_t max_bytes, MetricsRegistry* metrics);
  ~RecordJsonCache();
  RecordJsonCache(const RecordJsonCache&) = delete;
  RecordJsonCache& operator=(const RecordJsonCache&) = delete;

  // The series of one device and resolution (created if missing, marked most recently
  // used); nullptr when the cache is disabled. Keep it for one request.
  std::shared_ptr<Series> Open(std::string_view device_id, model::Resolution resolution);
  // Appends the cached JSON of (window_start, version) to `out`; false (nothing appended)
  // when it is not cached with exactly that version.
  bool Append(Series& series, int64_t window_start_ns, uint64_t version, std::string* out);
  // Keeps `json` as the encoding of (window_start, version), replacing an older version.
  void Insert(Series& series, int64_t window_start_ns, uint64_t version, std::string_view json);

  size_t bytes() const { return bytes_.load(std::memory_order_relaxed); }
  size_t max_bytes() const { return max_bytes_; }

 private:
  void EvictOverflow();

  const size_t max_bytes_;
  std::atomic<size_t> bytes_{0};
  std::mutex mu_;  // guards series_ and lru_
  std::unordered_map<std::string, std::shared_ptr<Series>> series_;
  std::list<Series*> lru_;  // front = most recently opened
  Counter* hits_ = nullptr;
  Counter* misses_ = nullptr;
  Counter* evictions_ = nullptr;
  Gauge* bytes_gauge_ = nullptr;
};

}  // namespace joule::api

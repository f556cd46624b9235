// RecordJsonCache: the CONTRACT §2 JSON of history records, kept by (device, resolution,
// window_start, version), so that the history API emits a record it has encoded before by
// copying its bytes instead of decoding the stored value and formatting ~40 numbers.
//
// Entries. Every emission of a key carries a strictly higher version (src/stream/README.md)
// and the history store never replaces a record with one of an equal or lower version, so
// the stored content of a (key, version) never changes: an entry is valid exactly when its
// version equals the version the store holds (HistoryStore::Scan reads it without
// decoding). A newer version replaces an entry, an older one never does.
//
// Covered ranges. Once Attach()ed to the store, the cache sees every write (the store's
// write observer) and keeps the entries of the series it holds up to date; a range of a
// series that a request has read completely from the store is then remembered as covered,
// and later requests inside it are answered from memory without touching RocksDB. Why that
// is exact: a write is either committed before a reading request's store iterator is
// created (the scan sees it), or its observer runs after the request opened the series (the
// observer finds the series and updates the entry). If the series is evicted meanwhile,
// the request's inserts are refused and nothing is marked covered. Expired records are
// hidden by the caller's read horizon, as in the store.
//
// Pages. CoveredPage keeps the assembled JSON of a few recently requested pages per series,
// dropped whenever a record inside a page's range changes.
//
// Bounded by `max_bytes` (JSON bytes, pages, plus per-entry and per-series overhead estimates);
// when over, whole (device, resolution) series are evicted, least recently opened first.
// 0 disables the cache. Thread-safe: one mutex for the series map and LRU order, one per
// series for its entries and covered ranges.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/metrics.h"
#include "model/aggregate_record.h"
#include "store/history_store.h"

namespace joule::api {

class RecordJsonCache {
 public:
  class Series;

  // `metrics` may be nullptr.
  RecordJsonCache(size_t max_bytes, MetricsRegistry* metrics);
  ~RecordJsonCache();
  RecordJsonCache(const RecordJsonCache&) = delete;
  RecordJsonCache& operator=(const RecordJsonCache&) = delete;

  // Follows every write of `store` from now on (its write observer): enables covered
  // ranges. Call before the store is written concurrently; the cache must outlive the
  // store's writers.
  void Attach(store::HistoryStore* store);

  // The series of one device and resolution (created if missing, marked most recently
  // used); nullptr when the cache is disabled. Keep it for one request.
  std::shared_ptr<Series> Open(std::string_view device_id, model::Resolution resolution);
  // Appends the cached JSON of (window_start, version) to `out`; false (nothing appended)
  // when it is not cached with exactly that version.
  bool Append(Series& series, int64_t window_start_ns, uint64_t version, std::string* out);
  // Keeps `json` as the encoding of (window_start, version) unless a newer version is
  // there. False when the series was evicted or the entry is too large: then the range
  // being read must not be marked covered.
  bool Insert(Series& series, int64_t window_start_ns, uint64_t version, std::string_view json);

  // Drops the entries of the series with window_start before `before_ns` (and the covered
  // ranges that reach below it). For an unattached cache of the newest windows of a device
  // (the realtime route), so that a polled series does not grow by a record per window.
  void Trim(Series& series, int64_t before_ns);

  // Remembers that every record of the series with window_start in [from, to) is held
  // (after a scan of that range whose every record was Append()ed or Insert()ed). No-op
  // unless attached.
  void MarkCovered(Series& series, int64_t from_ns, int64_t to_ns);
  // When [from, q.to_ns) is covered: appends the JSON of the first q.limit records of it,
  // comma-separated, to `out`, sets `next_cursor` as HistoryStore::Range would, and
  // returns how many records it appended. Otherwise nullopt and nothing appended.
  std::optional<size_t> AppendCovered(Series& series, const store::HistoryQuery& q, int64_t from_ns,
                                      std::string* out, std::string* next_cursor);

  // AppendCovered for a request that is repeated: the page — its records' JSON,
  // comma-separated, then what `finish(next_cursor, out)` appends — as bytes shared with
  // the cache, so a repeated request copies nothing. A page is kept (at most kPagesPerSeries
  // per series) until a write, Trim or eviction changes a record inside its range. nullptr
  // when [from, q.to_ns) is not covered.
  using PageFinisher = void (*)(std::string_view next_cursor, std::string* out);
  std::shared_ptr<const std::string> CoveredPage(Series& series, const store::HistoryQuery& q,
                                                 int64_t from_ns, PageFinisher finish,
                                                 size_t* records);

  // The zstd frame (level 1) of a page CoveredPage returned: compressed on the first
  // request that asks for it and kept with the page (dropped with it). nullptr if
  // compression fails.
  std::shared_ptr<const std::string> CompressedPage(Series& series,
                                                    const std::shared_ptr<const std::string>& page);

  // Pages of another encoding (the CSV of a request), known by an opaque `key` that holds
  // every parameter of the answer. Exact without covered ranges: KeepPage stores a page read
  // from the store only if no write reached the series since WriteCount was taken before
  // the read (writes are observed after they commit), and any later write inside
  // [from, to) drops it, as for JSON pages.
  struct KeyedPage {
    std::shared_ptr<const std::string> body;
    std::string next_cursor;
  };
  uint64_t WriteCount(Series& series);
  std::optional<KeyedPage> FindPage(Series& series, std::string_view key);
  void KeepPage(Series& series, std::string key, int64_t from_ns, int64_t to_ns,
                uint64_t write_count, KeyedPage page);

  size_t bytes() const { return bytes_.load(std::memory_order_relaxed); }
  size_t max_bytes() const { return max_bytes_; }
  bool attached() const { return attached_; }

 private:
  void OnWrite(const model::AggregateRecord& record);
  void Account(long delta);
  void EvictOverflow();

  const size_t max_bytes_;
  bool attached_ = false;
  std::atomic<size_t> bytes_{0};
  std::mutex mu_;  // guards series_ and lru_
  std::unordered_map<std::string, std::shared_ptr<Series>> series_;
  std::list<Series*> lru_;  // front = most recently opened
  Counter* hits_ = nullptr;
  Counter* misses_ = nullptr;
  Counter* covered_ = nullptr;
  Counter* evictions_ = nullptr;
  Gauge* bytes_gauge_ = nullptr;
};

}  // namespace joule::api

// MemoryHistoryStore: HistoryStore in process memory, for the unit tests of the store's
// users (API routes, the stream engine's sinks). Same contract as the RocksDB store — the
// same typed tests run against both (src/store/tests/rocksdb_history_store_test.cc) — and
// the same cursor encoding. Nothing survives the process; Flush does nothing.
//
// Retention defaults to "forever" (unlike RocksDbHistoryOptions), so tests may use small
// timestamps without records expiring; pass a HistoryRetention and a Clock to test it.
// Thread-safe (one reader-writer lock).
#pragma once

#include <map>
#include <shared_mutex>
#include <string>
#include <tuple>

#include "common/clock.h"
#include "store/history_store.h"

namespace joule::store {

class MemoryHistoryStore final : public HistoryStore {
 public:
  // `clock` (nullptr = SystemClock::Default()) must outlive the store.
  explicit MemoryHistoryStore(HistoryRetention retention = HistoryRetention::Forever(),
                              const Clock* clock = nullptr);

  Status Put(const std::vector<model::AggregateRecord>& records) override;
  Result<HistoryPage> Range(const HistoryQuery& q) override;
  Result<std::string> Scan(const HistoryQuery& q, const HistoryVisitor& visit) override;
  Result<std::optional<model::AggregateRecord>> Get(std::string_view device_id, model::Resolution r,
                                                    int64_t window_start_ns) override;
  Result<std::vector<model::AggregateRecord>> Latest(std::string_view device_id,
                                                     model::Resolution r, size_t n) override;
  void SetWriteObserver(WriteObserver observer) override;
  int64_t ReadHorizon(model::Resolution r) const override;
  Status Flush() override { return Status::Ok(); }

  // Stale (lower or equal version) records ignored so far.
  uint64_t stale_writes() const;
  // Records held, expired ones included.
  size_t size() const;

 private:
  // (resolution, device_id) → window_start → record.
  using Series = std::map<int64_t, model::AggregateRecord>;
  using SeriesKey = std::pair<model::Resolution, std::string>;

  int64_t Horizon(model::Resolution r) const;
  const Series* FindSeries(model::Resolution r, std::string_view device_id) const;

  HistoryRetention retention_;
  const Clock* clock_;
  mutable std::shared_mutex mu_;
  std::map<SeriesKey, Series, std::less<>> series_;
  uint64_t stale_writes_ = 0;
  WriteObserver observer_;
};

}  // namespace joule::store

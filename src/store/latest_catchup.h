// LatestCatchUp: one writer's path to the latest store that survives an outage of it.
//
// While the store is up (LatestStoreHealth), records and readings are written at once.
// When a write fails with Unavailable, or while the store is known to be down, nothing is
// sent; what could not be written is remembered instead:
//   - per device, per base window, the record with the highest version (later versions
//     replace earlier ones, so an outage costs at most one record per window);
//   - per device, a "reading is stale" flag (the reading itself is the writer's: it keeps
//     the newest one per device anyway, see `ReadingLookup`).
// The remembered records are bounded by `max_records`. Past the bound the device whose
// record does not fit gives up its buffered records for a marker "re-read base windows from
// window_start S on from history" (S = the oldest window it dropped; later drops lower S),
// so a long outage costs one small entry per device that changed, not memory per record.
//
// When the store answers again, Drain (called by the owning thread right after its records
// have reached the history store) writes the backlog in pipelined batches of at most
// `drain_batch` records per call: stale readings, buffered records, then marked devices'
// windows read back from history in pages. A store that came back empty (Resync) gets each
// device's newest windows back from history the same way. Every write is version-guarded (a lower
// version never replaces a higher one), so writes made directly after the recovery and the older
// backlog may arrive in any order. A failed drain write puts its records back and marks the
// store down again.
//
// Not thread-safe: one owner thread (a PartitionProcessor) calls everything except the
// atomic counters pending_records() / pending_devices(), which any thread may read.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/metrics.h"
#include "model/aggregate_record.h"
#include "model/event.h"
#include "store/history_store.h"
#include "store/latest_health.h"
#include "store/latest_store.h"

namespace joule::store {

struct LatestCatchUpOptions {
  size_t max_records = 50'000;  // buffered records (≈ 0.3–1 KB each, by metric count)
  size_t drain_batch = 4096;    // records written per Drain call
  size_t resync_windows = 60;   // newest windows rewritten by Resync (the store's N)
};

class LatestCatchUp {
 public:
  // The writer's newest reading of a device, or null when it has none.
  using ReadingLookup = std::function<const model::Event*(std::string_view device_id)>;

  // `health` null: the store is never considered down (memory backend); failures are
  // only counted. `history` null: past the bound, dropped records are not re-read (they
  // reach the store with their window's next version). `metrics` may be null.
  LatestCatchUp(LatestStore* latest, LatestStoreHealth* health, HistoryStore* history,
                LatestCatchUpOptions options, MetricsRegistry* metrics);

  void PutRecord(const model::AggregateRecord& record);
  // PutRecord of each record in order, in one call to the store (Redis pipelines it); when
  // it fails, every base record of the batch is caught up (some of them may have been
  // written: versioned writes make the rewrite harmless).
  void PutRecords(std::span<const model::AggregateRecord> records);
  // The store's LatestStore::PrefersBatches.
  bool PrefersBatches() const { return latest_->PrefersBatches(); }
  void PutReading(const model::Event& event);
  // PutReading of each event, in one call to the store; when it fails, every device of the
  // batch is caught up (some of them may have been written: the rewrite is harmless).
  void PutReadings(std::span<const model::Event> events);

  // The store lost its data (Redis came back empty) or holds another data dir's: replace
  // what it holds for the device (LatestStore::ReplaceDevice, whatever the versions) with
  // its newest resync_windows windows from history and its reading, before its buffered
  // records and re-reads. One small entry per device.
  void Resync(const std::string& device_id);

  // True when something is waiting to be written.
  bool pending() const { return !devices_.empty(); }
  // When the store is up, writes up to drain_batch records of the backlog.
  // REQUIRES: every record given to PutRecord so far is in `history` (if any).
  void Drain(const ReadingLookup& reading_of);

  // A marked device: re-read base windows with window_start >= from_ns from history,
  // and/or rewrite its reading. For persistence across restarts (processor checkpoints).
  struct Marker {
    std::string device_id;
    int64_t from_ns = std::numeric_limits<int64_t>::max();  // max: no windows to re-read
    bool reading = false;
    bool newest = false;  // rewrite the newest resync_windows windows (Resync)
  };
  // The backlog as markers (buffered records become "re-read from their oldest window").
  std::vector<Marker> Markers() const;
  // Adds markers (e.g. loaded at start) to the backlog.
  void AddMarkers(const std::vector<Marker>& markers);

  // Thread-safe reads, for metrics and /readyz.
  size_t pending_records() const { return pending_records_.load(std::memory_order_relaxed); }
  size_t pending_devices() const { return pending_devices_.load(std::memory_order_relaxed); }

 private:
  struct DeviceBacklog {
    std::map<int64_t, model::AggregateRecord> windows;  // by window_start, highest version
    int64_t reread_from_ns = std::numeric_limits<int64_t>::max();  // max = nothing to re-read
    bool reading = false;
    bool newest = false;  // Resync: the newest resync_windows windows from history
  };

  bool StoreUp() const { return health_ == nullptr || health_->up(); }
  void Failed(const Status& st);  // counts; marks the store down on Unavailable
  // After a write to the store: true when nothing is left to do (written, or failed for
  // good and counted); false when it failed as Unavailable and is to be deferred.
  bool Settled(const Status& st);
  void Remember(const model::AggregateRecord& record);
  void RememberReading(const std::string& device_id);
  DeviceBacklog& Backlog(const std::string& device_id);
  void Erase(std::unordered_map<std::string, DeviceBacklog>::iterator it);
  void PublishCounts();
  // Writes `batch` (records taken out of the backlog); on failure puts them back.
  bool WriteBatch(std::vector<model::AggregateRecord>* batch);

  LatestStore* latest_;
  LatestStoreHealth* health_;
  HistoryStore* history_;
  LatestCatchUpOptions options_;
  std::unordered_map<std::string, DeviceBacklog> devices_;
  size_t records_ = 0;  // buffered records over all devices
  std::atomic<size_t> pending_records_{0};
  std::atomic<size_t> pending_devices_{0};
  Counter* errors_ = nullptr;
  Counter* deferred_ = nullptr;
  Counter* written_ = nullptr;
  Counter* overflowed_ = nullptr;
  Counter* reread_ = nullptr;
  Counter* resyncs_ = nullptr;
};

}  // namespace joule::store

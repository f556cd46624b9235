// PartitionProcessor: one thread that owns a set of log partitions. It reads their
// durable records in order, feeds the pure WindowEngine, ticks it with processing time,
// and fans the records it emits out to the sinks: the latest store at once, the history
// store in one batch per log batch (later alerts and live push). The engine is owned by
// the processor thread; API threads read its per-device health under a mutex that the
// processor holds only while it processes one batch.
//
// Exactly-once: every `checkpoint_interval` and at Stop it writes a checkpoint — each
// partition's next offset with the engine state at that point (and the devices' latest
// readings) — after flushing the history store. On Start it restores the checkpoint and
// resumes reading from its offsets, so every durable event is folded in exactly once;
// the records it re-emits on replay carry versions the sinks already have or newer ones.
// Without a checkpoint it reads each partition from the log's first retained record.
// Before processing anything, Start starts a new version epoch (after a restore) and writes
// a checkpoint, so records emitted after a restart outrank those of the crashed run.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "app/read_retry.h"
#include "common/clock.h"
#include "common/flat_string_map.h"
#include "common/metrics.h"
#include "common/status.h"
#include "log/log.h"
#include "model/event.h"
#include "store/history_store.h"
#include "store/latest_catchup.h"
#include "store/latest_health.h"
#include "store/latest_store.h"
#include "stream/window_engine.h"

namespace joule::api {
class LiveHub;
}
namespace joule::alert {
class AlertEngine;
}

namespace joule::app {

struct PartitionProcessorOptions {
  int index = 0;                     // processor number, for metrics and logs
  int count = 1;                     // how many processors the server runs
  int nice = 0;                      // added to the thread's nice value (server.background_nice)
  std::vector<uint32_t> partitions;  // owned partitions
  stream::EngineOptions engine;
  int64_t tick_interval_ns = 200'000'000;
  size_t read_batch = 4096;
  std::string checkpoint_path;  // empty = no checkpoints
  // The data dir's highest recovery epoch (app/engine_epoch.h; empty = none): a start without
  // a checkpoint in a data dir that had one (rebuild from the log) begins above it.
  std::string epoch_path;
  int64_t checkpoint_interval_ns = 60'000'000'000;
  // History receives a key's partial (final:false) records at most once per this interval
  // of processing time (the newest one; see src/app/README.md); 0 = every partial.
  int64_t history_partial_interval_ns = 60'000'000'000;
  api::LiveHub* live = nullptr;  // SSE fan-out of records and readings; may be null
  // Alert evaluation: every emitted record is offered (non-blocking, bounded queue); may be null.
  alert::AlertEngine* alerts = nullptr;
  // Reachability of a remote latest store (Redis); null for the memory store. While it is
  // down, latest-store writes are deferred and caught up afterwards (store/latest_catchup.h).
  store::LatestStoreHealth* latest_health = nullptr;
  size_t latest_catchup_max_records = 50'000;
  size_t latest_windows = 60;  // what the latest store keeps per device (for a resync)
  // At Stop, how long to keep writing a deferred backlog to a reachable latest store
  // before leaving the rest to the next start (persisted with the checkpoint).
  int64_t latest_final_drain_ns = 2'000'000'000;
  // A history write that failed with an I/O error (a full disk) is retried this often
  // (HistoryBlocked).
  int64_t history_retry_ns = 1'000'000'000;
  // The wall clock the log stamps append times with (LagSeconds); nullptr: the clock
  // passed to the constructor, which is processing time (common/processing_clock.h).
  const Clock* wall_clock = nullptr;
  // Without a checkpoint, a log whose first records retention deleted (StartOffset > 0)
  // is refused: the state rebuilt from it would lack those events, and its records (a
  // higher recovery epoch) would overwrite complete history with partial windows. True
  // (`joule serve --accept-partial-rebuild`): rebuilt anyway, with a warning.
  bool accept_partial_rebuild = false;
};

// The refusal of a processor with no checkpoint (no file at `options.checkpoint_path`) on a
// log that retention truncated in one of its partitions, unless
// `options.accept_partial_rebuild`; Ok otherwise. The server checks every processor before
// it starts any (a refusal from the second one came after the first had rewritten its
// checkpoint and raised engine_epoch: found by a black-box test), and before it creates the
// checkpoints directory; Start checks again.
Status CheckPartialRebuild(const log::Log& log, const PartitionProcessorOptions& options);

class PartitionProcessor {
 public:
  // `history` may be null (no history sink). `clock` is processing time: early firings, idle
  // finalization, tick and checkpoint intervals (the server's is a ProcessingClock).
  PartitionProcessor(PartitionProcessorOptions options, log::Log* log, store::LatestStore* latest,
                     store::HistoryStore* history, const Clock* clock, MetricsRegistry* metrics,
                     stream::TimezoneProvider* timezones);
  ~PartitionProcessor();

  // Holds back the log's retention for this processor's partitions (until its first
  // checkpoint reports offsets). Start does it too; a server that starts its processors
  // after opening its listeners calls it first, so that nothing they will read goes.
  void RegisterWithLog();
  // Restores the checkpoint (if any), writes the recovery checkpoint and starts the thread.
  // May run while the API reads (Health) and while other processors start.
  Status Start();
  // Processes everything durable at the time of the call, then stops the thread, writes
  // the held history records and the final checkpoint. Not OK when either failed (e.g. a
  // full disk): nothing is lost — the log holds every record, and the next start
  // re-processes it from the last checkpoint written. OK when it was not running.
  Status Stop();

  // Records behind the durable end, over the owned partitions (thread-safe).
  uint64_t LagRecords() const;
  // Event-processing delay: now − append time of the oldest unprocessed record (0 when caught up).
  double LagSeconds() const;
  bool CaughtUpOnce() const { return caught_up_once_.load(); }
  // Whether it has processed what it can of the log once: caught up, or caught up but for
  // a partition that waits for a device's timezone (the metadata store unreachable), whose
  // events stay in the log. What /readyz waits for ("ready" then, "degraded" while the store
  // is down); CaughtUpOnce stays false meanwhile (corrections, the alerts' replay).
  bool ServingOnce() const { return serving_once_.load(); }
  // Thread-safe reads of engine state; false (unknown device) until Start has restored it.
  bool Health(std::string_view device_id, stream::WindowEngine::DeviceHealth* out) const;
  // Thread-safe: a replay corrected a settled base window of one of this processor's
  // devices (WindowEngine::CorrectBaseWindow); applied by the processor's thread within a
  // loop (≤ 50 ms), so its rollups still held here get the difference. `journal_seq` = the
  // replay journal holding the correction (app/replay_journal.h; 0 = none): the checkpoint
  // written after it is applied records it, so a restart does not apply it a second time.
  // All corrections of one journal are handed over in one call (so a checkpoint never holds
  // part of a journal) and applied in the order they are handed over, once the processor has
  // caught up with the log after its start (so that a restored state older than the one the
  // replay corrected has every rollup the correction is for); a journal the restored
  // checkpoint holds already (replay_applied ≥ journal_seq) is skipped.
  void CorrectBaseWindows(
      uint64_t journal_seq,
      std::vector<std::pair<model::AggregateRecord, model::AggregateRecord>> before_after);
  // Waits until every correction handed over before the call is applied and in a written
  // checkpoint (so a kill -9 after a replay cannot lose the difference), at most
  // `timeout_ns`. Returns whether they are. Thread-safe, also while Start runs: a processor
  // not started yet is waited for (within the timeout); false at once after Stop stopped it.
  bool WaitForCorrections(int64_t timeout_ns);
  // For a processor that will not start (its Start failed, or the server stops before its
  // turn came): waiters in WaitForCorrections give up at once instead of waiting out their
  // timeout (a replay's hand-over waits 30 s). No effect on a started processor.
  // Thread-safe; REQUIRES: no Start running or to come.
  void Abandon();
  // Latest-store catch-up backlog (thread-safe): buffered records, devices waiting.
  size_t LatestPendingRecords() const { return catchup_->pending_records(); }
  size_t LatestPendingDevices() const { return catchup_->pending_devices(); }
  // While the history store refuses writes (a full disk): the processor keeps the records
  // it could not write, retries them every `history_retry_ns`, and processes nothing else
  // meanwhile (nor checkpoints). Thread-safe.
  struct HistoryBlock {
    bool blocked = false;
    int64_t since_ns = 0;
    std::string error;
    uint64_t pending_records = 0;
  };
  HistoryBlock HistoryBlocked() const;

 private:
  class Sink;
  void Run();
  bool ProcessBatch(size_t slot);
  // Writes the pending history records. False when the store refused them with an I/O
  // error or Unavailable (a full disk): they are kept and the processor is blocked until a
  // retry succeeds. Other errors (a record the store rejects) drop them, logged and counted.
  bool FlushHistory();
  // Moves held partial records that are due (or all of them) into the history batch.
  void ReleaseHeldPartials(int64_t now_ns, bool all);
  // Writes some of the latest-store backlog once the store is reachable again.
  void DrainLatest();
  Status RestoreCheckpoint(std::vector<uint64_t>* offsets, bool* found);
  bool WriteCheckpoint();  // false (logged) when it could not be written
  // The engine's counters into /metrics (what they grew by since the last call; O(1)),
  // and its state size (a walk of the whole state: every kEngineStateInterval).
  void PublishEngineCounters();
  void PublishEngineState();
  std::string ConsumerName() const { return "processor-" + std::to_string(options_.index); }
  std::string LatestBacklogPath() const { return options_.checkpoint_path + ".latest"; }

  PartitionProcessorOptions options_;
  log::Log* log_;
  store::LatestStore* latest_;
  const Clock* clock_;
  // The clock the log stamps append times with (options_.wall_clock, else clock_).
  const Clock* wall_clock_;
  MetricsRegistry* metrics_;
  store::HistoryStore* history_;
  mutable std::mutex engine_mu_;  // guards engine_ against API readers
  // Replay corrections waiting for the processor's thread.
  std::mutex corrections_mu_;
  struct Correction {
    uint64_t journal_seq;
    model::AggregateRecord before, after;
  };
  std::vector<Correction> corrections_;
  uint64_t corrections_queued_ = 0;               // handed over (corrections_mu_)
  uint64_t corrections_applied_ = 0;              // applied (processor thread)
  std::atomic<uint64_t> corrections_durable_{0};  // applied and checkpointed
  // The last replay journal whose corrections the engine holds (restored from and saved in
  // the checkpoint). Processor thread only.
  uint64_t replay_applied_ = 0;
  uint64_t restored_replay_applied_ = 0;  // as in the checkpoint restored at start
  // Returns whether it applied any (then a checkpoint is written at once).
  bool ApplyCorrections(int64_t now_ns);
  std::unique_ptr<stream::WindowEngine> engine_;
  std::unique_ptr<store::LatestCatchUp> catchup_;
  std::unique_ptr<Sink> sink_;
  std::vector<std::unique_ptr<log::LogReader>> readers_;
  std::unique_ptr<std::atomic<uint64_t>[]> positions_;
  std::unique_ptr<std::atomic<int64_t>[]> last_append_ns_;
  // Per slot: the wall time of the last read that found nothing new. A record not
  // processed yet became durable after it (LagSeconds).
  std::unique_ptr<std::atomic<int64_t>[]> caught_up_ns_;
  // Per slot: the reader met a damaged record (Corruption); the partition is not read again
  // (docs/RELIABILITY.md, "Run-time corruption"). Processor thread only.
  std::vector<bool> stopped_;
  // Per slot: failed reads are retried with a backoff (app/read_retry.h). Processor
  // thread only.
  std::vector<ReadRetry> read_retry_;
  void OnReadFailed(size_t slot, const Status& status);
  // Per slot: an event of a device new to the engine whose timezone the metadata store could
  // not say (unreachable: stream::TimezoneProvider). The slot's reader was put back to that
  // event's record and the slot is not read until the zone is known (asked again every
  // kZoneRetryNs), so that no local day is computed in a guessed zone. Processor thread only.
  struct ZoneWait {
    bool waiting = false;
    std::string device_id;
    std::chrono::steady_clock::time_point retry_at;
    std::chrono::steady_clock::time_point since;
  };
  std::vector<ZoneWait> zone_wait_;
  // Whether the slot may be read now (false while its zone wait lasts).
  bool ZoneKnown(size_t slot);
  // After the engine stopped at events_[done] (a new device, zone unknown): the slot's
  // reader restarts at that event's record. Returns the records consumed before it.
  size_t WaitForZone(size_t slot, size_t done);
  stream::TimezoneProvider* timezones_;
  Counter* zone_waits_;
  Counter* read_errors_;
  log::ReadBatch batch_;
  std::vector<model::Event> events_;  // the decoded batch (storage reused)
  std::atomic<bool> stop_{false};
  std::atomic<bool> caught_up_once_{false};
  std::atomic<bool> serving_once_{false};
  // Set once Start has restored the state: until then Health answers false at once (it is
  // called on I/O threads, which must not wait for a restore).
  std::atomic<bool> started_{false};
  std::thread thread_;
  Counter* events_processed_;
  Counter* decode_errors_;
  Counter* history_errors_;
  Histogram* checkpoint_seconds_;
  Gauge* checkpoint_bytes_;
  std::atomic<int64_t> last_checkpoint_ns_{0};
  Counter* duplicates_total_;
  Counter* late_total_;
  Counter* out_of_order_total_;
  Counter* late_dropped_total_;
  Gauge* engine_devices_;
  Gauge* engine_open_windows_;
  Gauge* engine_state_bytes_;
  stream::WindowEngine::Stats published_;  // engine counters already added to the metrics
  struct Reading {
    int64_t timestamp_ns = 0;
    std::string payload;  // the event's log record (model::EncodeEvent), as checkpointed
  };
  // Latest per device. A flat table, looked up once per event with the lookups of the
  // next events prefetched (src/app/README.md, "Per-event device lookups").
  FlatStringMap<Reading> readings_;
  std::vector<uint64_t> hashes_;         // device id hashes of the decoded batch
  std::vector<uint32_t> event_records_;  // events_[i] came from batch_[event_records_[i]]
  std::vector<uint8_t> duplicate_;       // of the decoded batch: dropped by the engine
  // Checkpoint buffers, reused: one piece of the engine state as it streams into the file
  // (about kCheckpointPiece), and the header and readings.
  static constexpr size_t kCheckpointPiece = size_t{1} << 20;
  std::string ckpt_engine_state_;
  std::string ckpt_bytes_;
  std::vector<std::string_view> ckpt_readings_;
  uint64_t latest_generation_ = 0;  // of the latest store, last seen (InstanceGeneration)
  bool has_backlog_file_ = true;    // unknown at start: the first checkpoint removes a stale one
  std::string checkpoint_error_;    // why the last WriteCheckpoint failed
  model::Event drain_reading_;      // a decoded reading handed to the catch-up
  // History writes refused (FlushHistory): processor thread, except the copy for readers.
  bool history_blocked_ = false;
  std::chrono::steady_clock::time_point history_retry_at_;
  uint64_t history_retries_ = 0;
  mutable std::mutex history_block_mu_;
  HistoryBlock history_block_;  // guarded by history_block_mu_
};

}  // namespace joule::app

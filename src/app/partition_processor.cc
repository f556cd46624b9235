#include "app/partition_processor.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <optional>
#include <span>
#include <string_view>
#include <thread>

#include "alert/alert_engine.h"
#include "api/live_hub.h"
#include "app/allocator_tuning.h"
#include "app/engine_epoch.h"
#include "app/history_throttle.h"
#include "app/latest_backlog_file.h"
#include "app/processor_checkpoint.h"
#include "common/crash_point.h"
#include "common/logging.h"
#include "common/test_hold.h"
#include "common/thread_priority.h"
#include "model/event.h"

namespace joule::app {
namespace {

// A processor's window engine state is tens of MiB at 10k devices (its checkpoint size):
// reserve most of one arena heap up front (ReserveThreadArena, src/app/README.md
// "Allocator").
constexpr size_t kProcessorArenaBytes = 60u << 20;

// How often the engine's state size goes to /metrics: the walk over every device and
// window took 2.4–2.6 ms per 5,000 devices (the harness's 600k events, two processors).
constexpr int64_t kEngineStateInterval = 10 * kNanosPerSecond;

store::LatestCatchUpOptions CatchUpOptions(const PartitionProcessorOptions& o) {
  store::LatestCatchUpOptions c;
  c.max_records = o.latest_catchup_max_records;
  c.resync_windows = o.latest_windows;
  return c;
}

}  // namespace

// Fans every record out to the latest store, SSE and alert evaluation at once. History
// gets final records at once and partial records throttled per key (device, resolution,
// window start): a partial whose key reached history less than `partial_interval_ns` ago
// is held (a newer one replaces it) and released when the interval has passed; a final
// record of the key drops the held partial. History's open windows therefore lag the
// live value by at most the interval (src/app/README.md "History and early firings").
class PartitionProcessor::Sink final : public stream::RecordSink {
 public:
  Sink(store::LatestCatchUp* latest, bool keep_for_history, int64_t partial_interval_ns,
       api::LiveHub* live, MetricsRegistry* metrics, alert::AlertEngine* alerts = nullptr)
      : latest_(latest),
        batch_latest_(latest->PrefersBatches()),
        keep_for_history_(keep_for_history),
        live_(live),
        alerts_(alerts),
        throttle_(partial_interval_ns) {
    for (int r = 0; r < 3; ++r) {
      for (int f = 0; f < 2; ++f) {
        const char* res = r == 0 ? "base" : r == 1 ? "1h" : "1d";
        emitted_[r][f] = metrics->GetCounter(
            "joule_windows_emitted_total", "Aggregate records emitted by the window engine",
            {{"resolution", res}, {"final", f ? "true" : "false"}});
      }
    }
    superseded_ = metrics->GetCounter(
        "joule_history_partials_superseded_total",
        "Partial records not written to history because a newer record of the same window "
        "replaced them within stream.history_partial_interval");
  }
  void set_now(int64_t now_ns) { now_ns_ = now_ns; }
  void Emit(const model::AggregateRecord& record) override {
    emitted_[static_cast<int>(record.resolution)][record.final ? 1 : 0]->Inc();
    // The latest store keeps base windows only. A store that prefers batches (Redis) gets
    // them once per engine call (FlushLatest), in emission order: one pipelined round
    // trip instead of one per record.
    if (!batch_latest_) {
      latest_->PutRecord(record);  // deferred while the store is unreachable; errors counted
    } else if (record.resolution == model::Resolution::kBase) {
      if (n_latest_ == pending_latest_.size()) {
        pending_latest_.push_back(record);
      } else {
        pending_latest_[n_latest_] = record;  // reuses the slot's allocations
      }
      ++n_latest_;
    }
    if (keep_for_history_) ToHistory(record);
    if (live_) live_->PublishRecord(record);
    if (alerts_) alerts_->Offer(record);  // never blocks: bounded queue, drops are counted
  }
  std::vector<model::AggregateRecord>& pending_history() { return pending_history_; }
  // Writes the base records emitted since the last call to the latest store (deferred
  // while the store is unreachable; errors counted).
  void FlushLatest() {
    if (n_latest_ == 0) return;
    latest_->PutRecords(std::span<const model::AggregateRecord>(pending_latest_.data(), n_latest_));
    n_latest_ = 0;
  }

  // Releases held partials whose key was last written `partial_interval_ns` ago or more
  // (every held one when `all`), and forgets keys that are quiet for that long.
  void ReleaseHeld(int64_t now_ns, bool all) { throttle_.Release(now_ns, all, &pending_history_); }
  size_t held() const { return throttle_.held(); }

 private:
  void ToHistory(const model::AggregateRecord& record) {
    if (const uint64_t n = throttle_.Offer(record, now_ns_, &pending_history_); n > 0) {
      superseded_->Inc(n);
    }
  }

  store::LatestCatchUp* latest_;
  const bool batch_latest_;
  bool keep_for_history_;
  api::LiveHub* live_;
  alert::AlertEngine* alerts_;
  int64_t now_ns_ = 0;
  std::vector<model::AggregateRecord> pending_history_;
  // Base records for a latest store that prefers batches; the first n_latest_ are
  // pending, the rest keep their storage for the next batch.
  std::vector<model::AggregateRecord> pending_latest_;
  size_t n_latest_ = 0;
  HistoryThrottle throttle_;
  Counter* emitted_[3][2];
  Counter* superseded_;
};

PartitionProcessor::PartitionProcessor(PartitionProcessorOptions options, log::Log* log,
                                       store::LatestStore* latest, store::HistoryStore* history,
                                       const Clock* clock, MetricsRegistry* metrics,
                                       stream::TimezoneProvider* timezones)
    : options_(std::move(options)),
      log_(log),
      latest_(latest),
      clock_(clock),
      wall_clock_(options_.wall_clock != nullptr ? options_.wall_clock : clock),
      metrics_(metrics),
      history_(history),
      engine_(std::make_unique<stream::WindowEngine>(options_.engine, timezones)),
      catchup_(std::make_unique<store::LatestCatchUp>(latest, options_.latest_health, history,
                                                      CatchUpOptions(options_), metrics)),
      sink_(std::make_unique<Sink>(catchup_.get(), history != nullptr,
                                   options_.history_partial_interval_ns, options_.live, metrics,
                                   options_.alerts)),
      positions_(new std::atomic<uint64_t>[options_.partitions.size()]),
      last_append_ns_(new std::atomic<int64_t>[options_.partitions.size()]),
      caught_up_ns_(new std::atomic<int64_t>[options_.partitions.size()]) {
  timezones_ = timezones;
  const std::string idx = std::to_string(options_.index);
  zone_waits_ = metrics->GetCounter(
      "joule_processor_timezone_waits_total",
      "Times a processor stopped before an event of a device new to it whose timezone the "
      "metadata store could not say (unreachable): it waits, the local days are not guessed",
      {{"processor", idx}});
  events_processed_ = metrics->GetCounter("joule_processor_events_total",
                                          "Events fed to the window engine", {{"processor", idx}});
  read_errors_ =
      metrics->GetCounter("joule_processor_read_errors_total",
                          "Failed log reads (retried with a backoff; e.g. out of file descriptors)",
                          {{"processor", idx}});
  decode_errors_ =
      metrics->GetCounter("joule_processor_decode_errors_total",
                          "Log records that did not decode as events", {{"processor", idx}});
  checkpoint_seconds_ = metrics->GetHistogram("joule_checkpoint_duration_seconds",
                                              "Time to write a processor checkpoint (incl. fsync)",
                                              Histogram::LatencyBuckets(), {{"processor", idx}});
  checkpoint_bytes_ = metrics->GetGauge("joule_checkpoint_bytes", "Size of the last checkpoint",
                                        {{"processor", idx}});
  metrics->AddGaugeCallback(
      "joule_checkpoint_age_seconds", "Seconds since the last checkpoint", {{"processor", idx}},
      [this] {
        int64_t last = last_checkpoint_ns_.load();
        return last == 0 ? 0.0 : static_cast<double>(clock_->NowNanos() - last) / 1e9;
      });
  history_errors_ =
      metrics->GetCounter("joule_sink_errors_total", "Failed sink writes", {{"sink", "history"}});
  duplicates_total_ = metrics->GetCounter(
      "joule_events_duplicate_total",
      "Events dropped by the window engine as duplicates (same event_id, else same timestamp)",
      {{"processor", idx}});
  late_total_ = metrics->GetCounter(
      "joule_events_late_total",
      "Events at or behind their device's watermark within allowed lateness: applied, and the "
      "records they change re-emitted with a higher version",
      {{"processor", idx}});
  out_of_order_total_ = metrics->GetCounter(
      "joule_events_out_of_order_total",
      "Events not later than their device's latest (late ones included): inserted into the "
      "sample histories and their windows recomputed",
      {{"processor", idx}});
  late_dropped_total_ = metrics->GetCounter(
      "joule_events_late_dropped_total",
      "Events later than allowed lateness: archived, not aggregated (joule replay folds them in)",
      {{"processor", idx}});
  engine_devices_ = metrics->GetGauge("joule_engine_devices", "Devices in the window engine",
                                      {{"processor", idx}});
  engine_open_windows_ = metrics->GetGauge(
      "joule_engine_open_windows", "Windows not yet final (1m, 1h and 1d)", {{"processor", idx}});
  engine_state_bytes_ = metrics->GetGauge(
      "joule_engine_state_bytes",
      "Estimated bytes of window-engine state (devices, windows, sample histories, "
      "de-duplication keys)",
      {{"processor", idx}});
  // Generation 0 is a latest store that held Joule's writes when first reached; any other
  // (a Redis found empty at start, or replaced later) gets every device rewritten.
  latest_generation_ = 0;
  for (size_t i = 0; i < options_.partitions.size(); ++i) {
    positions_[i].store(0);
    last_append_ns_[i].store(0);
    caught_up_ns_[i].store(0);
  }
}

PartitionProcessor::~PartitionProcessor() { (void)Stop(); }  // Stop logged what failed

namespace {

// The first partition of `log` (all of them: moving the checkpoints directory away rebuilds
// every processor) whose first records retention deleted, if any: {partition, first offset}.
std::optional<std::pair<uint32_t, uint64_t>> FirstTruncatedPartition(
    const log::Log& log, const std::vector<uint32_t>& partitions) {
  for (uint32_t p : partitions) {
    const uint64_t start = log.StartOffset(p).value;
    if (start > 0) return std::make_pair(p, start);
  }
  return std::nullopt;
}

std::vector<uint32_t> AllPartitions(const log::Log& log) {
  std::vector<uint32_t> all(log.partitions());
  for (uint32_t p = 0; p < all.size(); ++p) all[p] = p;
  return all;
}

// What the refusals that suggest moving the checkpoints away add when that rebuild would
// start from a log that retention truncated (found by a black-box test: followed, it
// overwrote complete history with partial windows).
std::string RebuildAdvice(const log::Log& log, std::string_view checkpoints_dir) {
  if (auto truncated = FirstTruncatedPartition(log, AllPartitions(log))) {
    return fmt::format(
        "do not move the checkpoints directory ({}) away to start with the new settings: the "
        "log no longer starts at offset 0 (partition {} starts at {}: retention deleted the "
        "records before it), and a state rebuilt from it would overwrite complete history "
        "with partial windows; set the old value back, or rebuild the data dir from the "
        "archive with the new settings (docs/OPERATIONS.md, \"Checkpoints lost, log "
        "truncated\")",
        checkpoints_dir, truncated->first, truncated->second);
  }
  return fmt::format(
      "to start with the new settings, move the checkpoints directory ({}) away — the state "
      "is rebuilt from the log (it still starts at offset 0)",
      checkpoints_dir);
}

}  // namespace

Status CheckPartialRebuild(const log::Log& log, const PartitionProcessorOptions& options) {
  if (options.accept_partial_rebuild || options.checkpoint_path.empty()) return Status::Ok();
  std::error_code ec;
  if (std::filesystem::exists(options.checkpoint_path, ec)) return Status::Ok();
  auto truncated = FirstTruncatedPartition(log, options.partitions);
  if (!truncated) return Status::Ok();
  return Status::InvalidArgument(fmt::format(
      "processor {}: no checkpoint ({}), and the log no longer starts at offset 0: "
      "partition {} starts at offset {} (retention deleted the records before it). "
      "A state rebuilt from this log would lack those events, and its records (a "
      "higher recovery epoch) would overwrite complete history with partial windows. "
      "Nothing was changed. Put the checkpoints back (moved away for a "
      "stream.processor_threads, storage.log_partitions or stream.window change: set the old "
      "value back), or rebuild the data dir from the archive; `joule serve "
      "--accept-partial-rebuild` rebuilds from this log anyway (docs/OPERATIONS.md, "
      "\"Checkpoints lost, log truncated\")",
      options.index, options.checkpoint_path, truncated->first, truncated->second));
}

Status PartitionProcessor::RestoreCheckpoint(std::vector<uint64_t>* offsets, bool* found) {
  // Mapped, not read: the engine state is restored from the file's pages, not from a copy
  // in the heap beside the state it builds.
  JOULE_ASSIGN_OR_RETURN(std::unique_ptr<MappedCheckpoint> mapped,
                         MapCheckpointFile(options_.checkpoint_path));
  *found = mapped != nullptr;
  if (!mapped) return Status::Ok();
  ProcessorCheckpoint* ckpt = &mapped->checkpoint;
  // What the latest store still missed when the checkpoint was written (a Redis outage).
  JOULE_ASSIGN_OR_RETURN(std::vector<store::LatestCatchUp::Marker> backlog,
                         ReadLatestBacklogFile(LatestBacklogPath()));
  if (!backlog.empty()) {
    catchup_->AddMarkers(backlog);
    logging::Info("latest store backlog restored", {{"processor", std::to_string(options_.index)},
                                                    {"devices", std::to_string(backlog.size())}});
  }
  // The checkpoint holds the partitions this processor read when it was written: another
  // set means the layout changed (docs/formats/processor_checkpoint.md), and its state and
  // offsets are not this processor's. Say which file, and what to do (the message named
  // neither: found by a black-box test).
  std::vector<uint32_t> written;
  for (const auto& [partition, offset] : ckpt->offsets) written.push_back(partition);
  if (written != options_.partitions) {
    auto list = [](const std::vector<uint32_t>& partitions) {
      std::string text;
      for (uint32_t p : partitions) text += fmt::format("{}{}", text.empty() ? "" : ", ", p);
      return "[" + text + "]";
    };
    return Status::InvalidArgument(fmt::format(
        "{}: checkpoint written for log partitions {}, but processor {} now reads {} "
        "(stream.processor_threads or storage.log_partitions changed); {} "
        "(docs/formats/processor_checkpoint.md)",
        options_.checkpoint_path, list(written), options_.index, list(options_.partitions),
        RebuildAdvice(*log_,
                      std::filesystem::path(options_.checkpoint_path).parent_path().string())));
  }
  for (size_t i = 0; i < options_.partitions.size(); ++i) {
    (*offsets)[i] = ckpt->offsets[i].second;
  }
  Status restored;
  {
    // API readers (Health) may already ask: the server listens while its processors start.
    std::lock_guard lock(engine_mu_);
    restored = engine_->RestoreState(mapped->engine_state, clock_->NowNanos());
  }
  if (Status st = std::move(restored); !st.ok()) {
    if (st.code() != StatusCode::kInvalidArgument) return st;
    // A setting the state depends on changed (stream.window, stream.max_gap, a metric's kind
    // in [metrics.kinds]): say what to do.
    // What history keeps describes the rebuild from the log, which a truncated log does not
    // suggest (the clause stayed: found by a black-box test).
    const bool truncated = FirstTruncatedPartition(*log_, AllPartitions(*log_)).has_value();
    return Status::InvalidArgument(fmt::format(
        "{} ({}): set it back; {}{} (docs/formats/processor_checkpoint.md)", st.message(),
        options_.checkpoint_path,
        RebuildAdvice(*log_,
                      std::filesystem::path(options_.checkpoint_path).parent_path().string()),
        truncated ? ""
                  : "; history keeps the records written before as they are (windows at their "
                    "old size, fields of the old kind)"));
  }
  replay_applied_ = restored_replay_applied_ = ckpt->replay_applied;
  for (auto& e : ckpt->readings) {
    catchup_->PutReading(e);
    Reading& r = *readings_.TryEmplace(e.device_id).first;
    r.timestamp_ns = e.timestamp_ns;
    r.payload.clear();
    model::EncodeEvent(e, &r.payload);
  }
  logging::Info("restored checkpoint", {{"processor", std::to_string(options_.index)},
                                        {"bytes", std::to_string(mapped->engine_state.size())},
                                        {"devices", std::to_string(readings_.size())}});
  return Status::Ok();
}

bool PartitionProcessor::WriteCheckpoint() {
  if (options_.checkpoint_path.empty()) return true;
  const int64_t start = clock_->NowNanos();
  // Everything emitted before the checkpoint is in history, held partials included: the
  // restored engine does not re-emit an unchanged open window after a crash.
  ReleaseHeldPartials(start, /*all=*/true);
  if (history_ && !FlushHistory()) {
    // The checkpoint's offsets would cover records history does not hold.
    logging::Warn("checkpoint not written: the history store refuses writes",
                  {{"processor", std::to_string(options_.index)}});
    return false;
  }
  if (history_) {
    // Records emitted before the checkpoint's offsets must survive what it survives.
    Status st = history_->Flush();
    if (!st.ok()) {
      logging::Error("history flush before checkpoint failed", {{"error", st.ToString()}});
      checkpoint_error_ = st.ToString();
      return false;
    }
  }
  CrashPoint("checkpoint.begin");  // history flushed, checkpoint not yet written
  std::vector<std::pair<uint32_t, uint64_t>> offsets;
  for (size_t i = 0; i < options_.partitions.size(); ++i) {
    offsets.emplace_back(options_.partitions[i], readers_[i]->position().value);
  }
  // Readings go in as the log records they came from: no copies or re-encoding per device.
  ckpt_readings_.clear();
  ckpt_readings_.reserve(readings_.size());
  for (const auto& [id, r] : readings_.entries()) ckpt_readings_.push_back(r.payload);
  // The backlog file first: a checkpoint on disk is always covered by one as new.
  if (catchup_->pending() || has_backlog_file_) {
    Status st = WriteLatestBacklogFile(LatestBacklogPath(), catchup_->Markers());
    if (!st.ok()) {
      logging::Error("latest backlog not written", {{"error", st.ToString()}});
      checkpoint_error_ = st.ToString();
      return false;
    }
    has_backlog_file_ = catchup_->pending();
  }
  // The engine state streams into the file a piece at a time (kCheckpointPiece): it is
  // never held in memory a second time. An image of it (tens of MB at 10k devices, hundreds
  // with an hour of samples) doubled the resident memory while it was written, and faulting
  // it in afresh at each checkpoint was most of the checkpoint's CPU on a virtual machine
  // (docs/benchmarks/HISTORY.md, "Session 30"). API readers (Health) wait for the state's
  // part only, not for the fsync.
  Result<uint64_t> bytes = WriteCheckpointStreamed(
      options_.checkpoint_path, offsets, ckpt_readings_, &ckpt_bytes_, replay_applied_,
      [this](stream::StateSink& sink) {
        std::lock_guard lock(engine_mu_);
        return engine_->SaveStateTo(sink, &ckpt_engine_state_, kCheckpointPiece);
      });
  // One device's state can make a piece larger (an hour of 1 Hz samples: ~350 KB): a buffer
  // grown far past the piece size is given back.
  if (ckpt_engine_state_.capacity() > 4 * kCheckpointPiece) std::string().swap(ckpt_engine_state_);
  if (!bytes.ok()) {
    logging::Error("checkpoint not written", {{"error", bytes.status().ToString()}});
    checkpoint_error_ = bytes.status().ToString();
    return false;
  }
  for (const auto& [p, off] : offsets) {
    log_->SetConsumerOffset(ConsumerName(), p, model::LogOffset{off});
  }
  const int64_t end = clock_->NowNanos();
  checkpoint_seconds_->Observe(static_cast<double>(end - start) / 1e9);
  checkpoint_bytes_->Set(static_cast<double>(*bytes));
  last_checkpoint_ns_.store(end);
  return true;
}

void PartitionProcessor::RegisterWithLog() {
  if (options_.checkpoint_path.empty()) return;
  log_->RegisterConsumer(ConsumerName(), options_.partitions);
  // Until Start has restored the state, the lag is counted from where it will resume (the
  // checkpoint's offsets, else the log's first record): from 0 it showed every record of
  // the log as unprocessed during the restore (found by a black-box test).
  const auto peeked = PeekCheckpointOffsets(options_.checkpoint_path);
  for (size_t i = 0; i < options_.partitions.size(); ++i) {
    uint64_t from = log_->StartOffset(options_.partitions[i]).value;
    if (peeked.size() == options_.partitions.size() && peeked[i].first == options_.partitions[i]) {
      from = std::max(from, peeked[i].second);
    }
    positions_[i].store(from);
  }
}

Status PartitionProcessor::Start() {
  // A test holds the start to see the server listen and take events meanwhile.
  while (TestHeld("processor.start")) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  std::vector<uint64_t> offsets(options_.partitions.size(), 0);
  bool restored = false;
  bool found = false;  // a checkpoint file was read (even one of an empty state)
  if (!options_.checkpoint_path.empty()) {
    RegisterWithLog();
    JOULE_RETURN_IF_ERROR(RestoreCheckpoint(&offsets, &found));
    CrashPoint("processor.after_restore");  // state restored, nothing replayed yet
    restored = !readings_.empty() ||
               std::any_of(offsets.begin(), offsets.end(), [](uint64_t o) { return o > 0; });
    // No checkpoint, and retention deleted the first records of a partition: the state
    // rebuilt from what is left lacks those events, and its records, emitted in a higher
    // recovery epoch, would replace the complete ones in history (found by a black-box
    // test: after the checkpoints were moved away for a stream.processor_threads change, 1h
    // and 1d counts fell from 7200 to 5200 and `joule replay` could not repair them).
    if (!found) {
      JOULE_RETURN_IF_ERROR(CheckPartialRebuild(*log_, options_));
      if (auto truncated = FirstTruncatedPartition(*log_, options_.partitions)) {
        logging::Warn(
            "no checkpoint and a truncated log: rebuilding a partial state "
            "(--accept-partial-rebuild); history's windows before the log's first records "
            "are overwritten with partial ones",
            {{"processor", std::to_string(options_.index)},
             {"partition", std::to_string(truncated->first)},
             {"first_offset", std::to_string(truncated->second)}});
      }
    }
  }
  for (size_t i = 0; i < options_.partitions.size(); ++i) {
    uint32_t p = options_.partitions[i];
    model::LogOffset from = log_->StartOffset(p);
    if (restored) {
      if (offsets[i] < from.value) {
        return Status::Corruption(
            fmt::format("partition {}: checkpoint offset {} is below the log's first record {}", p,
                        offsets[i], from.value));
      }
      from = model::LogOffset{offsets[i]};
    }
    JOULE_ASSIGN_OR_RETURN(auto reader, log_->NewReader(p, from));
    positions_[i].store(from.value);
    readers_.push_back(std::move(reader));
  }
  stopped_.assign(readers_.size(), false);
  read_retry_.assign(readers_.size(), ReadRetry());
  zone_wait_.assign(readers_.size(), ZoneWait());
  if (!options_.checkpoint_path.empty()) {
    // A recovery epoch: whatever the previous run emitted after its last checkpoint has a
    // lower version than anything emitted from now on (docs/formats/processor_checkpoint.md),
    // and a checkpoint carrying the new epoch is durable before anything is emitted, so a
    // crash during recovery leads to a still higher epoch.
    // The epoch file is the server's, shared by its processors: each reads and raises it
    // under one lock (the server starts them one after the other; a caller need not).
    static std::mutex epoch_file_mu;
    std::unique_lock epoch_lock(epoch_file_mu);
    uint32_t dir_epoch = 0;
    if (!options_.epoch_path.empty()) {
      JOULE_ASSIGN_OR_RETURN(dir_epoch, ReadEngineEpoch(options_.epoch_path));
    }
    // Also when the state is rebuilt from a log a previous run already processed (no
    // checkpoint, no epoch file: a data dir only ever started fresh and stopped cleanly,
    // then its checkpoints moved away): that run emitted in epoch 0, and the rebuilt
    // records must outrank its (found by a black-box test: after a stream.window change
    // the new windows starting on a full minute were refused as stale by history).
    bool log_has_records = false;
    for (uint32_t p : options_.partitions) log_has_records |= log_->DurableEnd(p).value > 0;
    if (found || dir_epoch > 0 || log_has_records) {
      {
        std::lock_guard lock(engine_mu_);
        engine_->BeginRecoveryEpoch(dir_epoch + 1);
      }
      if (!options_.epoch_path.empty()) {
        JOULE_RETURN_IF_ERROR(WriteEngineEpoch(options_.epoch_path, engine_->version_epoch()));
      }
      if (!found) {
        logging::Info("no checkpoint: rebuilding the state from the log",
                      {{"processor", std::to_string(options_.index)},
                       {"epoch", std::to_string(engine_->version_epoch())}});
      }
    }
    epoch_lock.unlock();
    if (!WriteCheckpoint()) {
      return Status::IoError(fmt::format("cannot write the recovery checkpoint {}: {}",
                                         options_.checkpoint_path, checkpoint_error_));
    }
  }
  started_.store(true);
  thread_ = std::thread([this] { Run(); });
  return Status::Ok();
}

Status PartitionProcessor::Stop() {
  if (!thread_.joinable()) return Status::Ok();
  stop_.store(true);
  thread_.join();
  // History is current at shutdown: the held partials go out (with or without checkpoints).
  ReleaseHeldPartials(clock_->NowNanos(), /*all=*/true);
  if (history_ && !FlushHistory()) {
    logging::Warn(
        "stopping with history records not written (the store refuses writes); the "
        "next start re-processes the log from the last checkpoint",
        {{"processor", std::to_string(options_.index)}});
    return Status::Unavailable(fmt::format(
        "processor {}: history records not written (the store refuses writes)", options_.index));
  }
  checkpoint_error_.clear();
  if (!WriteCheckpoint()) {
    return Status::IoError(fmt::format("processor {}: final checkpoint not written{}{}",
                                       options_.index, checkpoint_error_.empty() ? "" : ": ",
                                       checkpoint_error_));
  }
  return Status::Ok();
}

void PartitionProcessor::ReleaseHeldPartials(int64_t now_ns, bool all) {
  if (!history_) return;
  sink_->ReleaseHeld(now_ns, all);
}

uint64_t PartitionProcessor::LagRecords() const {
  uint64_t lag = 0;
  for (size_t i = 0; i < options_.partitions.size(); ++i) {
    uint64_t end = log_->DurableEnd(options_.partitions[i]).value;
    uint64_t pos = positions_[i].load(std::memory_order_relaxed);
    if (end > pos) lag += end - pos;
  }
  return lag;
}

double PartitionProcessor::LagSeconds() const {
  // Append times are the log's (wall clock): compared with the wall clock.
  const int64_t now = wall_clock_->NowNanos();
  double worst = 0;
  for (size_t i = 0; i < options_.partitions.size(); ++i) {
    uint64_t end = log_->DurableEnd(options_.partitions[i]).value;
    if (end <= positions_[i].load(std::memory_order_relaxed)) continue;
    // The oldest record not processed yet was appended after the last one processed, and
    // became durable after the last read that found nothing (appended at most the log's
    // commit time before it). Until session 25 only the first bound was used: after a
    // quiet spell a fresh record showed the whole spell as lag (found by the operator
    // metrics' black-box test: 31 s for a record a few ms old).
    const int64_t since = std::max(last_append_ns_[i].load(std::memory_order_relaxed),
                                   caught_up_ns_[i].load(std::memory_order_relaxed));
    if (since > 0) worst = std::max(worst, static_cast<double>(now - since) / 1e9);
  }
  return worst;
}

void PartitionProcessor::OnReadFailed(size_t slot, const Status& status) {
  read_errors_->Inc();
  ReadRetry& retry = read_retry_[slot];
  uint64_t failures = 0;
  if (!retry.Failed(ReadRetry::Clock::now(), &failures)) return;
  logging::Error(
      "log read failed",
      {{"processor", std::to_string(options_.index)},
       {"partition", std::to_string(options_.partitions[slot])},
       {"error", status.ToString()},
       {"failures", std::to_string(failures)},
       {"retry_in_ms",
        std::to_string(
            std::chrono::duration_cast<std::chrono::milliseconds>(retry.backoff()).count())}});
}

bool PartitionProcessor::ZoneKnown(size_t slot) {
  ZoneWait& w = zone_wait_[slot];
  if (!w.waiting) return true;
  const auto now = std::chrono::steady_clock::now();
  if (now < w.retry_at) return false;
  // Asked outside the engine's lock (a lookup may take up to metadata.lookup_timeout); the
  // answer fills the metadata cache the engine then reads.
  if (timezones_ != nullptr && !timezones_->TimezoneOf(w.device_id)) {
    w.retry_at = now + std::chrono::milliseconds(500);
    return false;
  }
  logging::Info(
      "processor resumed: the metadata store says the device's timezone again",
      {{"processor", std::to_string(options_.index)},
       {"partition", std::to_string(options_.partitions[slot])},
       {"device_id", w.device_id},
       {"waited_ms",
        std::to_string(
            std::chrono::duration_cast<std::chrono::milliseconds>(now - w.since).count())}});
  w = ZoneWait();
  return true;
}

size_t PartitionProcessor::WaitForZone(size_t slot, size_t done) {
  const size_t record = event_records_[done];
  const model::LogOffset at = batch_[record].offset;
  Result<std::unique_ptr<log::LogReader>> reader = log_->NewReader(options_.partitions[slot], at);
  if (!reader.ok()) {
    // Cannot happen while this processor's checkpoints hold the log back (retention keeps
    // every record after them); never skip the events: stop reading the partition.
    stopped_[slot] = true;
    logging::Error(
        "processor stopped reading a partition: cannot go back to an event it "
        "has to wait with",
        {{"processor", std::to_string(options_.index)},
         {"partition", std::to_string(options_.partitions[slot])},
         {"offset", std::to_string(at.value)},
         {"error", reader.status().ToString()}});
    return record;
  }
  readers_[slot] = std::move(*reader);
  ZoneWait& w = zone_wait_[slot];
  w.waiting = true;
  w.device_id = events_[done].device_id;
  w.since = std::chrono::steady_clock::now();
  w.retry_at = w.since + std::chrono::milliseconds(500);
  zone_waits_->Inc();
  logging::Warn(
      "processor waits for the metadata store: the timezone of a device new to it is "
      "unknown (the store is unreachable), and its local days are not guessed; the events "
      "stay in the log",
      {{"processor", std::to_string(options_.index)},
       {"partition", std::to_string(options_.partitions[slot])},
       {"device_id", w.device_id},
       {"offset", std::to_string(at.value)}});
  return record;
}

bool PartitionProcessor::ProcessBatch(size_t slot) {
  if (stopped_[slot]) return false;
  if (!ZoneKnown(slot)) return false;
  ReadRetry& retry = read_retry_[slot];
  if (retry.Waiting(ReadRetry::Clock::now())) return false;
  batch_.clear();
  const int64_t read_at = wall_clock_->NowNanos();
  Result<size_t> n = readers_[slot]->Next(options_.read_batch, &batch_);
  if (!n.ok()) {
    if (n.status().code() == StatusCode::kCorruption) {
      // Never skipped: the records from here on were acknowledged. The log has reported
      // and quarantined the damage; this partition stays where it is (lag grows, the
      // checkpoint keeps this offset) until an operator repairs the segment and restarts.
      stopped_[slot] = true;
      retry = ReadRetry();  // not read again: nothing to wait for
      logging::Error("processor stopped reading a damaged log partition",
                     {{"processor", std::to_string(options_.index)},
                      {"partition", std::to_string(options_.partitions[slot])},
                      {"offset", std::to_string(readers_[slot]->position().value)},
                      {"error", n.status().ToString()}});
      return false;
    }
    OnReadFailed(slot, n.status());
    return false;
  }
  if (retry.failing()) {
    logging::Info("log read recovered", {{"processor", std::to_string(options_.index)},
                                         {"partition", std::to_string(options_.partitions[slot])},
                                         {"failures", std::to_string(retry.Succeeded())}});
  }
  if (*n == 0) {
    caught_up_ns_[slot].store(read_at, std::memory_order_relaxed);
    return false;
  }
  int64_t now = clock_->NowNanos();
  sink_->set_now(now);
  // Decode the whole batch first (storage reused across batches), then hand it to the
  // engine in one call, which prefetches the next devices' state while it works.
  if (events_.size() < batch_.size()) events_.resize(batch_.size());
  event_records_.resize(batch_.size());
  hashes_.resize(batch_.size());
  size_t n_events = 0;
  for (size_t i = 0; i < batch_.size(); ++i) {
    model::Event& event = events_[n_events];
    if (!model::DecodeEvent(batch_[i].payload, &event).ok()) {
      decode_errors_->Inc();
      continue;
    }
    hashes_[n_events] = FlatStringMap<Reading>::Hash(event.device_id);
    event_records_[n_events] = static_cast<uint32_t>(i);
    ++n_events;
  }
  size_t done;
  {
    std::lock_guard lock(engine_mu_);
    duplicate_.resize(n_events);
    done = engine_->ProcessBatch(events_.data(), n_events, now, sink_.get(), duplicate_.data());
  }
  size_t consumed = batch_.size();  // records
  if (done < n_events) {            // events_[done] and after: not processed (a zone unknown)
    consumed = WaitForZone(slot, done);
    n_events = done;
  }
  // A duplicate the engine dropped is no reading: the first copy wins (CONTRACT §1; found by
  // a black-box test: a later copy of an event_id became the latest reading and an SSE
  // `reading`). The rest keep their order.
  size_t kept = 0;
  for (size_t i = 0; i < n_events; ++i) {
    if (duplicate_[i]) continue;
    if (kept != i) {
      std::swap(events_[kept], events_[i]);
      hashes_[kept] = hashes_[i];
      event_records_[kept] = event_records_[i];
    }
    ++kept;
  }
  // The newest reading per device (by event time; of equal times the first: a later copy
  // is a duplicate, CONTRACT §1): one lookup per event, the next ones' table slots and
  // entries prefetched (a lookup is a cache miss at 10k devices).
  constexpr size_t kSlotAhead = 8, kEntryAhead = 4;
  for (size_t i = 0; i < kept; ++i) {
    if (i + kSlotAhead < kept) readings_.PrefetchSlot(hashes_[i + kSlotAhead]);
    if (i + kEntryAhead < kept) readings_.PrefetchEntry(hashes_[i + kEntryAhead]);
    const model::Event& event = events_[i];
    auto [r, inserted] = readings_.TryEmplace(event.device_id, hashes_[i]);
    if (inserted || r->timestamp_ns < event.timestamp_ns) {
      r->timestamp_ns = event.timestamp_ns;
      r->payload.assign(batch_[event_records_[i]].payload);
    }
  }
  catchup_->PutReadings(std::span<const model::Event>(events_.data(), kept));
  if (options_.live) {
    for (size_t i = 0; i < kept; ++i) options_.live->PublishReading(events_[i]);
  }
  sink_->FlushLatest();
  events_processed_->Inc(consumed);
  positions_[slot].store(
      consumed == batch_.size() ? readers_[slot]->position().value : batch_[consumed].offset.value,
      std::memory_order_relaxed);
  if (consumed == 0) return false;
  last_append_ns_[slot].store(batch_[consumed - 1].append_time_ns, std::memory_order_relaxed);
  // Test crash points: events applied and records emitted, not yet checkpointed; the
  // second one only while replaying the backlog after a start.
  CrashPoint("processor.after_batch");
  if (!caught_up_once_.load(std::memory_order_relaxed)) CrashPoint("processor.replay_batch");
  return true;
}

void PartitionProcessor::DrainLatest() {
  // A latest store that restarted may have lost what it held: rewrite every device this
  // processor knows (it keeps a reading per device, restored from the checkpoint).
  if (const uint64_t g = latest_->InstanceGeneration(); g != latest_generation_) {
    latest_generation_ = g;
    // Not a warning when this processor knows no device yet (a first start with a fresh
    // Redis; found by a black-box test: two warnings on every fresh install).
    const bool nothing_lost = readings_.empty();
    (nothing_lost ? logging::Info : logging::Warn)(
        nothing_lost ? "latest store is a new instance; no device to rewrite"
                     : "latest store is a new instance (restarted); rewriting its devices from "
                       "history",
        {{"processor", std::to_string(options_.index)},
         {"devices", std::to_string(readings_.size())}});
    for (const auto& [id, e] : readings_.entries()) catchup_->Resync(id);
  }
  if (!catchup_->pending()) return;
  // The catch-up may read records back from history: partials held back by the history
  // throttle go out first (throttling is off while a backlog is being written).
  if (history_ && sink_->held() > 0) {
    ReleaseHeldPartials(clock_->NowNanos(), /*all=*/true);
    if (!FlushHistory()) return;  // history lacks them: catch up after the retry
  }
  catchup_->Drain([this](std::string_view device_id) -> const model::Event* {
    const Reading* r = readings_.Find(device_id);
    if (r == nullptr || !model::DecodeEvent(r->payload, &drain_reading_).ok()) return nullptr;
    return &drain_reading_;
  });
}

bool PartitionProcessor::FlushHistory() {
  auto& pending = sink_->pending_history();
  if (pending.empty()) return true;
  Status st = history_->Put(pending);
  if (!st.ok() && (st.code() == StatusCode::kIoError || st.code() == StatusCode::kUnavailable)) {
    // A full disk: never skipped. The records stay pending, no checkpoint is written past
    // them, and nothing else is processed until the store takes them (Run retries).
    history_retry_at_ =
        std::chrono::steady_clock::now() + std::chrono::nanoseconds(options_.history_retry_ns);
    if (!history_blocked_) {
      history_blocked_ = true;
      history_retries_ = 0;
      // Not joule_sink_errors_total: nothing is dropped (the store counts the failure in
      // joule_history_write_failures_total; until session 25 these held records were
      // counted here too, as if lost; found by the operator metrics' black-box test).
      logging::Error(
          "history write failed; processing paused, retried every second (the log "
          "keeps the events)",
          {{"processor", std::to_string(options_.index)},
           {"records", std::to_string(pending.size())},
           {"error", st.ToString()}});
    } else {
      ++history_retries_;
    }
    std::lock_guard lock(history_block_mu_);
    if (!history_block_.blocked) history_block_.since_ns = clock_->NowNanos();
    history_block_.blocked = true;
    history_block_.error = st.ToString();
    history_block_.pending_records = pending.size();
    return false;
  }
  if (!st.ok()) {
    history_errors_->Inc(pending.size());
    logging::Error("history write failed", {{"error", st.ToString()}});
  }
  if (history_blocked_) {
    history_blocked_ = false;
    logging::Info("history write resumed", {{"processor", std::to_string(options_.index)},
                                            {"records", std::to_string(pending.size())},
                                            {"retries", std::to_string(history_retries_)}});
    std::lock_guard lock(history_block_mu_);
    history_block_ = HistoryBlock{};
  }
  pending.clear();
  CrashPoint("processor.after_history_put");  // records in history, offsets not checkpointed
  return true;
}

PartitionProcessor::HistoryBlock PartitionProcessor::HistoryBlocked() const {
  std::lock_guard lock(history_block_mu_);
  return history_block_;
}

bool PartitionProcessor::Health(std::string_view device_id,
                                stream::WindowEngine::DeviceHealth* out) const {
  if (!started_.load()) return false;
  std::lock_guard lock(engine_mu_);
  return engine_->Health(device_id, out);
}

// Both run on the processor thread, the engine's only writer: no lock is needed to read it.
void PartitionProcessor::PublishEngineCounters() {
  const stream::WindowEngine::Stats s = engine_->counters();
  duplicates_total_->Inc(s.duplicates - published_.duplicates);
  late_total_->Inc(s.late_updates - published_.late_updates);
  out_of_order_total_->Inc(s.out_of_order - published_.out_of_order);
  late_dropped_total_->Inc(s.late_dropped - published_.late_dropped);
  engine_devices_->Set(static_cast<double>(s.devices));
  published_ = s;
}

void PartitionProcessor::PublishEngineState() {
  const stream::WindowEngine::Stats s = engine_->stats();
  engine_open_windows_->Set(static_cast<double>(s.open_windows));
  engine_state_bytes_->Set(static_cast<double>(s.state_bytes_estimate));
}

void PartitionProcessor::CorrectBaseWindows(
    uint64_t journal_seq,
    std::vector<std::pair<model::AggregateRecord, model::AggregateRecord>> before_after) {
  std::lock_guard lock(corrections_mu_);
  for (auto& [before, after] : before_after) {
    corrections_.push_back({journal_seq, std::move(before), std::move(after)});
    ++corrections_queued_;
  }
}

bool PartitionProcessor::WaitForCorrections(int64_t timeout_ns) {
  uint64_t queued;
  {
    std::lock_guard lock(corrections_mu_);
    queued = corrections_queued_;
  }
  const auto until = std::chrono::steady_clock::now() + std::chrono::nanoseconds(timeout_ns);
  while (corrections_durable_.load() < queued) {
    // A processor not yet started (the server starts them while it serves) is waited for;
    // a stopped one applies nothing more. Atomics: thread_ is assigned by the starting
    // thread (reading thread_.joinable() here was a data race with Start, and returned false
    // at once while it restored: the journal cleaner spun on its 200 ms wait meanwhile, and
    // a replay handed over during a start was refused).
    if (std::chrono::steady_clock::now() >= until || stop_.load()) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

void PartitionProcessor::Abandon() {
  if (!started_.load()) stop_.store(true);
}

bool PartitionProcessor::ApplyCorrections(int64_t now_ns) {
  // Not before the backlog found at start is processed: a journal handed over at start
  // (a replay interrupted by a crash) corrects the state the crashed run had, which may
  // hold rollups the restored checkpoint did not have yet.
  if (!caught_up_once_.load()) return false;
  std::vector<Correction> batch;
  {
    std::lock_guard lock(corrections_mu_);
    if (corrections_.empty()) return false;
    batch.swap(corrections_);
  }
  {
    std::lock_guard lock(engine_mu_);
    sink_->set_now(now_ns);
    for (const Correction& c : batch) {
      if (c.journal_seq != 0 && c.journal_seq <= restored_replay_applied_) continue;  // has it
      engine_->CorrectBaseWindow(c.before, c.after, sink_.get());
    }
  }
  // The next checkpoint says these journals are in the state (all of a journal's
  // corrections for this processor were queued at once, so they are all in `batch`).
  for (const Correction& c : batch) replay_applied_ = std::max(replay_applied_, c.journal_seq);
  corrections_applied_ += batch.size();
  if (options_.checkpoint_path.empty()) corrections_durable_.store(corrections_applied_);
  return true;
}

void PartitionProcessor::Run() {
  SetUpThread(fmt::format("joule-proc-{}", options_.index), options_.nice);
  ReserveThreadArena(kProcessorArenaBytes);
  int64_t last_tick = 0;
  int64_t last_release = 0;
  // The processors' checkpoints are spread over the interval (processor i's first comes
  // after (count - i) / count of it): together, each one's burst of serializing, writing
  // and page-cache work took both cores of a small machine at once, and the API's tail
  // latency with them (docs/benchmarks/HISTORY.md, "Session 30").
  int64_t last_checkpoint = clock_->NowNanos() - options_.checkpoint_interval_ns /
                                                     std::max(1, options_.count) * options_.index;
  // The engine's counters count from here (a restored engine's are the checkpoint's).
  published_ = engine_->counters();
  engine_devices_->Set(static_cast<double>(published_.devices));
  int64_t last_state = 0;
  while (true) {
    bool stopping = stop_.load();
    if (history_blocked_) {
      // The history store refused the pending records (a full disk): retry them, and
      // process nothing else until it takes them — what is not read stays in the log, and
      // no checkpoint is written past records history lacks. A stop leaves them to the
      // next start, which re-processes the log from the last checkpoint.
      if (stopping) break;
      if (std::chrono::steady_clock::now() >= history_retry_at_) FlushHistory();
      if (history_blocked_) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        continue;
      }
    }
    bool any = false;
    const bool held = TestHeld("log.consumers");
    if (!held) {
      for (size_t i = 0; i < readers_.size(); ++i) any |= ProcessBatch(i);
    }
    PublishEngineCounters();
    int64_t now = clock_->NowNanos();
    if (now - last_state >= kEngineStateInterval) {
      PublishEngineState();
      last_state = now;
    }
    // Applied corrections are checkpointed at once: a replay's difference to the rollups
    // exists only in this engine's state (docs/formats/archive.md, "Rollups still open").
    const bool corrected = ApplyCorrections(now);
    if (now - last_tick >= options_.tick_interval_ns) {
      std::lock_guard lock(engine_mu_);
      sink_->set_now(now);
      engine_->Tick(now, sink_.get());
      last_tick = now;
    }
    sink_->FlushLatest();
    if (now - last_release >= kNanosPerSecond) {
      ReleaseHeldPartials(now, /*all=*/false);
      last_release = now;
    }
    FlushHistory();
    DrainLatest();  // after the history flush: the catch-up may read back from history
    if (!options_.checkpoint_path.empty() &&
        (corrected || now - last_checkpoint >= options_.checkpoint_interval_ns)) {
      const uint64_t applied = corrections_applied_;
      if (WriteCheckpoint()) corrections_durable_.store(applied);
      last_checkpoint = now;
    }
    if (!any) {
      // Not while a slot waits for a zone: its backlog is not processed yet.
      const bool zone_wait = std::any_of(zone_wait_.begin(), zone_wait_.end(),
                                         [](const ZoneWait& w) { return w.waiting; });
      if (!zone_wait) caught_up_once_.store(true);
      serving_once_.store(true);
      if (stopping) {
        // Finish a latest-store backlog while the store answers, within a bound.
        const int64_t until = clock_->NowNanos() + options_.latest_final_drain_ns;
        while (catchup_->pending() && clock_->NowNanos() < until &&
               (options_.latest_health == nullptr || options_.latest_health->up())) {
          DrainLatest();
        }
        break;
      }
      // Wait for new data on the first partition still read with a short timeout; the
      // others are polled on wake-up. The timeout bounds the tick latency.
      const int64_t wait_ns = std::min<int64_t>(options_.tick_interval_ns, 50'000'000);
      if (held || zone_wait) {  // (a waiting slot's reader has data: no WaitForData)
        std::this_thread::sleep_for(std::chrono::nanoseconds(wait_ns));
        continue;
      }
      if (ReadRetry::SleepUntilFirstRetry(read_retry_, std::chrono::nanoseconds(wait_ns))) continue;
      size_t slot = 0;
      while (slot < readers_.size() && stopped_[slot]) ++slot;
      if (slot < readers_.size()) {
        log_->WaitForData(options_.partitions[slot], readers_[slot]->position(), wait_ns);
      } else if (!readers_.empty()) {  // every partition stopped: just wait
        const uint32_t p = options_.partitions[0];
        log_->WaitForData(p, log_->DurableEnd(p), wait_ns);
      }
    }
  }
}

}  // namespace joule::app

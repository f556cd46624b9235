#include "app/archiver.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <thread>
#include <vector>

#include "common/logging.h"
#include "common/test_hold.h"
#include "common/thread_priority.h"
#include "model/event.h"
#include "store/archive/archive_layout.h"

namespace joule::app {

Archiver::Archiver(ArchiverOptions options, log::Log* log, const Clock* clock,
                   MetricsRegistry* metrics)
    : options_(std::move(options)),
      log_(log),
      clock_(clock),
      metrics_(metrics),
      committed_(new std::atomic<uint64_t>[log->partitions()]) {
  for (uint32_t p = 0; p < log_->partitions(); ++p) committed_[p].store(0);
  stopped_ = std::make_unique<std::atomic<bool>[]>(log_->partitions());
  read_retry_.assign(log_->partitions(), ReadRetry());
  for (uint32_t p = 0; p < log_->partitions(); ++p) stopped_[p].store(false);
  if (metrics_) {
    read_errors_ = metrics_->GetCounter(
        "joule_archive_read_errors_total",
        "Failed log reads of the archiver (retried with a backoff; e.g. out of file descriptors)");
    decode_errors_ = metrics_->GetCounter("joule_archive_decode_errors_total",
                                          "Log records not archived because they did not decode");
    // Both counted when a round's files are published, events first: every file holds at
    // least one event, so no scrape sees more files than events (docs/formats/archive.md).
    events_ = metrics_->GetCounter("joule_archive_events_total",
                                   "Events in the archive files this process published");
    files_ =
        metrics_->GetCounter("joule_archive_files_total", "Archive files this process published");
    seal_errors_ = metrics_->GetCounter("joule_archive_seal_errors_total",
                                        "Archive rounds that failed (and were retried)");
    // Found at start (the log deleted them while the archiver did not run: archive.enabled
    // = false with log retention): only an error line said so (found by a black-box test).
    records_missed_ = metrics_->GetCounter(
        "joule_archive_log_records_missed_total",
        "Log records deleted by log retention before the archive held them (found at start: "
        "never archived)");
  }
}

Archiver::~Archiver() { (void)Stop(); }  // a failed round was logged

Status Archiver::Start() {
  log_->RegisterConsumer(kConsumerName);
  JOULE_RETURN_IF_ERROR(OpenWriter());
  if (metrics_) {
    metrics_->AddGaugeCallback("joule_archive_lag_records",
                               "Durable log records not yet in published archive files", {},
                               [this] { return static_cast<double>(LagRecords()); });
  }
  thread_ = std::thread([this] { Run(); });
  return Status::Ok();
}

Status Archiver::OpenWriter() {
  readers_.clear();
  writer_.reset();
  store::ArchiveWriterOptions wo;
  wo.root = options_.dir;
  wo.partitions = log_->partitions();
  wo.max_file_bytes = options_.max_file_bytes;
  wo.max_file_age_ns = options_.max_file_age_ns;
  wo.retention_ns = options_.retention_ns;
  wo.clock = clock_;
  JOULE_ASSIGN_OR_RETURN(writer_, store::ArchiveWriter::Open(wo));
  const auto& report = writer_->recovery_report();
  // A retry after a failed round removes that round's staging files: not worth a line a
  // second while a full disk makes every round fail (Failed logs those).
  if (report.files_rolled_back > 0 || (report.temp_files_removed > 0 && !state().failing)) {
    logging::Info("archive recovered",
                  {{"temp_files_removed", std::to_string(report.temp_files_removed)},
                   {"files_rolled_back", std::to_string(report.files_rolled_back)}});
  }
  for (uint32_t p = 0; p < log_->partitions(); ++p) {
    const uint64_t start = log_->StartOffset(p).value;
    // No checkpoint (the archiver's first start) on a log whose start retention deleted:
    // the records before it were never archived either (archive.enabled = false since the
    // data dir's first start: nothing said so, and `joule export` silently lacked them;
    // found by a black-box test).
    const uint64_t archived = report.had_checkpoint ? writer_->committed_offset(p) : 0;
    if (archived < start) {
      const uint64_t missed = start - archived;
      logging::Error(
          "archive: log records deleted before they were archived",
          {{"partition", std::to_string(p)},
           {"archived_up_to", std::to_string(archived)},
           {"log_start", std::to_string(start)},
           {"records", std::to_string(missed)},
           {"cause", report.had_checkpoint
                         ? "log retention ran while the archiver did not (archive.enabled "
                           "= false?): those events are in no archive file"
                         : "log retention ran before the archiver first ran "
                           "(archive.enabled = false until now?): those events are in no "
                           "archive file"}});
      if (records_missed_ != nullptr) records_missed_->Inc(missed);
    }
    if (!report.had_checkpoint || archived < start) writer_->SetStart(p, start);
    const uint64_t from = writer_->committed_offset(p);
    committed_[p].store(from);
    log_->SetConsumerOffset(kConsumerName, p, model::LogOffset{from});
    auto reader = log_->NewReader(p, model::LogOffset{from});
    if (!reader.ok() && report.had_checkpoint &&
        reader.status().code() == StatusCode::kInvalidArgument) {
      // A checkpoint past the log's end: the archive came from another data dir (it said
      // only "log partition 0 has no offset N (end 0)": found by a black-box test).
      const std::string ckpt =
          (std::filesystem::path(options_.dir) / store::kArchiveCheckpointFile).string();
      return Status::InvalidArgument(fmt::format(
          "the archive checkpoint {} names log offsets this data dir's log does not have "
          "({}): the archive was made with another log (copied from another data dir?). If "
          "the archive files were copied here on purpose, remove {} (the files stay; the "
          "archiver starts at this log's start); to restore a backup, restore the whole data "
          "dir (docs/OPERATIONS.md, \"Restore\")",
          ckpt, reader.status().message(), ckpt));
    }
    if (!reader.ok()) return reader.status();
    readers_.push_back(std::move(*reader));
  }
  return Status::Ok();
}

Status Archiver::Stop() {
  if (!thread_.joinable()) return Status::Ok();
  stop_.store(true);
  thread_.join();
  if (failed_.load()) {
    return Status::IoError("archive: the last round was not sealed: " + state().error);
  }
  return Status::Ok();
}

uint64_t Archiver::LagRecords() const {
  uint64_t lag = 0;
  for (uint32_t p = 0; p < log_->partitions(); ++p) {
    const uint64_t end = log_->DurableEnd(p).value;
    const uint64_t done = committed_[p].load(std::memory_order_relaxed);
    if (end > done) lag += end - done;
  }
  return lag;
}

Status Archiver::SealNow(int64_t timeout_ns, const std::atomic<bool>* cancel) {
  const uint32_t n = log_->partitions();
  std::vector<uint64_t> target(n);
  for (uint32_t p = 0; p < n; ++p) target[p] = log_->DurableEnd(p).value;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::nanoseconds(timeout_ns);
  std::unique_lock lock(seal_mu_);
  while (true) {
    bool done = true;
    for (uint32_t p = 0; p < n && done; ++p) done = committed_[p].load() >= target[p];
    if (done) return Status::Ok();
    if (!thread_.joinable() || stop_.load()) return Status::Unavailable("the archiver is stopped");
    for (uint32_t p = 0; p < n; ++p) {
      if (stopped_[p].load() && committed_[p].load() < target[p]) {
        return Status::Unavailable(fmt::format(
            "log partition {} is damaged at offset {}: the archive cannot be completed (see "
            "the log corruption report in /readyz)",
            p, committed_[p].load()));
      }
    }
    if (cancel && cancel->load()) return Status::Unavailable("cancelled (server stopping)");
    if (std::chrono::steady_clock::now() >= deadline) {
      return Status::Unavailable(
          fmt::format("the archiver did not seal within {} s (lag {} records)",
                      timeout_ns / kNanosPerSecond, LagRecords()));
    }
    // (Re)asked every slice: the thread may have sealed a round that began before `target`.
    seal_requested_.store(true);
    sealed_cv_.wait_for(lock, std::chrono::milliseconds(200));
  }
}

bool Archiver::ReadBatch(uint32_t p) {
  if (stopped_[p].load(std::memory_order_relaxed)) return false;
  ReadRetry& retry = read_retry_[p];
  if (retry.Waiting(ReadRetry::Clock::now())) return false;
  batch_.clear();
  Result<size_t> n = readers_[p]->Next(options_.read_batch, &batch_);
  if (!n.ok() && n.status().code() == StatusCode::kCorruption) {
    // Never skipped (the log reported and quarantined it): this partition's archive stops.
    stopped_[p].store(true);
    retry = ReadRetry();  // not read again: nothing to wait for
    logging::Error("archive: stopped reading a damaged log partition",
                   {{"partition", std::to_string(p)}, {"error", n.status().ToString()}});
    return false;
  }
  if (!n.ok()) {
    if (read_errors_) read_errors_->Inc();
    uint64_t failures = 0;
    if (retry.Failed(ReadRetry::Clock::now(), &failures)) {
      logging::Error("archive: log read failed", {{"partition", std::to_string(p)},
                                                  {"error", n.status().ToString()},
                                                  {"failures", std::to_string(failures)}});
    }
    return false;
  }
  if (retry.failing()) {
    logging::Info("archive: log read recovered", {{"partition", std::to_string(p)},
                                                  {"failures", std::to_string(retry.Succeeded())}});
  }
  // Views into the records' payloads (no copy of the event; store/archive/event_view.h).
  model::Event fallback;
  for (const auto& rec : batch_) {
    if (!store::DecodeEventView(rec.payload, &view_, &fallback).ok()) {
      if (decode_errors_) decode_errors_->Inc();
      writer_->Skip(p, rec.offset.value);
      continue;
    }
    Status st = writer_->Add(p, rec.offset.value, view_);
    if (!st.ok()) {
      // The writer is unusable now; the round is redone from the checkpoint.
      Failed("archive: write failed", st);
      return false;
    }
    // Backfill and late events can open many hours at once: the round's memory is
    // bounded (buffered rows, zstd streams; ArchiveWriterOptions), so seal when it is full.
    if (writer_->RoundFull()) {
      SealRound();
      if (failed_.load()) return false;
    }
  }
  return *n > 0;
}

void Archiver::SealRound() {
  Result<size_t> sealed = writer_->Seal();
  if (!sealed.ok()) {
    Failed("archive: sealing failed", sealed.status());
    return;
  }
  {
    std::lock_guard lock(state_mu_);
    if (state_.failing) {
      logging::Info("archive: sealing resumed", {{"failures", std::to_string(state_.failures)}});
    }
    state_ = State{};
  }
  // Events before files, so that a scrape in between sees no file without its events.
  if (events_) events_->Inc(writer_->last_sealed_events());
  if (files_) files_->Inc(*sealed);
  for (uint32_t p = 0; p < log_->partitions(); ++p) {
    const uint64_t off = writer_->committed_offset(p);
    committed_[p].store(off, std::memory_order_relaxed);
    log_->SetConsumerOffset(kConsumerName, p, model::LogOffset{off});
  }
  { std::lock_guard lock(seal_mu_); }
  sealed_cv_.notify_all();
  if (options_.after_seal) options_.after_seal();
}

void Archiver::Failed(std::string_view what, const Status& status) {
  failed_.store(true);
  std::lock_guard lock(state_mu_);
  // Logged when a run of failures begins, then at most once a minute: on a full disk the
  // round is retried every second.
  const int64_t now = clock_->NowNanos();
  if (!state_.failing || now - last_failure_log_ns_ >= kNanosPerMinute) {
    logging::Error(what, {{"error", status.ToString()},
                          {"failures", std::to_string(state_.failures + 1)},
                          {"retry", "every second, from the archive checkpoint"}});
    last_failure_log_ns_ = now;
  }
  if (!state_.failing) state_.since_ns = now;
  state_.failing = true;
  state_.error = status.ToString();
  ++state_.failures;
}

Archiver::State Archiver::state() const {
  std::lock_guard lock(state_mu_);
  return state_;
}

void Archiver::Run() {
  SetUpThread("joule-archiver", options_.nice);
  int64_t last_retention = 0;
  int64_t retry_at = 0;
  bool stop_retried = false;
  while (true) {
    const bool stopping = stop_.load();
    if (failed_.load()) {
      // Crash semantics without the crash: reopen (recovery deletes the unfinished round)
      // and read again from the checkpoint. Retried every second; retention stays blocked.
      // A stop retries once more at once, whenever the last try was: the cause may be gone
      // (descriptors or space back), and a stop that could seal is clean. A round that fails
      // again is what Stop() reports.
      if (stopping && stop_retried) break;
      if (!stopping && clock_->NowNanos() < retry_at) {
        log_->WaitForData(0, log_->DurableEnd(0), 100'000'000);
        continue;
      }
      if (stopping) stop_retried = true;
      if (seal_errors_) seal_errors_->Inc();
      retry_at = clock_->NowNanos() + kNanosPerSecond;
      Status st = OpenWriter();
      if (st.ok()) {
        failed_.store(false);
        seal_redone_round_ = true;
      } else {
        Failed("archive: reopen failed", st);
      }
      continue;
    }
    bool any = false;
    const bool held = TestHeld("log.consumers");
    for (uint32_t p = 0; !held && p < readers_.size() && !failed_.load(); ++p) {
      any |= ReadBatch(p);
    }
    if (failed_.load()) continue;
    if (writer_->SealDue() ||
        (!any && (stopping || seal_requested_.exchange(false) || seal_redone_round_))) {
      seal_redone_round_ = false;
      SealRound();
    }
    const int64_t now = clock_->NowNanos();
    if (options_.retention_ns > 0 && now - last_retention >= options_.retention_interval_ns) {
      last_retention = now;
      Result<size_t> removed = writer_->EnforceRetention();
      if (!removed.ok()) {
        logging::Error("archive retention failed", {{"error", removed.status().ToString()}});
      } else if (*removed > 0) {
        logging::Info("archive retention", {{"hours_removed", std::to_string(*removed)}});
      }
    }
    if (!any) {
      if (stopping) break;
      // A read failed: the data is there, its retry is what to wait for.
      if (ReadRetry::SleepUntilFirstRetry(read_retry_, std::chrono::milliseconds(100))) continue;
      uint32_t p = 0;
      while (p < readers_.size() && stopped_[p].load()) ++p;
      if (p < readers_.size() && !held) {
        log_->WaitForData(p, readers_[p]->position(), 100'000'000);
      } else {  // held, or every partition stopped: just wait
        log_->WaitForData(0, log_->DurableEnd(0), 100'000'000);
      }
    }
  }
}

}  // namespace joule::app

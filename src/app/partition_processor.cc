#include "app/partition_processor.h"

#include <fmt/format.h>

#include <algorithm>

#include "common/logging.h"
#include "model/event.h"

namespace joule::app {

class PartitionProcessor::Sink final : public stream::RecordSink {
 public:
  Sink(store::LatestStore* latest, bool keep_for_history, MetricsRegistry* metrics)
      : latest_(latest), keep_for_history_(keep_for_history) {
    for (int r = 0; r < 3; ++r) {
      for (int f = 0; f < 2; ++f) {
        const char* res = r == 0 ? "base" : r == 1 ? "1h" : "1d";
        emitted_[r][f] = metrics->GetCounter("joule_windows_emitted_total",
                                             "Aggregate records emitted by the window engine",
                                             {{"resolution", res}, {"final", f ? "true" : "false"}});
      }
    }
    sink_errors_ = metrics->GetCounter("joule_sink_errors_total", "Failed sink writes",
                                       {{"sink", std::string(latest->backend())}});
  }
  void Emit(const model::AggregateRecord& record) override {
    emitted_[static_cast<int>(record.resolution)][record.final ? 1 : 0]->Inc();
    if (!latest_->PutRecord(record).ok()) sink_errors_->Inc();
    if (keep_for_history_) pending_history_.push_back(record);
  }
  std::vector<model::AggregateRecord>& pending_history() { return pending_history_; }

 private:
  store::LatestStore* latest_;
  bool keep_for_history_;
  std::vector<model::AggregateRecord> pending_history_;
  Counter* emitted_[3][2];
  Counter* sink_errors_;
};

PartitionProcessor::PartitionProcessor(PartitionProcessorOptions options, log::Log* log,
                                       store::LatestStore* latest, store::HistoryStore* history,
                                       const Clock* clock,
                                       MetricsRegistry* metrics,
                                       stream::TimezoneProvider* timezones)
    : options_(std::move(options)),
      log_(log),
      latest_(latest),
      clock_(clock),
      metrics_(metrics),
      history_(history),
      engine_(std::make_unique<stream::WindowEngine>(options_.engine, timezones)),
      sink_(std::make_unique<Sink>(latest, history != nullptr, metrics)),
      positions_(new std::atomic<uint64_t>[options_.partitions.size()]),
      last_append_ns_(new std::atomic<int64_t>[options_.partitions.size()]) {
  const std::string idx = std::to_string(options_.index);
  events_processed_ = metrics->GetCounter("joule_processor_events_total",
                                          "Events fed to the window engine", {{"processor", idx}});
  decode_errors_ = metrics->GetCounter("joule_processor_decode_errors_total",
                                       "Log records that did not decode as events",
                                       {{"processor", idx}});
  history_errors_ = metrics->GetCounter("joule_sink_errors_total", "Failed sink writes",
                                        {{"sink", "history"}});
  for (size_t i = 0; i < options_.partitions.size(); ++i) {
    positions_[i].store(0);
    last_append_ns_[i].store(0);
  }
}

PartitionProcessor::~PartitionProcessor() { Stop(); }

Status PartitionProcessor::Start() {
  for (size_t i = 0; i < options_.partitions.size(); ++i) {
    uint32_t p = options_.partitions[i];
    model::LogOffset from = log_->StartOffset(p);
    JOULE_ASSIGN_OR_RETURN(auto reader, log_->NewReader(p, from));
    positions_[i].store(from.value);
    readers_.push_back(std::move(reader));
  }
  thread_ = std::thread([this] { Run(); });
  return Status::Ok();
}

void PartitionProcessor::Stop() {
  if (!thread_.joinable()) return;
  stop_.store(true);
  thread_.join();
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
  int64_t now = clock_->NowNanos();
  double worst = 0;
  for (size_t i = 0; i < options_.partitions.size(); ++i) {
    uint64_t end = log_->DurableEnd(options_.partitions[i]).value;
    if (end <= positions_[i].load(std::memory_order_relaxed)) continue;
    int64_t last = last_append_ns_[i].load(std::memory_order_relaxed);
    if (last > 0) worst = std::max(worst, static_cast<double>(now - last) / 1e9);
  }
  return worst;
}

bool PartitionProcessor::ProcessBatch(size_t slot) {
  batch_.clear();
  Result<size_t> n = readers_[slot]->Next(options_.read_batch, &batch_);
  if (!n.ok()) {
    logging::Error("log read failed", {{"partition", std::to_string(options_.partitions[slot])},
                                       {"error", n.status().ToString()}});
    return false;
  }
  if (*n == 0) return false;
  int64_t now = clock_->NowNanos();
  model::Event event;
  std::lock_guard lock(engine_mu_);
  for (const auto& rec : batch_) {
    if (!model::DecodeEvent(rec.payload, &event).ok()) {
      decode_errors_->Inc();
      continue;
    }
    (void)latest_->PutReading(event);
    engine_->Process(event, now, sink_.get());
  }
  events_processed_->Inc(batch_.size());
  positions_[slot].store(readers_[slot]->position().value, std::memory_order_relaxed);
  last_append_ns_[slot].store(batch_.back().append_time_ns, std::memory_order_relaxed);
  return true;
}

void PartitionProcessor::FlushHistory() {
  auto& pending = sink_->pending_history();
  if (pending.empty()) return;
  Status st = history_->Put(pending);
  if (!st.ok()) {
    history_errors_->Inc(pending.size());
    logging::Error("history write failed", {{"error", st.ToString()}});
  }
  pending.clear();
}

bool PartitionProcessor::Health(std::string_view device_id,
                                stream::WindowEngine::DeviceHealth* out) const {
  std::lock_guard lock(engine_mu_);
  return engine_->Health(device_id, out);
}

stream::WindowEngine::Stats PartitionProcessor::Stats() const {
  std::lock_guard lock(engine_mu_);
  return engine_->stats();
}

void PartitionProcessor::Run() {
  int64_t last_tick = 0;
  while (true) {
    bool stopping = stop_.load();
    bool any = false;
    for (size_t i = 0; i < readers_.size(); ++i) any |= ProcessBatch(i);
    int64_t now = clock_->NowNanos();
    if (now - last_tick >= options_.tick_interval_ns) {
      std::lock_guard lock(engine_mu_);
      engine_->Tick(now, sink_.get());
      last_tick = now;
    }
    FlushHistory();
    if (!any) {
      caught_up_once_.store(true);
      if (stopping) break;
      // Wait for new data on the first partition with a short timeout; the others are
      // polled on wake-up. The timeout bounds the tick latency.
      if (!readers_.empty()) {
        log_->WaitForData(options_.partitions[0], readers_[0]->position(),
                          std::min<int64_t>(options_.tick_interval_ns, 50'000'000));
      }
    }
  }
}

}  // namespace joule::app

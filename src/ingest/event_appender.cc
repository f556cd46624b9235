#include "ingest/event_appender.h"

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "log/log.h"
#include "model/partition.h"

namespace joule::ingest {

EventAppender::EventAppender(log::Log* log, MetricsRegistry* metrics)
    : log_(log),
      refused_(metrics->GetCounter("joule_ingest_backpressure_total",
                                   "Appends refused because the log was over its pending limit")) {}

Status EventAppender::Append(const std::vector<model::Event>& events, Done done) {
  const uint32_t partitions = log_->partitions();
  // Each partition's records encoded back to back in one buffer (log::RecordBatch), handed
  // to the log as is: no string per event.
  std::vector<log::RecordBatch> by_partition(partitions);
  // Each partition's buffers get room for exactly its events (counted first) at the size
  // of the first event encoded plus some slack, when its first record arrives: they then
  // rarely grow while encoding, and unused partitions allocate nothing.
  thread_local std::vector<uint32_t> part_of;
  thread_local std::vector<uint32_t> per_partition;
  part_of.resize(events.size());
  per_partition.assign(partitions, 0);
  for (size_t i = 0; i < events.size(); ++i) {
    part_of[i] = model::PartitionOf(events[i].device_id, partitions);
    ++per_partition[part_of[i]];
  }
  size_t record_bytes = 0;
  for (size_t i = 0; i < events.size(); ++i) {
    const uint32_t p = part_of[i];
    log::RecordBatch& batch = by_partition[p];
    if (batch.empty() && record_bytes != 0) {
      batch.Reserve(per_partition[p], per_partition[p] * record_bytes);
    }
    model::EncodeEvent(events[i], batch.buffer());
    batch.EndRecord();
    if (record_bytes == 0) {
      record_bytes = batch.bytes() + batch.bytes() / 4 + 8;
      batch.Reserve(per_partition[p], per_partition[p] * record_bytes);
    }
  }
  struct State {
    std::atomic<int> remaining{0};
    std::atomic<bool> failed{false};
    Done done;
  };
  auto state = std::make_shared<State>();
  state->done = std::move(done);
  int batches = 0;
  for (const auto& b : by_partition) batches += b.empty() ? 0 : 1;
  // One extra count held by this function, so `done` cannot run before all appends
  // were attempted.
  state->remaining.store(batches + 1);
  auto finish_one = [state](bool ok) {
    if (!ok) state->failed.store(true);
    if (state->remaining.fetch_sub(1) == 1) {
      state->done(state->failed.load() ? Status::Unavailable("log append failed") : Status::Ok());
    }
  };
  bool first = true;
  for (uint32_t p = 0; p < partitions; ++p) {
    if (by_partition[p].empty()) continue;
    Status st = log_->AppendBatch(p, std::move(by_partition[p]),
                                  [finish_one](Status s, model::LogOffset) { finish_one(s.ok()); });
    if (!st.ok()) {
      refused_->Inc();
      if (first) return st;  // nothing stored; `done` is never called
      finish_one(false);
    }
    first = false;
  }
  finish_one(true);
  return Status::Ok();
}

}  // namespace joule::ingest

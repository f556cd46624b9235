#include "ingest/event_appender.h"

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
  // One group: admitted, written and refused together, so a refusal (backpressure, a full
  // disk) means that nothing of the request was stored.
  std::vector<log::Log::PartitionBatch> group;
  for (uint32_t p = 0; p < partitions; ++p) {
    if (!by_partition[p].empty()) group.push_back({p, std::move(by_partition[p])});
  }
  Status st = log_->AppendGroup(std::move(group), std::move(done));
  if (!st.ok()) refused_->Inc();
  return st;
}

}  // namespace joule::ingest

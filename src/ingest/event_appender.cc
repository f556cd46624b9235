#include "ingest/event_appender.h"

#include <cstdint>
#include <iterator>
#include <memory>
#include <vector>

#include "log/log.h"
#include "model/partition.h"

namespace joule::ingest {

namespace {

// joule_event_delay_seconds' upper bounds: a second, 10 s, a minute, 5 and 15 minutes, an
// hour (stream.allowed_lateness's default), 6 hours, a day, a week (limits.max_event_age's).
constexpr int64_t kDelayBoundsSeconds[] = {1, 10, 60, 300, 900, 3600, 21600, 86400, 604800};
constexpr size_t kDelayBuckets = std::size(kDelayBoundsSeconds) + 1;
constexpr int64_t kNanos = 1'000'000'000;

std::vector<double> DelayBounds() {
  return {std::begin(kDelayBoundsSeconds), std::end(kDelayBoundsSeconds)};
}

// The delays of a request's events, counted per bucket: one histogram update per request
// instead of three atomic additions per event.
struct DelayCounts {
  uint64_t bucket[kDelayBuckets] = {};
  uint64_t ahead = 0;
  double sum_s = 0;

  void Add(const std::vector<model::Event>& events) {
    int64_t sum_ns = 0;
    for (const model::Event& e : events) {
      int64_t d = e.received_at_ns - e.timestamp_ns;
      if (d < 0) {
        if (d < -kNanos) ++ahead;
        d = 0;
      }
      size_t i = 0;
      while (i < std::size(kDelayBoundsSeconds) && d > kDelayBoundsSeconds[i] * kNanos) ++i;
      ++bucket[i];
      // Saturates far beyond anything ingest accepts (limits.max_event_age).
      sum_ns = d > INT64_MAX - sum_ns ? INT64_MAX : sum_ns + d;
    }
    sum_s = static_cast<double>(sum_ns) / 1e9;
  }
};

}  // namespace

EventAppender::EventAppender(log::Log* log, MetricsRegistry* metrics)
    : log_(log),
      refused_(metrics->GetCounter("joule_ingest_backpressure_total",
                                   "Appends refused because the log was over its pending limit")),
      delay_(metrics->GetHistogram(
          "joule_event_delay_seconds",
          "Accepted events: arrival (received_at) minus event time, in seconds (0 when ahead)",
          DelayBounds())),
      ahead_(metrics->GetCounter(
          "joule_events_ahead_total",
          "Accepted events whose time was more than 1 s after their arrival (a clock ahead)")) {}

Status EventAppender::Append(const std::vector<model::Event>& events, Done done) {
  const uint32_t partitions = log_->partitions();
  if (events.empty()) return log_->AppendGroup({}, std::move(done));  // InvalidArgument
  DelayCounts delays;
  delays.Add(events);
  done = [delays, delay = delay_, ahead = ahead_, done = std::move(done)](Status st) {
    if (st.ok()) {
      delay->ObserveCounts(delays.bucket, delays.sum_s);
      if (delays.ahead > 0) ahead->Inc(delays.ahead);
    }
    done(std::move(st));
  };
  // Most bodies are one device's (every MQTT message, a device posting its own queue): one
  // partition, one buffer, no per-partition bookkeeping.
  const std::string& first_device = events.front().device_id;
  const uint32_t first_partition = model::PartitionOf(first_device, partitions);
  size_t same = 1;
  while (same < events.size() &&
         (events[same].device_id == first_device ||
          model::PartitionOf(events[same].device_id, partitions) == first_partition)) {
    ++same;
  }
  std::vector<log::Log::PartitionBatch> group;
  if (same == events.size()) {
    group.resize(1);
    group.front().partition = first_partition;
    EncodeInto(events, nullptr, first_partition, &group.front().records);
  } else {
    // Each partition's records encoded back to back in one buffer (log::RecordBatch),
    // handed to the log as is: no string per event.
    thread_local std::vector<uint32_t> part_of;
    part_of.resize(events.size());
    for (size_t i = 0; i < events.size(); ++i) {
      part_of[i] = i < same ? first_partition : model::PartitionOf(events[i].device_id, partitions);
    }
    for (uint32_t p = 0; p < partitions; ++p) {
      log::RecordBatch batch;
      EncodeInto(events, &part_of, p, &batch);
      if (!batch.empty()) group.push_back({p, std::move(batch)});
    }
  }
  // One group: admitted, written and refused together, so a refusal (backpressure, a full
  // disk) means that nothing of the request was stored.
  Status st = log_->AppendGroup(std::move(group), std::move(done));
  if (!st.ok()) refused_->Inc();
  return st;
}

void EventAppender::EncodeInto(const std::vector<model::Event>& events,
                               const std::vector<uint32_t>* part_of, uint32_t partition,
                               log::RecordBatch* batch) {
  // The buffers get room for exactly the partition's events (counted first) at the size of
  // the first one encoded plus some slack: they then rarely grow while encoding.
  size_t count = events.size();
  if (part_of != nullptr) {
    count = 0;
    for (uint32_t p : *part_of) count += p == partition ? 1 : 0;
  }
  bool first = true;
  for (size_t i = 0; i < events.size(); ++i) {
    if (part_of != nullptr && (*part_of)[i] != partition) continue;
    model::EncodeEvent(events[i], batch->buffer());
    batch->EndRecord();
    if (first && count > 1) {
      const size_t record_bytes = batch->bytes() + batch->bytes() / 4 + 8;
      batch->Reserve(count, count * record_bytes);
    }
    first = false;
  }
}

}  // namespace joule::ingest

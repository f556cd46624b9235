// EventAppender: hands validated events to the durable log — grouped by partition
// (hash of device_id), encoded, appended — and reports once when all of them are durable.
// Shared by HTTP and MQTT ingest. Thread-safe; never blocks on I/O.
#pragma once

#include <functional>
#include <vector>

#include "common/metrics.h"
#include "common/status.h"
#include "model/event.h"

namespace joule::log {
class Log;
class RecordBatch;
}  // namespace joule::log

namespace joule::ingest {

class EventAppender {
 public:
  // Called exactly once, from the log's writer thread (keep it cheap): ok when every
  // event is durable; Unavailable when the log refused them (a full disk, no file
  // descriptor for a new segment), and then none of them was stored.
  using Done = std::function<void(Status)>;

  EventAppender(log::Log* log, MetricsRegistry* metrics);

  // REQUIRES: events non-empty. The events of all partitions go to the log as one group
  // (Log::AppendGroup): all of them are stored, or none. When the log refuses them at once
  // (backpressure), returns Unavailable and `done` is not called.
  Status Append(const std::vector<model::Event>& events, Done done);

 private:
  // Encodes the events of `partition` (all of them when part_of is null; else those with
  // (*part_of)[i] == partition) into *batch.
  static void EncodeInto(const std::vector<model::Event>& events,
                         const std::vector<uint32_t>* part_of, uint32_t partition,
                         log::RecordBatch* batch);

  log::Log* log_;
  Counter* refused_;
  // How long after their event time the events arrived (received_at − timestamp), observed
  // when they are durable, as joule_events_accepted_total counts them: devices uploading
  // what they buffered through an outage, or clocks behind, show in its upper buckets.
  Histogram* delay_;
  Counter* ahead_;  // events whose time was more than a second after their arrival
};

}  // namespace joule::ingest

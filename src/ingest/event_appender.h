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
}

namespace joule::ingest {

class EventAppender {
 public:
  // Called exactly once, from the log's writer thread (keep it cheap): ok when every
  // event is durable; Unavailable when the log refused them (backpressure).
  using Done = std::function<void(Status)>;

  EventAppender(log::Log* log, MetricsRegistry* metrics);

  // REQUIRES: events non-empty. When the log refuses the first partition's batch,
  // returns Unavailable synchronously and `done` is not called (nothing was stored).
  // A refusal after some partitions were appended reports Unavailable through `done`;
  // the already-appended events are durable and de-duplicated on a client's retry.
  Status Append(const std::vector<model::Event>& events, Done done);

 private:
  log::Log* log_;
  Counter* refused_;
};

}  // namespace joule::ingest

// Event: one validated telemetry event, as it travels from ingest through the log to
// the processors and the archive. Plain data, no I/O.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace joule::model {

struct MetricSample {
  std::string name;  // [a-z][a-z0-9_]{0,63}
  double value = 0;  // finite
  bool operator==(const MetricSample&) const = default;
};

struct Event {
  std::string device_id;              // 1–128 chars of [A-Za-z0-9._:-]
  int64_t timestamp_ns = 0;           // event time, ns since the Unix epoch (UTC)
  int64_t received_at_ns = 0;         // when ingest accepted it
  std::vector<MetricSample> metrics;  // 1–64 entries, names unique, in input order
  std::string meta_json;              // canonical JSON object text, or empty when absent
  std::string event_id;               // empty when absent
  bool operator==(const Event&) const = default;
};

// Binary encoding used in log records (see docs/formats/log.md, "event payload").
void EncodeEvent(const Event& event, std::string* out);
Status DecodeEvent(std::string_view data, Event* event);

// Canonical JSON of an event, as written to the raw archive (timestamp lossless: 3, 6 or 9
// fraction digits; received_at in milliseconds):
// {"device_id":…,"timestamp":…,"event_id":…?,"metrics":{…},"meta":{…}?,"received_at":…}
std::string EventToJson(const Event& event);

}  // namespace joule::model

// libFuzzer target: any bytes, as a JSON and as an NDJSON body, with and without an MQTT
// topic device id. Besides crashes and sanitizer reports, it checks the parser's
// guarantees: every event is accounted for exactly once, indices increase, and every
// accepted event satisfies CONTRACT §1.
//   scripts/fuzz.sh build && scripts/fuzz.sh run telemetry_parser_fuzz 60
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string_view>

#include "ingest/telemetry_parser.h"

namespace {

using joule::ingest::BodyFormat;
using joule::ingest::IngestLimits;
using joule::ingest::ParsedBody;
using joule::ingest::TelemetryParser;

constexpr int64_t kNow = 1'795'888'800'000'000'000;  // 2026-11-28T18:00:00Z

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "guarantee violated: %s\n", what);
    std::abort();
  }
}

void CheckBody(const ParsedBody& p, const IngestLimits& limits) {
  Check(p.events.size() == p.event_indices.size(), "one index per event");
  Check(p.events.size() + p.errors.size() == p.total, "every event accounted for");
  Check(p.total <= limits.max_events_per_request, "event limit");
  std::set<size_t> seen;
  for (size_t i = 0; i < p.event_indices.size(); ++i) {
    Check(p.event_indices[i] < p.total, "index in range");
    Check(i == 0 || p.event_indices[i] > p.event_indices[i - 1], "indices increase");
    seen.insert(p.event_indices[i]);
  }
  for (size_t i = 0; i < p.errors.size(); ++i) {
    Check(p.errors[i].index < p.total, "error index in range");
    Check(i == 0 || p.errors[i].index > p.errors[i - 1].index, "error indices increase");
    Check(seen.insert(p.errors[i].index).second, "an event is accepted or rejected, not both");
    Check(!p.errors[i].code.empty() && !p.errors[i].message.empty(), "error has code+message");
  }
  for (const auto& e : p.events) {
    Check(joule::ingest::ValidDeviceId(e.device_id), "device_id valid");
    Check(e.timestamp_ns <= kNow + limits.max_future_skew_ns, "not too far in the future");
    Check(e.timestamp_ns >= kNow - limits.max_event_age_ns, "not too old");
    Check(e.received_at_ns == kNow, "received_at");
    Check(!e.metrics.empty() && e.metrics.size() <= 64, "1-64 metrics");
    std::set<std::string_view> names;
    for (const auto& m : e.metrics) {
      Check(joule::ingest::ValidMetricName(m.name), "metric name valid");
      Check(std::isfinite(m.value), "metric value finite");
      Check(names.insert(m.name).second, "metric names unique");
    }
    Check(e.meta_json.size() <= 4096, "meta size");
    Check(e.meta_json.empty() || (e.meta_json.front() == '{' && e.meta_json.back() == '}'),
          "meta is an object");
    Check(e.event_id.size() <= 4 * 128, "event_id size");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static IngestLimits limits = [] {
    IngestLimits l;
    l.max_events_per_request = 1000;
    return l;
  }();
  static TelemetryParser parser(limits);
  // The same parser without the common-shape scanner: both must give the same answer.
  static TelemetryParser& full_parser = *[] {
    auto* p = new TelemetryParser(limits);  // lives as long as the process
    p->SetCommonShapeScan(false);
    return p;
  }();
  static ParsedBody out, full_out;
  std::string_view body(reinterpret_cast<const char*>(data), size);
  for (BodyFormat format : {BodyFormat::kJson, BodyFormat::kNdjson}) {
    for (std::string_view topic : {std::string_view(), std::string_view("plug-42")}) {
      joule::Status st = parser.ParseInto(body, format, kNow, topic, &out);
      if (st.ok()) {
        CheckBody(out, limits);
        Check(out.total > 0, "an ok body has events");
      } else {
        Check(out.total == 0 && out.events.empty() && out.errors.empty(), "failure is empty");
      }
      joule::Status full_st = full_parser.ParseInto(body, format, kNow, topic, &full_out);
      Check(st.ToString() == full_st.ToString(), "scanner and full parser: same status");
      Check(out.total == full_out.total && out.event_indices == full_out.event_indices &&
                out.errors == full_out.errors && out.events.size() == full_out.events.size(),
            "scanner and full parser: same events and errors");
      for (size_t i = 0; i < out.events.size(); ++i) {
        const auto& a = out.events[i];
        const auto& b = full_out.events[i];
        bool same = a == b && a.metrics.size() == b.metrics.size();
        for (size_t k = 0; same && k < a.metrics.size(); ++k) {
          same = std::signbit(a.metrics[k].value) == std::signbit(b.metrics[k].value);
        }
        Check(same, "scanner and full parser: same event");
      }
    }
  }
  return 0;
}

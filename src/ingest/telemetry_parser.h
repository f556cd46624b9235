// TelemetryParser: bytes of an ingest request (HTTP body or MQTT payload) → validated
// model::Event values, or a per-event error for each event that breaks a rule of
// CONTRACT §1. Built on simdjson On-Demand; no exceptions, buffers reused across calls.
//
// Guarantees (see README.md for the full list and the error-code table):
// - Every accepted event satisfies every rule of CONTRACT §1 and has
//   received_at_ns = now_ns; accepted events keep their input order.
// - Every event of the body is either accepted or reported in `errors` with the index of
//   the event in the body, exactly once; indices are strictly increasing in both lists.
// - When an event breaks several rules, the reported code is the first of: invalid_json,
//   invalid_device_id, invalid_timestamp, timestamp_out_of_range, invalid_metrics,
//   invalid_meta, invalid_event_id — independent of the order of the fields.
//
// Thread-safety: a TelemetryParser is NOT thread-safe (it owns a simdjson parser and
// buffers); use one per thread. The free functions are thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "ingest/error_codes.h"
#include "ingest/validation.h"
#include "model/event.h"

namespace joule::ingest {

struct IngestLimits {
  uint64_t max_body_bytes = 4ull << 20;
  size_t max_events_per_request = 10000;
  int64_t max_future_skew_ns = 5 * 60 * 1'000'000'000LL;
  int64_t max_event_age_ns = 7 * 86400 * 1'000'000'000LL;
};

enum class BodyFormat { kJson, kNdjson };

// Content-Type → body format. Accepts (case-insensitive, parameters allowed):
//   application/json                               → kJson
//   application/x-ndjson, application/ndjson       → kNdjson
// A `charset` parameter, when present, must be utf-8 (JSON is UTF-8, RFC 8259); other
// parameters are ignored. Returns false for anything else, including an empty value
// (→ 415 Unsupported Media Type).
bool FormatFromContentType(std::string_view content_type, BodyFormat* out);

struct EventError {
  size_t index = 0;     // position of the event in the body (see Parse)
  std::string code;     // one of error_codes.h
  std::string message;  // human-readable, names the offending field
  bool operator==(const EventError&) const = default;
};

struct ParsedBody {
  std::vector<model::Event> events;   // accepted, in input order
  std::vector<size_t> event_indices;  // input index of each accepted event
  std::vector<EventError> errors;     // rejected, in input order
  size_t total = 0;                   // events in the body (= events.size() + errors.size())
};

class TelemetryParser {
 public:
  explicit TelemetryParser(IngestLimits limits = {});
  ~TelemetryParser();
  TelemetryParser(const TelemetryParser&) = delete;
  TelemetryParser& operator=(const TelemetryParser&) = delete;

  const IngestLimits& limits() const { return limits_; }

  // Parses and validates a whole body.
  //
  // Indices: a body that is one JSON object is one event at index 0; a JSON array holds
  // events at indices 0..n−1; in NDJSON each line that is not blank (only spaces, tabs,
  // CR) holds one event and its index is the ordinal of that line among the non-blank
  // lines. Lines end with LF; a CR before the LF is ignored.
  //
  // `now_ns` bounds the timestamps (not after now + max_future_skew, not before
  // now − max_event_age); every accepted event gets received_at_ns = now_ns.
  //
  // `topic_device_id` (MQTT): when non-empty, an event may omit device_id (it is filled
  // in) and a present device_id must equal it, else the event is rejected with
  // invalid_device_id ("does not match the topic").
  //
  // Body-level failures return a non-ok Status and no events:
  //   ResourceExhausted "payload_too_large: …" body.size() > max_body_bytes (checked first);
  //   ResourceExhausted "too_many_events: …" more than max_events_per_request events;
  //   InvalidArgument   "invalid_json: …"    JSON body that is not one syntactically valid
  //     object or array (syntax error anywhere, invalid UTF-8, trailing content, empty
  //     body, empty array, a scalar); NDJSON body without any non-blank line.
  // In NDJSON a line that is not valid JSON, or not one object, is rejected on its own
  // (invalid_json) and the other lines are unaffected; in a JSON array body a syntax
  // error fails the whole body (the parser cannot resynchronise inside an array), but an
  // element that is well-formed JSON yet not an object is rejected on its own.
  Result<ParsedBody> Parse(std::string_view body, BodyFormat format, int64_t now_ns,
                           std::string_view topic_device_id = {});

  // Same, into `*out` (cleared first; its vectors' capacity is reused). On a non-ok
  // Status `*out` is left empty.
  Status ParseInto(std::string_view body, BodyFormat format, int64_t now_ns,
                   std::string_view topic_device_id, ParsedBody* out);

  // Events in the common shape go through a byte scanner first (common_shape_scanner.h),
  // which gives the same results at a fraction of the cost. Off: every event takes the
  // full simdjson walk (for the tests that hold the two paths together, and benchmarks).
  void SetCommonShapeScan(bool enabled);

 private:
  class Impl;
  IngestLimits limits_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace joule::ingest

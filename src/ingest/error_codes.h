// The per-event rejection codes of telemetry ingest (CONTRACT §1). They appear on the wire
// in the `errors[].code` field of a 202/400 ingest response, so they never change.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace joule::ingest {

inline constexpr std::string_view kInvalidJson = "invalid_json";
inline constexpr std::string_view kInvalidDeviceId = "invalid_device_id";
inline constexpr std::string_view kInvalidTimestamp = "invalid_timestamp";
inline constexpr std::string_view kTimestampOutOfRange = "timestamp_out_of_range";
inline constexpr std::string_view kInvalidMetrics = "invalid_metrics";
inline constexpr std::string_view kInvalidMeta = "invalid_meta";
inline constexpr std::string_view kInvalidEventId = "invalid_event_id";

// Prefixes of the messages of body-level failures (the Status returned by Parse), so the
// HTTP layer can map them to a response code without parsing prose. Each prefix is the
// wire code itself, so a message passed on whole (an MQTT 5 reason string) names the code
// that HTTP answers and joule_events_rejected_total counts (until session 20 an over-size
// body said "body_too_large", a code documented nowhere; found by a black-box test):
//   InvalidArgument   "invalid_json: …"       → 400
//   ResourceExhausted "too_many_events: …"    → 413
//   ResourceExhausted "payload_too_large: …"  → 413
inline constexpr std::string_view kTooManyEvents = "too_many_events";
inline constexpr std::string_view kPayloadTooLarge = "payload_too_large";

// The wire code of a body-level Parse failure, the same over HTTP and MQTT:
// "too_many_events", "payload_too_large" (any other size limit) or "invalid_json".
inline std::string BodyErrorCode(const Status& status) {
  if (status.code() != StatusCode::kResourceExhausted) return std::string(kInvalidJson);
  const std::string& msg = status.message();
  if (msg.compare(0, kTooManyEvents.size(), kTooManyEvents) == 0) {
    return std::string(kTooManyEvents);
  }
  return std::string(kPayloadTooLarge);
}

}  // namespace joule::ingest

// Validation of the identifiers that appear in telemetry (CONTRACT §1). Shared by ingest,
// the HTTP API (path parameters, device registration) and the MQTT topic parser.
// Pure functions, thread-safe, no allocation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/dot_segment.h"

namespace joule::ingest {

inline constexpr size_t kMaxDeviceIdLength = 128;
inline constexpr size_t kMaxMetricNameLength = 64;
inline constexpr size_t kMaxMetricsPerEvent = 64;
// A metric value's magnitude is at most this (CONTRACT §1), so that no aggregate of finite
// values overflows to infinity (null on the wire): a sum over 10^12 samples, an energy
// integral over a day (value × 8.64e13 ns), a counter delta, a square, all stay finite.
// 1e100 leaves every physical quantity, in any unit, far inside.
inline constexpr double kMaxMetricMagnitude = 1e100;
inline constexpr size_t kMaxMetaEntries = 32;
inline constexpr size_t kMaxMetaEncodedBytes = 4096;
inline constexpr size_t kMaxEventIdLength = 128;  // in Unicode code points
// Integer timestamps are epoch milliseconds within ±this (their nanoseconds fit an int64).
inline constexpr int64_t kMaxEpochMillis = INT64_MAX / 1'000'000;

// 1–128 characters of [A-Za-z0-9._:-], and not "." or ".." (IsDotSegment).
bool ValidDeviceId(std::string_view device_id);

// [a-z][a-z0-9_]{0,63}.
bool ValidMetricName(std::string_view name);

// Number of Unicode code points in `s`, which must be valid UTF-8 (every JSON string
// simdjson returns is).
size_t Utf8Length(std::string_view s);

}  // namespace joule::ingest

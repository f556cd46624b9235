// Times as the metadata backends store them — microseconds since the Unix epoch (SQLite
// INTEGER; PostgreSQL timestamptz through joule_us) — and as Joule uses them, int64
// nanoseconds. The stored form spans far more than nanoseconds can (1677-09-21 to
// 2262-04-11), and plain SQL may write any of it into `devices` (docs/formats/metadata.md):
// a conversion must never overflow into another date. Thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace joule::store {

// The stored microseconds that convert to nanoseconds exactly.
inline constexpr int64_t kMaxStoredMicros = INT64_MAX / 1000;  // 2262-04-11T23:47:16.854775Z
inline constexpr int64_t kMinStoredMicros = INT64_MIN / 1000;  // 1677-09-21T00:12:43.145225Z

// For the times Joule itself keeps (created_at, updated_at, opened_at, snoozed_until…):
// nanoseconds, a value outside the range clamped to its nearest end (kMin/kMaxStoredMicros).
int64_t NanosFromStoredMicros(int64_t micros);
std::optional<int64_t> NanosFromStoredMicros(std::optional<int64_t> micros);

// A device's installed_at as stored: nanoseconds, or absent when unset — and when outside
// the range, which no API value can be (a date set with plain SQL, e.g. 0001-01-01 or
// 'infinity'): absent rather than a wrong date, with a warning the first time per device
// (`device installed_at out of range`). An update that does not set installed_at leaves the
// stored value as it is (the backends' UpdateDevice).
std::optional<int64_t> InstalledAtFromStoredMicros(std::string_view device_id,
                                                   std::optional<int64_t> micros);

// Nanoseconds to the stored form (truncated to microseconds).
std::optional<int64_t> StoredMicrosFromNanos(std::optional<int64_t> nanos);

}  // namespace joule::store

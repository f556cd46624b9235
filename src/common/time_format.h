// RFC 3339 time formatting and parsing, and duration/size strings from config.
// Times are int64 nanoseconds since the Unix epoch (UTC).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace joule {

// "2026-11-28T19:00:05.250Z" (UTC, millisecond precision, truncated toward -inf).
std::string FormatRfc3339Millis(int64_t nanos);
void AppendRfc3339Millis(std::string* out, int64_t nanos);
// The same 24 bytes written at `out`; returns out + 24. (Every int64 nanosecond time lies
// in the years 1677–2262, so the form has a fixed width.)
char* WriteRfc3339Millis(char* out, int64_t nanos);
// Lossless: 3, 6 or 9 fraction digits, the fewest that represent `nanos` exactly
// ("…05.250Z", "…05.250001Z", "…05.250000001Z"). Used where a time is an identity (the
// raw archive), so that parsing the text gives back the same nanoseconds.
std::string FormatRfc3339Exact(int64_t nanos);

// Parses RFC 3339 with 'Z'/'z' or ±hh:mm offset and 0–9 fraction digits; 'T' or 't'
// (or one space) between date and time. Returns false on anything else.
bool ParseRfc3339(std::string_view s, int64_t* nanos);
// The same syntax for any year 0000–9999 (int64 nanoseconds cover only 1677–2262): seconds
// since the epoch and the fraction in nanoseconds. For telling a well-formed time out of
// range from a malformed one.
bool ParseRfc3339Seconds(std::string_view s, int64_t* seconds, int64_t* fraction_ns);

// "10s", "5m", "1h", "7d", "250ms", "100us" (units ns, us, ms, s, m, h, d; spaces before
// the unit are taken: "10 s"); a bare number is seconds. Past 9e18 ns: "too large".
Result<int64_t> ParseDurationNanos(std::string_view s);
// "4MiB", "64KiB", "1GiB", "1000", "10KB" (units B, KiB, MiB, GiB, TiB, KB/kB, MB, GB, TB;
// spaces before the unit are taken: "4 MiB"); a bare integer is bytes. Past 2^64 - 1: "too
// large".
Result<uint64_t> ParseSizeBytes(std::string_view s);

// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm).
int64_t DaysFromCivil(int64_t y, unsigned m, unsigned d);
void CivilFromDays(int64_t days, int64_t* y, unsigned* m, unsigned* d);

}  // namespace joule

// Parsing of query parameters shared by the read routes: times, resolutions, limits.
// Every failure is an InvalidArgument whose message names the parameter.
#pragma once

#include <compare>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "model/aggregate_record.h"

namespace joule::api {

// A time parameter as written, before the clamping below: what orders two bounds that clamp
// to the same time (`from=2200-…&to=2180-…` is "from must not be after to", not an empty
// range; found by a black-box test).
struct WrittenTime {
  int64_t seconds = 0;  // since the epoch (years 0000–9999; epoch ms beyond int64 saturate)
  int64_t fraction_ns = 0;
  auto operator<=>(const WrittenTime&) const = default;
};

// RFC 3339 (any offset) or integer epoch milliseconds, clamped to [1900-01-01, 2170-01-01).
// `written`, if not null, receives the time before the clamping.
Result<int64_t> ParseTimeParam(const std::string& name, const std::string& value,
                               WrittenTime* written = nullptr);
// Epoch milliseconds (a JSON body's integer time) as nanoseconds, clamped like
// ParseTimeParam.
int64_t EpochMillisToNanos(int64_t ms);
// The read routes' range bounds. A range [from, to) over times that are whole milliseconds
// (window starts; opened_at, updated_at and audit times as the answers show them) selects
// exactly what [CeilToMillis(from), CeilToMillis(to)) selects — t >= from ⟺ t >= ceil(from)
// for a whole t — so routes round their bounds up, filter on those, and echo those (found by
// a black-box test: history echoed `from` cut to the millisecond but filtered on all of it).
int64_t CeilToMillis(int64_t ns);
int64_t FloorToMillis(int64_t ns);
// Where data can end: no record starts after now + limits.max_future_skew, since ingest
// refuses later timestamps (CONTRACT §1) and a window starts at or before its events. A
// range's `to` beyond it (`to=9999-12-31T23:59:59Z`, "everything") selects what a `to` there
// selects, so the routes count the windows of a range against their limit up to
// min(to, DataEnd(…)) — an open-ended range is not refused for the centuries after today
// (found by a black-box test: owner energy from 2026 to 9999 was "more than 10000 buckets
// of 1d") — while they filter by, and echo, the `to` asked.
int64_t DataEnd(int64_t now_ns, int64_t max_future_skew_ns);
// "1m" (or the base window's name, e.g. "30s"), "1h", "1d". "auto" is handled by callers.
Result<model::Resolution> ParseResolution(const std::string& value, int64_t base_window_ns);
Result<size_t> ParseLimit(const std::string* value, size_t default_limit, size_t max_limit);
// A cursor number as next_cursor writes it: plain decimal digits (no sign, space or other
// character) of at most `max`; else 400 "cursor must be a next_cursor from a previous page".
// Until session 36 the audit log took `-1` (as 2^64 − 1: an empty page) and `+5`, and the
// alerts list `-1:…` (found by a black-box test).
Result<uint64_t> ParseCursorNumber(std::string_view value, uint64_t max);
Status BadCursor();
// "power_w,voltage_v" → names; each must be a valid metric name.
Result<std::vector<std::string>> ParseMetricList(const std::string& value);

}  // namespace joule::api

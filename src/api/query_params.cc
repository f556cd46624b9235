#include "api/query_params.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>

#include "common/clock.h"
#include "common/time_format.h"
#include "ingest/validation.h"

namespace joule::api {

namespace {

int64_t FloorDivSeconds(int64_t ns) {
  return ns / kNanosPerSecond - (ns % kNanosPerSecond < 0 ? 1 : 0);
}

// Times are clamped to [1900-01-01, 2170-01-01): "up to 9999-12-31" asks for everything
// (found by a black-box test: it was refused as "not an RFC 3339 time", since int64
// nanoseconds end in 2262), and any span between two times, plus a window, fits int64.
int64_t ClampedNanos(int64_t seconds, int64_t fraction_ns) {
  constexpr int64_t kMinSeconds = -2'208'988'800;  // 1900-01-01T00:00:00Z
  constexpr int64_t kMaxSeconds = 6'311'433'600;   // 2170-01-01T00:00:00Z
  if (seconds < kMinSeconds) return kMinSeconds * kNanosPerSecond;
  if (seconds >= kMaxSeconds) return kMaxSeconds * kNanosPerSecond;
  return seconds * kNanosPerSecond + fraction_ns;
}

}  // namespace

int64_t EpochMillisToNanos(int64_t ms) {
  return ClampedNanos(ms / 1000 - (ms % 1000 < 0 ? 1 : 0),
                      ((ms % 1000) + 1000) % 1000 * kNanosPerMilli);
}

int64_t FloorToMillis(int64_t ns) {
  return (ns / kNanosPerMilli - (ns % kNanosPerMilli < 0 ? 1 : 0)) * kNanosPerMilli;
}

int64_t CeilToMillis(int64_t ns) {
  const int64_t floor = FloorToMillis(ns);
  return floor == ns ? ns : floor + kNanosPerMilli;
}

int64_t DataEnd(int64_t now_ns, int64_t max_future_skew_ns) {
  return now_ns + std::max<int64_t>(max_future_skew_ns, 0);
}

Result<int64_t> ParseTimeParam(const std::string& name, const std::string& value,
                               WrittenTime* written) {
  WrittenTime unused;
  WrittenTime& w = written ? *written : unused;
  int64_t ns;
  if (ParseRfc3339(value, &ns)) {
    w = {FloorDivSeconds(ns), ns - FloorDivSeconds(ns) * kNanosPerSecond};
    return ClampedNanos(w.seconds, w.fraction_ns);
  }
  int64_t seconds = 0, fraction_ns = 0;
  if (ParseRfc3339Seconds(value, &seconds, &fraction_ns)) {
    w = {seconds, fraction_ns};
    return ClampedNanos(seconds, fraction_ns);
  }
  int64_t ms = 0;
  auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), ms);
  if (p == value.data() + value.size() && !value.empty() &&
      (ec == std::errc() || ec == std::errc::result_out_of_range)) {
    if (ec != std::errc()) ms = value[0] == '-' ? INT64_MIN : INT64_MAX;
    w = {ms / 1000 - (ms % 1000 < 0 ? 1 : 0), ((ms % 1000) + 1000) % 1000 * kNanosPerMilli};
    return EpochMillisToNanos(ms);
  }
  return Status::InvalidArgument(
      fmt::format("{} must be an RFC 3339 time or epoch milliseconds, got '{}'", name, value));
}

Result<model::Resolution> ParseResolution(const std::string& value, int64_t base_window_ns) {
  model::AggregateRecord probe;
  probe.window_end_ns = base_window_ns;
  // "1m" names the base windows whatever their length (CONTRACT §3): rules default to it.
  if (value == "1m" || value == model::ResolutionName(probe)) return model::Resolution::kBase;
  if (value == "1h") return model::Resolution::kHour;
  if (value == "1d") return model::Resolution::kDay;
  // The message lists what is taken: with stream.window = 10s it said "10s, 1h, 1d or auto"
  // and took 1m too (found by the operator's black-box test, session 31).
  const std::string base = model::ResolutionName(probe);
  return Status::InvalidArgument(
      fmt::format("resolution must be {}, 1h, 1d or auto, got '{}'",
                  base == "1m" ? base : base + " (the base windows; 1m also names them)", value));
}

Result<size_t> ParseLimit(const std::string* value, size_t default_limit, size_t max_limit) {
  if (!value) return default_limit;
  size_t v = 0;
  auto [p, ec] = std::from_chars(value->data(), value->data() + value->size(), v);
  if (ec != std::errc() || p != value->data() + value->size() || v < 1 || v > max_limit) {
    return Status::InvalidArgument(
        fmt::format("limit must be an integer in [1, {}], got '{}'", max_limit, *value));
  }
  return v;
}

Status BadCursor() {
  return Status::InvalidArgument("cursor must be a next_cursor from a previous page");
}

Result<uint64_t> ParseCursorNumber(std::string_view value, uint64_t max) {
  uint64_t v = 0;
  // from_chars of an unsigned type takes no sign, no space, no base prefix.
  auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
  if (value.empty() || ec != std::errc() || p != value.data() + value.size() || v > max) {
    return BadCursor();
  }
  return v;
}

Result<std::vector<std::string>> ParseMetricList(const std::string& value) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= value.size()) {
    size_t comma = value.find(',', start);
    if (comma == std::string::npos) comma = value.size();
    std::string name = value.substr(start, comma - start);
    if (!ingest::ValidMetricName(name)) {
      return Status::InvalidArgument(fmt::format("metrics: '{}' is not a metric name", name));
    }
    out.push_back(std::move(name));
    start = comma + 1;
  }
  return out;
}

}  // namespace joule::api

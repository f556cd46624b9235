// libFuzzer target: query-string decoding and the query parameter parsers of the read
// routes (net::ParseQuery / PercentDecode, api::ParseTimeParam, ParseResolution,
// ParseLimit, ParseMetricList), plus the RFC 3339, duration and size parsers they and the
// config share. Build and run: scripts/fuzz.sh.
// Invariants: no crash or sanitizer report; every failure is InvalidArgument with a
// message; accepted values are in range (limit in [1, max], metric names valid); an
// accepted RFC 3339 time formats (exactly) to a string that parses back to the same time.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "api/query_params.h"
#include "common/time_format.h"
#include "ingest/validation.h"
#include "net/url.h"

namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "guarantee violated: %s\n", what);
    std::abort();
  }
}

template <typename T>
void CheckFailure(const joule::Result<T>& r) {
  if (r.ok()) return;
  Check(r.status().code() == joule::StatusCode::kInvalidArgument, "failure is InvalidArgument");
  Check(!r.status().message().empty(), "failure has a message");
}

void ParseValue(const std::string& v) {
  auto t = joule::api::ParseTimeParam("from", v);
  CheckFailure(t);
  int64_t ns = 0;
  if (joule::ParseRfc3339(v, &ns)) {
    std::string formatted = joule::FormatRfc3339Exact(ns);
    int64_t again = 0;
    Check(joule::ParseRfc3339(formatted, &again), "formatted time parses");
    Check(again == ns, "time round trip");
  }
  auto res = joule::api::ParseResolution(v, 60'000'000'000);
  CheckFailure(res);
  auto limit = joule::api::ParseLimit(&v, 100, 1000);
  CheckFailure(limit);
  if (limit.ok()) Check(*limit >= 1 && *limit <= 1000, "limit in range");
  auto metrics = joule::api::ParseMetricList(v);
  CheckFailure(metrics);
  if (metrics.ok()) {
    Check(!metrics->empty(), "metric list not empty");
    for (const std::string& m : *metrics) {
      Check(joule::ingest::ValidMetricName(m), "metric name valid");
    }
  }
  (void)joule::ParseDurationNanos(v);
  (void)joule::ParseSizeBytes(v);
  (void)joule::net::ParseHostPort(v);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::string decoded;
  for (bool plus : {false, true}) {
    if (joule::net::PercentDecode(in, plus, &decoded)) {
      Check(decoded.size() <= in.size(), "decoding never grows");
    }
  }
  joule::net::HttpHeaders query;
  if (!joule::net::ParseQuery(in, &query)) return 0;
  for (const auto& [name, value] : query) {
    Check(name.size() + value.size() <= in.size(), "decoded pair within the input");
    ParseValue(value);
  }
  ParseValue(std::string(in));
  return 0;
}

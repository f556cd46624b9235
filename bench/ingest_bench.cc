// Ingest parsing throughput: realistic telemetry bodies → validated events.
// Reports events/s (items_per_second) and bytes/s. Run a Release build:
//   build/release/bench/ingest_bench --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <cstdio>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/time_format.h"
#include "ingest/telemetry_parser.h"

namespace joule::ingest {
namespace {

const int64_t kNow = [] {
  int64_t ns = 0;
  ParseRfc3339("2026-11-28T19:00:00Z", &ns);
  return ns;
}();

// One event as a device sends it: 4 metrics, a small meta, optionally an event id.
std::string Event(int i, bool with_event_id) {
  char buf[512];
  const int64_t ts = kNow - 60 * kNanosPerSecond + static_cast<int64_t>(i) * 5 * kNanosPerMilli;
  std::string t = FormatRfc3339Millis(ts);
  int n = std::snprintf(buf, sizeof(buf),
                        R"({"device_id":"plug-%04d","timestamp":"%s",)"
                        R"("metrics":{"power_w":%d.%d,"voltage_v":230.%d,"current_a":0.%03d,)"
                        R"("energy_wh":%d.5},"meta":{"firmware":"1.0.3","location":"kitchen"})",
                        i % 500, t.c_str(), 10 + i % 90, i % 10, i % 10, i % 1000, 10000 + i);
  std::string s(buf, static_cast<size_t>(n));
  if (with_event_id) s += ",\"event_id\":\"e-" + std::to_string(i) + "\"";
  s += '}';
  return s;
}

std::string ArrayBody(int n, bool with_event_id) {
  std::string body = "[";
  for (int i = 0; i < n; ++i) {
    if (i) body += ",\n";
    body += Event(i, with_event_id);
  }
  return body + "]";
}

std::string NdjsonBody(int n, bool with_event_id) {
  std::string body;
  for (int i = 0; i < n; ++i) {
    body += Event(i, with_event_id);
    body += '\n';
  }
  return body;
}

// `scan`: the common-shape scanner on (the default) or off (every event through the full
// simdjson walk).
void Run(benchmark::State& state, const std::string& body, BodyFormat format, bool scan = true) {
  TelemetryParser parser;
  parser.SetCommonShapeScan(scan);
  ParsedBody out;
  size_t events = 0;
  for (auto _ : state) {
    Status st = parser.ParseInto(body, format, kNow, {}, &out);
    if (!st.ok() || !out.errors.empty()) {
      state.SkipWithError("parse failed");
      return;
    }
    events += out.events.size();
    benchmark::DoNotOptimize(out.events.data());
  }
  state.SetItemsProcessed(static_cast<int64_t>(events));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * body.size()));
  state.counters["body_bytes"] = static_cast<double>(body.size());
}

void BM_ParseJsonArray(benchmark::State& state) {
  Run(state, ArrayBody(static_cast<int>(state.range(0)), state.range(1) != 0), BodyFormat::kJson);
}
BENCHMARK(BM_ParseJsonArray)->Args({1000, 0})->Args({1000, 1})->Args({10000, 0});

void BM_ParseNdjson(benchmark::State& state) {
  Run(state, NdjsonBody(static_cast<int>(state.range(0)), state.range(1) != 0),
      BodyFormat::kNdjson);
}
BENCHMARK(BM_ParseNdjson)->Args({1000, 0})->Args({1000, 1});

// The comparison harness's data shape (bench/harness/gen_data.py, what core_throughput and
// simdjson_limit parse): 1,000 lines of distinct devices, epoch-millisecond timestamps,
// 4 metrics, no meta, ~140 bytes per line. As NDJSON (core_throughput) and as a JSON array
// (what the harness sends the server). Argument: the common-shape scanner on (1) or off (0).
std::vector<std::string> HarnessLines() {
  std::vector<std::string> lines;
  const int64_t ms = kNow / kNanosPerMilli - 30'000;
  for (int i = 0; i < 1000; ++i) {
    char buf[256];
    int n =
        std::snprintf(buf, sizeof(buf),
                      R"({"device_id":"dev-%05d","timestamp":%lld,"metrics":{"power_w":%d.%02d,)"
                      R"("voltage_v":22%d.%d,"current_a":%d.%03d,"energy_wh":%d.%03d}})",
                      i, static_cast<long long>(ms), 50 + i % 400, i % 100, i % 10, i % 7, i % 3,
                      i % 1000, 1000 + i * 37, i % 1000);
    lines.emplace_back(buf, static_cast<size_t>(n));
  }
  return lines;
}

void BM_ParseNdjsonHarnessShape(benchmark::State& state) {
  std::string body;
  for (const auto& line : HarnessLines()) body += line + "\n";
  Run(state, body, BodyFormat::kNdjson, state.range(0) != 0);
}
BENCHMARK(BM_ParseNdjsonHarnessShape)->Arg(1)->Arg(0);

void BM_ParseJsonArrayHarnessShape(benchmark::State& state) {
  std::string body = "[";
  for (const auto& line : HarnessLines()) body += (body.size() > 1 ? "," : "") + line;
  Run(state, body + "]", BodyFormat::kJson, state.range(0) != 0);
}
BENCHMARK(BM_ParseJsonArrayHarnessShape)->Arg(1)->Arg(0);

// One event per request (an MQTT publish).
void BM_ParseSingleEvent(benchmark::State& state) { Run(state, Event(7, true), BodyFormat::kJson); }
BENCHMARK(BM_ParseSingleEvent);

// The cost of the error path: every event rejected (bad timestamp).
void BM_ParseJsonArrayAllRejected(benchmark::State& state) {
  std::string body = ArrayBody(1000, false);
  for (size_t pos = 0; (pos = body.find("\"2026-", pos)) != std::string::npos; pos += 6) {
    body[pos + 1] = 'X';
  }
  TelemetryParser parser;
  ParsedBody out;
  size_t events = 0;
  for (auto _ : state) {
    Status st = parser.ParseInto(body, BodyFormat::kJson, kNow, {}, &out);
    if (!st.ok() || out.errors.size() != 1000) {
      state.SkipWithError("unexpected result");
      return;
    }
    events += out.errors.size();
  }
  state.SetItemsProcessed(static_cast<int64_t>(events));
}
BENCHMARK(BM_ParseJsonArrayAllRejected);

}  // namespace
}  // namespace joule::ingest

BENCHMARK_MAIN();

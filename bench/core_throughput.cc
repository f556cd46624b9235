// Joule's ingest-to-aggregate core over an in-memory NDJSON file, no I/O: the HTTP
// handler's parse + validation (TelemetryParser, batches of --batch lines), the log
// record encoding and the processor's decoding (EncodeEvent / DecodeEvent), and the
// window engine (Process per event, Tick once per batch). Prints one JSON object with the
// process CPU seconds of the timed part and events per CPU-second.
//   core_throughput FILE.ndjson [--batch 1000]
// Used by bench/run.sh (vs_simdjson_limit); simdjson_limit.cc is the other side.
#include <time.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/clock.h"
#include "ingest/telemetry_parser.h"
#include "model/aggregate_record.h"
#include "model/event.h"
#include "stream/window_engine.h"

namespace {

double CpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

double WallSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

struct CountingSink : joule::stream::RecordSink {
  void Emit(const joule::model::AggregateRecord& r) override {
    ++records;
    metrics += r.metrics.size();
  }
  uint64_t records = 0, metrics = 0;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s FILE.ndjson [--batch N]\n", argv[0]);
    return 2;
  }
  size_t batch = 1000;
  for (int i = 2; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--batch") == 0) batch = std::strtoul(argv[i + 1], nullptr, 10);
  }
  std::ifstream in(argv[1], std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string data = ss.str();
  // Batches of `batch` lines, as the HTTP loader sends them (split before timing).
  std::vector<std::string_view> bodies;
  size_t pos = 0;
  while (pos < data.size()) {
    size_t end = pos;
    for (size_t n = 0; n < batch && end < data.size(); ++n) {
      size_t nl = data.find('\n', end);
      end = nl == std::string::npos ? data.size() : nl + 1;
    }
    bodies.emplace_back(data.data() + pos, end - pos);
    pos = end;
  }
  joule::ingest::IngestLimits limits;
  limits.max_event_age_ns = 3650LL * 24 * 3600 * joule::kNanosPerSecond;
  limits.max_future_skew_ns = 3650LL * 24 * 3600 * joule::kNanosPerSecond;
  joule::ingest::TelemetryParser parser(limits);
  joule::stream::WindowEngine engine(joule::stream::EngineOptions{});
  CountingSink sink;
  joule::ingest::ParsedBody parsed;
  joule::model::Event decoded;
  std::string encoded;
  uint64_t events = 0, rejected = 0;
  int64_t max_ts = 0;
  joule::SystemClock clock;
  const double c0 = CpuSeconds(), w0 = WallSeconds();
  for (std::string_view body : bodies) {
    joule::Status st =
        parser.ParseInto(body, joule::ingest::BodyFormat::kNdjson, clock.NowNanos(), {}, &parsed);
    if (!st.ok()) {
      std::fprintf(stderr, "parse failed: %s\n", st.ToString().c_str());
      return 1;
    }
    rejected += parsed.errors.size();
    for (const auto& e : parsed.events) {
      encoded.clear();
      joule::model::EncodeEvent(e, &encoded);
      if (!joule::model::DecodeEvent(encoded, &decoded).ok()) return 1;
      if (decoded.timestamp_ns > max_ts) max_ts = decoded.timestamp_ns;
      engine.Process(decoded, decoded.received_at_ns, &sink);
      ++events;
    }
    engine.Tick(max_ts, &sink);
  }
  const double cpu = CpuSeconds() - c0, wall = WallSeconds() - w0;
  std::printf(
      "{\"events\": %llu, \"rejected\": %llu, \"bytes\": %zu, \"cpu_s\": %.6f, \"wall_s\": %.6f, "
      "\"events_per_cpu_s\": %.1f, \"records\": %llu}\n",
      static_cast<unsigned long long>(events), static_cast<unsigned long long>(rejected),
      data.size(), cpu, wall, static_cast<double>(events) / cpu,
      static_cast<unsigned long long>(sink.records));
  return rejected == 0 ? 0 : 1;
}

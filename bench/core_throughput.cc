// Joule's ingest-to-aggregate core over an in-memory NDJSON file, no I/O, one thread: the
// same steps, in the same order, as an event's way through `joule serve`:
//   1. the HTTP handler's parse + validation (TelemetryParser::ParseInto, bodies of
//      --batch lines, the server's default IngestLimits);
//   2. the log record encoding (EncodeEvent + EncodeRecord: CRC-framed records appended to
//      one buffer, as the log writes a partition's batch);
//   3. the processor's record decoding (DecodeRecord with its CRC check + DecodeEvent into
//      reused events, as PartitionProcessor::ProcessBatch does);
//   4. the window engine: WindowEngine::ProcessBatch per body, Tick every 200 ms of
//      processing time (the processor's tick_interval), and at the end one Tick past the
//      idle timeout, which finalizes every open window, so every event ends up in an
//      emitted 1m/1h/1d record.
// The process is set up as `joule serve` sets up a processor thread: the server's glibc
// malloc settings (app::TuneAllocatorForServer) and the thread's arena reserved with
// transparent huge pages (app::ReserveThreadArena, src/app/README.md "Allocator").
// Processing time is a replay clock: each body is processed at the latest event time it
// holds (as if the devices' samples arrived live with no delay), so the engine's
// time-driven work (early firings every 5 s, finalization) happens as often per event as
// in a live server; found by an untimed pass before the timed one. Every event is
// accepted in the untimed pass or the program fails (the data must be valid and inside
// the default max_event_age / max_future_skew of its own replay clock).
//
// Prints one JSON object: process CPU seconds of the timed part (utime + stime, all
// threads), events per CPU-second, records emitted, and the CPU seconds of each step
// (measured with the thread CPU clock around each step of each body).
//   core_throughput FILE.ndjson [--batch 1000]
// Used by bench/run.sh (vs_simdjson_limit); simdjson_limit.cc is the other side.
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "app/allocator_tuning.h"
#include "common/clock.h"
#include "ingest/telemetry_parser.h"
#include "log/segment_format.h"
#include "model/aggregate_record.h"
#include "model/event.h"
#include "stream/window_engine.h"

namespace {

double Seconds(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

struct CountingSink : joule::stream::RecordSink {
  void Emit(const joule::model::AggregateRecord& r) override {
    ++records;
    metrics += r.metrics.size();
  }
  uint64_t records = 0, metrics = 0;
};

constexpr int64_t kTickIntervalNs = 200'000'000;  // PartitionProcessorOptions::tick_interval_ns

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
  // As `joule serve` (main.cc) and its partition processors (PartitionProcessor::Run) do.
  joule::app::TuneAllocatorForServer();
  joule::app::ReserveThreadArena(size_t{60} << 20);
  std::ifstream in(argv[1], std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "cannot read %s\n", argv[1]);
    return 1;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string data = ss.str();
  // Bodies of `batch` lines, as the HTTP loader sends them (split before timing).
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

  const joule::ingest::IngestLimits limits;  // the server's defaults
  joule::ingest::TelemetryParser parser(limits);
  joule::ingest::ParsedBody parsed;

  // Untimed pass: the replay clock (the latest event time of each body).
  std::vector<int64_t> body_now(bodies.size());
  {
    joule::ingest::IngestLimits open = limits;
    open.max_event_age_ns = open.max_future_skew_ns = INT64_MAX / 4;
    joule::ingest::TelemetryParser scan(open);
    int64_t clock = INT64_MIN;
    for (size_t b = 0; b < bodies.size(); ++b) {
      joule::Status st =
          scan.ParseInto(bodies[b], joule::ingest::BodyFormat::kNdjson, 0, {}, &parsed);
      if (!st.ok() || !parsed.errors.empty()) {
        std::fprintf(stderr, "body %zu: %s\n", b,
                     st.ok() ? parsed.errors[0].message.c_str() : st.ToString().c_str());
        return 1;
      }
      for (const auto& e : parsed.events) clock = std::max(clock, e.timestamp_ns);
      body_now[b] = clock;  // processing time never goes back
    }
  }

  joule::stream::WindowEngine engine(joule::stream::EngineOptions{});
  CountingSink sink;
  std::string segment;                       // one body's framed records, as the log writes them
  std::string payload;                       // one event's payload
  std::vector<joule::model::Event> decoded;  // reused, as the processor's events_
  uint64_t events = 0, rejected = 0, offset = 0;
  int64_t last_tick = INT64_MIN, now = 0;
  double parse_s = 0, encode_s = 0, decode_s = 0, engine_s = 0;
  const double c0 = Seconds(CLOCK_PROCESS_CPUTIME_ID), w0 = Seconds(CLOCK_MONOTONIC);
  for (size_t b = 0; b < bodies.size(); ++b) {
    now = body_now[b];
    const double t0 = Seconds(CLOCK_THREAD_CPUTIME_ID);
    joule::Status st =
        parser.ParseInto(bodies[b], joule::ingest::BodyFormat::kNdjson, now, {}, &parsed);
    if (!st.ok()) {
      std::fprintf(stderr, "parse failed: %s\n", st.ToString().c_str());
      return 1;
    }
    rejected += parsed.errors.size();
    const double t1 = Seconds(CLOCK_THREAD_CPUTIME_ID);
    segment.clear();
    const uint64_t first_offset = offset;
    for (const auto& e : parsed.events) {
      payload.clear();
      joule::model::EncodeEvent(e, &payload);
      joule::log::EncodeRecord(offset++, now, payload, &segment);
    }
    const double t2 = Seconds(CLOCK_THREAD_CPUTIME_ID);
    if (decoded.size() < parsed.events.size()) decoded.resize(parsed.events.size());
    size_t n = 0;
    std::string_view rest = segment;
    for (uint64_t expected = first_offset; !rest.empty(); ++expected) {
      joule::log::DecodedRecord rec;
      if (joule::log::DecodeRecord(rest, expected, &rec) != joule::log::DecodeResult::kOk ||
          !joule::model::DecodeEvent(rec.payload, &decoded[n]).ok()) {
        std::fprintf(stderr, "record %llu does not decode\n",
                     static_cast<unsigned long long>(expected));
        return 1;
      }
      rest.remove_prefix(rec.size);
      ++n;
    }
    const double t3 = Seconds(CLOCK_THREAD_CPUTIME_ID);
    engine.ProcessBatch(decoded.data(), n, now, &sink);
    if (now - last_tick >= kTickIntervalNs) {
      engine.Tick(now, &sink);
      last_tick = now;
    }
    events += n;
    const double t4 = Seconds(CLOCK_THREAD_CPUTIME_ID);
    parse_s += t1 - t0;
    encode_s += t2 - t1;
    decode_s += t3 - t2;
    engine_s += t4 - t3;
  }
  // The end of the stream: past the idle timeout every device's windows are final.
  {
    const double t0 = Seconds(CLOCK_THREAD_CPUTIME_ID);
    const joule::stream::EngineOptions& o = engine.options();
    engine.Tick(now + o.idle_timeout_ns + o.out_of_orderness_ns + kTickIntervalNs, &sink);
    engine_s += Seconds(CLOCK_THREAD_CPUTIME_ID) - t0;
  }
  const double cpu = Seconds(CLOCK_PROCESS_CPUTIME_ID) - c0, wall = Seconds(CLOCK_MONOTONIC) - w0;
  std::printf(
      "{\"events\": %llu, \"rejected\": %llu, \"bytes\": %zu, \"cpu_s\": %.6f, \"wall_s\": %.6f, "
      "\"events_per_cpu_s\": %.1f, \"records\": %llu, \"record_metrics\": %llu, "
      "\"steps_cpu_s\": {\"parse_validate\": %.6f, \"log_encode\": %.6f, \"log_decode\": %.6f, "
      "\"window_engine\": %.6f}}\n",
      static_cast<unsigned long long>(events), static_cast<unsigned long long>(rejected),
      data.size(), cpu, wall, static_cast<double>(events) / cpu,
      static_cast<unsigned long long>(sink.records), static_cast<unsigned long long>(sink.metrics),
      parse_s, encode_s, decode_s, engine_s);
  return rejected == 0 ? 0 : 1;
}

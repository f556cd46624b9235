// The log record round trip of one event, alone: the payload encoding (model::EncodeEvent)
// and its CRC-framed record (log::EncodeRecord) as ingest writes them, and the record check
// (log::DecodeRecord) and payload decoding (model::DecodeEvent into reused events) as a
// partition processor reads them. Events of the comparison harness's shape (4 metrics, no
// meta) and of ingest_bench's (4 metrics, small meta, event id). Reports events/s.
//   build/release/bench/event_codec_bench
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "log/segment_format.h"
#include "model/event.h"

namespace joule {
namespace {

std::vector<model::Event> Events(bool rich) {
  std::vector<model::Event> events(1000);
  for (size_t i = 0; i < events.size(); ++i) {
    model::Event& e = events[i];
    e.device_id = "dev-" + std::to_string(10000 + i);
    e.timestamp_ns = 1'795'908'000'000'000'000 + static_cast<int64_t>(i) * 1'000'000;
    e.received_at_ns = e.timestamp_ns + 3'000'000;
    e.metrics = {{"power_w", 236.69 + static_cast<double>(i)},
                 {"voltage_v", 227.8},
                 {"current_a", 1.039},
                 {"energy_wh", 86349.146 + static_cast<double>(i)}};
    if (rich) {
      e.meta_json = R"({"firmware":"1.0.3","location":"kitchen"})";
      e.event_id = "e-" + std::to_string(i);
    }
  }
  return events;
}

void BM_EncodeEvents(benchmark::State& state) {
  const std::vector<model::Event> events = Events(state.range(0) != 0);
  std::string payload, segment;
  uint64_t offset = 0;
  for (auto _ : state) {
    segment.clear();
    for (const auto& e : events) {
      payload.clear();
      model::EncodeEvent(e, &payload);
      log::EncodeRecord(offset++, e.received_at_ns, payload, &segment);
    }
    benchmark::DoNotOptimize(segment.data());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * events.size()));
  state.counters["bytes_per_record"] =
      static_cast<double>(segment.size()) / static_cast<double>(events.size());
}
BENCHMARK(BM_EncodeEvents)->Arg(0)->Arg(1);

void BM_DecodeEvents(benchmark::State& state) {
  const std::vector<model::Event> events = Events(state.range(0) != 0);
  std::string payload, segment;
  for (size_t i = 0; i < events.size(); ++i) {
    payload.clear();
    model::EncodeEvent(events[i], &payload);
    log::EncodeRecord(i, events[i].received_at_ns, payload, &segment);
  }
  std::vector<model::Event> decoded(events.size());
  for (auto _ : state) {
    std::string_view rest = segment;
    for (uint64_t i = 0; !rest.empty(); ++i) {
      log::DecodedRecord rec;
      if (log::DecodeRecord(rest, i, &rec) != log::DecodeResult::kOk ||
          !model::DecodeEvent(rec.payload, &decoded[i]).ok()) {
        state.SkipWithError("decode failed");
        return;
      }
      rest.remove_prefix(rec.size);
    }
    benchmark::DoNotOptimize(decoded.data());
  }
  if (decoded != events) state.SkipWithError("round trip differs");
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * events.size()));
}
BENCHMARK(BM_DecodeEvents)->Arg(0)->Arg(1);

}  // namespace
}  // namespace joule

BENCHMARK_MAIN();

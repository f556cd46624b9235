// Window engine throughput alone (no I/O): 10k devices at 1 Hz, each event carrying
// power_w, voltage_v, current_a and energy_wh; Tick once per simulated second.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "common/clock.h"
#include "model/event.h"
#include "stream/window_engine.h"

namespace {

using joule::kNanosPerSecond;
using joule::stream::EngineOptions;
using joule::stream::RecordSink;
using joule::stream::WindowEngine;

struct CountingSink : RecordSink {
  void Emit(const joule::model::AggregateRecord& r) override {
    ++records;
    metrics += r.metrics.size();
  }
  uint64_t records = 0, metrics = 0;
};

// jitter: each device's events arrive out of order (consecutive seconds swapped), within
// the out-of-orderness bound.
// batch > 0: events go through WindowEngine::ProcessBatch in batches of that many (as the
// processor hands over a log batch), with processing time = the last event's arrival.
void RunEngine(benchmark::State& state, int devices, bool jitter, int64_t lateness_s = 3600,
               int64_t warmup_s = 120, size_t batch = 0) {
  EngineOptions options;
  options.allowed_lateness_ns = lateness_s * kNanosPerSecond;
  WindowEngine engine(options);
  CountingSink sink;
  std::vector<joule::model::Event> events(static_cast<size_t>(devices));
  std::vector<double> meter(static_cast<size_t>(devices));
  std::mt19937_64 rng(42);
  for (int i = 0; i < devices; ++i) {
    auto& e = events[static_cast<size_t>(i)];
    e.device_id = "plug-" + std::to_string(100000 + i);
    e.metrics = {{"power_w", 0}, {"voltage_v", 0}, {"current_a", 0}, {"energy_wh", 0}};
    meter[static_cast<size_t>(i)] = static_cast<double>(rng() % 100000);
  }
  const int64_t start = 1795000000LL * kNanosPerSecond;
  int64_t second = 0;
  size_t i = 0;
  uint64_t n = 0;
  // Fills in the next event (events[i]); returns it.
  auto next = [&]() -> joule::model::Event& {
    auto& e = events[i];
    const int64_t phase = static_cast<int64_t>(i) * (kNanosPerSecond / devices);
    int64_t t = start + second * kNanosPerSecond + phase;
    if (jitter && (second & 1) == 0) t += kNanosPerSecond;  // even seconds late by 1 s
    if (jitter && (second & 1) == 1) t -= kNanosPerSecond;
    const double p =
        100.0 + 50.0 * std::sin(static_cast<double>(second + static_cast<int64_t>(i)) * 0.01);
    meter[i] += p / 3600.0;
    e.timestamp_ns = t;
    e.received_at_ns = t + 50 * 1000 * 1000;
    e.metrics[0].value = p;
    e.metrics[1].value = 230.0 + static_cast<double>(i % 7) * 0.1;
    e.metrics[2].value = p / 230.0;
    e.metrics[3].value = meter[i];
    return e;
  };
  auto advance = [&] {
    if (++i == events.size()) {
      i = 0;
      ++second;
      engine.Tick(start + second * kNanosPerSecond + kNanosPerSecond / 2, &sink);
    }
  };
  auto step = [&] {
    if (batch == 0) {
      auto& e = next();
      engine.Process(e, e.received_at_ns, &sink);
      advance();
      return;
    }
    // events[i .. i + batch) are consecutive devices (batch divides the device count).
    const size_t first = i;
    int64_t now = 0;
    for (size_t k = 0; k < batch; ++k) {
      now = next().received_at_ns;
      ++i;
    }
    i = first;
    engine.ProcessBatch(&events[first], batch, now, &sink);
    for (size_t k = 0; k < batch; ++k) advance();
  };
  const uint64_t per_step = batch == 0 ? 1 : batch;
  // Untimed warm-up: past the first windows' finalization, so the measured part is
  // steady-state work rather than first-touch allocation.
  while (second < warmup_s) step();
  for (auto _ : state) {
    step();
    n += per_step;
  }
  state.SetItemsProcessed(static_cast<int64_t>(n));
  auto s = engine.stats();
  state.counters["records"] = static_cast<double>(sink.records);
  state.counters["sim_seconds"] = static_cast<double>(second);
  state.counters["state_MB"] = static_cast<double>(s.state_bytes_estimate) / 1e6;
}

void BM_Engine_10kDevices_1Hz_4Metrics(benchmark::State& state) { RunEngine(state, 10000, false); }
BENCHMARK(BM_Engine_10kDevices_1Hz_4Metrics)->Unit(benchmark::kNanosecond)->MinTime(3.0);

// Same work with a cache-resident device set: the gap to the 10k case is memory latency.
void BM_Engine_100Devices_1Hz_4Metrics(benchmark::State& state) { RunEngine(state, 100, false); }
BENCHMARK(BM_Engine_100Devices_1Hz_4Metrics)->Unit(benchmark::kNanosecond)->MinTime(3.0);

void BM_Engine_10kDevices_1Hz_4Metrics_OutOfOrder(benchmark::State& state) {
  RunEngine(state, 10000, true);
}
BENCHMARK(BM_Engine_10kDevices_1Hz_4Metrics_OutOfOrder)->Unit(benchmark::kNanosecond)->MinTime(3.0);

// Steady state including eviction: allowed lateness 2 min, warmed up past the horizon.
void BM_Engine_10kDevices_1Hz_4Metrics_SteadyState(benchmark::State& state) {
  RunEngine(state, 10000, false, 120, 600);
}
BENCHMARK(BM_Engine_10kDevices_1Hz_4Metrics_SteadyState)
    ->Unit(benchmark::kNanosecond)
    ->MinTime(3.0);

// The same workloads through ProcessBatch (batches of 1,000 / 100 events), as the processor
// feeds the engine: prefetching the next devices' state hides part of the memory latency.
void BM_Engine_10kDevices_1Hz_4Metrics_Batch1000(benchmark::State& state) {
  RunEngine(state, 10000, false, 3600, 120, 1000);
}
BENCHMARK(BM_Engine_10kDevices_1Hz_4Metrics_Batch1000)->Unit(benchmark::kNanosecond)->MinTime(3.0);

void BM_Engine_100Devices_1Hz_4Metrics_Batch100(benchmark::State& state) {
  RunEngine(state, 100, false, 3600, 120, 100);
}
BENCHMARK(BM_Engine_100Devices_1Hz_4Metrics_Batch100)->Unit(benchmark::kNanosecond)->MinTime(3.0);

void BM_Engine_10kDevices_1Hz_4Metrics_SteadyState_Batch1000(benchmark::State& state) {
  RunEngine(state, 10000, false, 120, 600, 1000);
}
BENCHMARK(BM_Engine_10kDevices_1Hz_4Metrics_SteadyState_Batch1000)
    ->Unit(benchmark::kNanosecond)
    ->MinTime(3.0);

}  // namespace

BENCHMARK_MAIN();

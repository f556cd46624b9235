// The processors' per-event device lookups (issue 11), on the harness's data shape: 10k
// devices at 1 Hz, time-major, so consecutive events are different devices and every
// lookup misses the cache. Items are events.
//
// BM_LatestPutReading: MemoryLatestStore::PutReading per event (what a processor did).
// BM_LatestPutReadings: the same events in batches of 1000 through PutReadings (shard
//   grouping, one lock per shard, lookups prefetched).
// BM_ReadingsUnorderedMap / BM_ReadingsFlatMap: the processor's newest-reading-per-device
//   table (event time + the event's log record), std::unordered_map<std::string, ...> with
//   find per event against FlatStringMap with a precomputed hash and prefetching, the loop
//   PartitionProcessor::ProcessBatch runs.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/clock.h"
#include "common/flat_string_map.h"
#include "model/event.h"
#include "store/memory/memory_latest_store.h"

namespace {

using joule::FlatStringMap;
using joule::kNanosPerSecond;
using joule::model::Event;

constexpr int kBatch = 1000;

// `seconds` × `devices` events, time-major, with the harness's four metrics.
std::vector<Event> Events(int devices, int seconds) {
  std::vector<Event> out;
  out.reserve(static_cast<size_t>(devices) * seconds);
  for (int s = 0; s < seconds; ++s) {
    for (int d = 0; d < devices; ++d) {
      Event e;
      char id[16];
      std::snprintf(id, sizeof id, "dev-%05d", d);
      e.device_id = id;
      e.timestamp_ns = 1795824000LL * kNanosPerSecond + s * kNanosPerSecond;
      e.received_at_ns = e.timestamp_ns;
      e.metrics = {{"power_w", 100.0 + d},
                   {"voltage_v", 230.1},
                   {"current_a", 0.43},
                   {"energy_wh", 1000.0 + s}};
      out.push_back(std::move(e));
    }
  }
  return out;
}

void BM_LatestPutReading(benchmark::State& state) {
  const auto events = Events(static_cast<int>(state.range(0)), 4);
  joule::store::MemoryLatestStore store;
  for (const Event& e : events) (void)store.PutReading(e);  // every device known
  size_t i = 0;
  for (auto _ : state) {
    for (int k = 0; k < kBatch; ++k) {
      benchmark::DoNotOptimize(store.PutReading(events[i]));
      if (++i == events.size()) i = 0;
    }
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
}
BENCHMARK(BM_LatestPutReading)->Arg(10000)->Arg(1000);

void BM_LatestPutReadings(benchmark::State& state) {
  const auto events = Events(static_cast<int>(state.range(0)), 4);
  joule::store::MemoryLatestStore store;
  for (const Event& e : events) (void)store.PutReading(e);
  size_t i = 0;
  for (auto _ : state) {
    if (i + kBatch > events.size()) i = 0;
    benchmark::DoNotOptimize(store.PutReadings(std::span<const Event>(events.data() + i, kBatch)));
    i += kBatch;
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
}
BENCHMARK(BM_LatestPutReadings)->Arg(10000)->Arg(1000);

struct Reading {
  int64_t timestamp_ns = 0;
  std::string payload;
};

std::vector<std::string> Payloads(const std::vector<Event>& events) {
  std::vector<std::string> out;
  for (const Event& e : events) {
    out.emplace_back();
    joule::model::EncodeEvent(e, &out.back());
  }
  return out;
}

void BM_ReadingsUnorderedMap(benchmark::State& state) {
  const auto events = Events(static_cast<int>(state.range(0)), 4);
  const auto payloads = Payloads(events);
  std::unordered_map<std::string, Reading> readings;
  size_t i = 0;
  for (auto _ : state) {
    if (i + kBatch > events.size()) i = 0;
    for (size_t k = i; k < i + kBatch; ++k) {
      const Event& e = events[k];
      auto it = readings.find(e.device_id);
      if (it == readings.end()) {
        readings.emplace(e.device_id, Reading{e.timestamp_ns, payloads[k]});
      } else if (it->second.timestamp_ns <= e.timestamp_ns) {
        it->second.timestamp_ns = e.timestamp_ns;
        it->second.payload.assign(payloads[k]);
      }
    }
    i += kBatch;
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
}
BENCHMARK(BM_ReadingsUnorderedMap)->Arg(10000)->Arg(1000);

void BM_ReadingsFlatMap(benchmark::State& state) {
  const auto events = Events(static_cast<int>(state.range(0)), 4);
  const auto payloads = Payloads(events);
  FlatStringMap<Reading> readings;
  std::vector<uint64_t> hashes(kBatch);
  size_t i = 0;
  for (auto _ : state) {
    if (i + kBatch > events.size()) i = 0;
    for (size_t k = 0; k < kBatch; ++k) {
      hashes[k] = FlatStringMap<Reading>::Hash(events[i + k].device_id);
    }
    constexpr size_t kSlotAhead = 8, kEntryAhead = 4;
    for (size_t k = 0; k < kBatch; ++k) {
      if (k + kSlotAhead < kBatch) readings.PrefetchSlot(hashes[k + kSlotAhead]);
      if (k + kEntryAhead < kBatch) readings.PrefetchEntry(hashes[k + kEntryAhead]);
      const Event& e = events[i + k];
      auto [r, inserted] = readings.TryEmplace(e.device_id, hashes[k]);
      if (inserted || r->timestamp_ns <= e.timestamp_ns) {
        r->timestamp_ns = e.timestamp_ns;
        r->payload.assign(payloads[i + k]);
      }
    }
    i += kBatch;
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
}
BENCHMARK(BM_ReadingsFlatMap)->Arg(10000)->Arg(1000);

}  // namespace

BENCHMARK_MAIN();

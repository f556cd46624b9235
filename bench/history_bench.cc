// History store (RocksDB) benchmarks. Records look like a smart plug's 1m windows: 4 metrics
// (power_w power, voltage_v gauge, energy_wh counter, temperature_c gauge) with noisy values.
//
// BM_HistoryPut: Put throughput (records/s) in batches of 1000 new records (1000 devices,
//   one minute each batch — the shape of the window engine's output). stale=1 re-puts the
//   same batch at the same version: the cost of the read-before-write alone.
// BM_HistoryRange1440: latency of one Range of a device's full day (1440 1m records, one
//   page), over 100 devices × 1440 records compacted; random device per iteration.
// BM_HistoryLatest60: the realtime fallback, Latest(60).
// BM_HistoryBytesPerRecord: fills JOULE_HISTORY_BENCH_DEVICES (default 1000) devices × 1440
//   records time-major in batches of 1000, compacts, and reports sst bytes per record and
//   the fill rate. Set JOULE_HISTORY_BENCH_DEVICES=10000 for the documented figure.
//   decimals:0 = noisy doubles (full random mantissas), decimals:1 = the same readings
//   rounded as sensors send them (energy 3 decimals, power 2, temperature and voltage 1).
//   bench/history_size measures a real server's records instead.
#include <benchmark/benchmark.h>
#include <stdlib.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/metrics.h"
#include "store/rocksdb/rocksdb_history_store.h"

namespace {

using joule::kNanosPerMinute;
using joule::kNanosPerSecond;
using joule::ManualClock;
using joule::MetricsRegistry;
using joule::model::AggregateRecord;
using joule::model::MetricAggregate;
using joule::model::MetricKind;
using joule::model::Resolution;
using joule::store::HistoryQuery;
using joule::store::RocksDbHistoryOptions;
using joule::store::RocksDbHistoryStore;

constexpr int64_t kDayStart = 1795824000LL * kNanosPerSecond;  // 2026-11-28T00:00:00Z

std::string MakeTempDir() {
  std::string tmpl =
      (std::filesystem::temp_directory_path() / "joule-history-bench-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) std::abort();
  return tmpl;
}

std::string DeviceId(int i) { return "plug-" + std::to_string(100000 + i); }

// Readings are rounded to `digits` decimals (as a sensor sends them) unless digits < 0
// (noisy doubles with full random mantissas: the worst case for the value format).
int g_digits = -1;

double Reading(double v, int digits) {
  if (digits < 0) return v;
  const double scale = std::pow(10.0, digits);
  return std::round(v * scale) / scale;
}

MetricAggregate Metric(std::string name, MetricKind kind, double base, double spread,
                       std::mt19937& rng, int digits = -1) {
  std::uniform_real_distribution<double> u(-spread, spread);
  MetricAggregate m;
  m.name = std::move(name);
  m.kind = kind;
  m.count = 12;
  double lo = Reading(base + u(rng), digits), hi = lo, sum = 0;
  for (int i = 0; i < 12; ++i) {
    const double v = Reading(base + u(rng), digits);
    lo = std::min(lo, v);
    hi = std::max(hi, v);
    sum += v;
    if (i == 0) m.first = v;
    m.last = v;
  }
  m.min = lo;
  m.max = hi;
  m.sum = sum;
  if (kind == MetricKind::kPower) {
    m.energy_wh = sum / 12 / 60;
    m.covered_ns = 55 * kNanosPerSecond + static_cast<int64_t>(rng() % 5) * kNanosPerSecond;
  } else if (kind == MetricKind::kCounter) {
    m.delta = spread * 0.1;
  }
  return m;
}

AggregateRecord MakeRecord(int device, int64_t start, std::mt19937& rng, uint64_t version = 1) {
  AggregateRecord r;
  r.device_id = DeviceId(device);
  r.resolution = Resolution::kBase;
  r.window_start_ns = start;
  r.window_end_ns = start + kNanosPerMinute;
  r.final = true;
  r.version = version;
  r.count = 12;
  const double meter = 10000.0 + device + static_cast<double>(start - kDayStart) / 6e10 * 0.05;
  const bool d = g_digits >= 0;
  r.metrics = {Metric("energy_wh", MetricKind::kCounter, meter, 0.05, rng, d ? 3 : -1),
               Metric("power_w", MetricKind::kPower, 40.0 + device % 100, 15.0, rng, d ? 2 : -1),
               Metric("temperature_c", MetricKind::kGauge, 21.0, 0.4, rng, d ? 1 : -1),
               Metric("voltage_v", MetricKind::kGauge, 230.0, 2.0, rng, d ? 1 : -1)};
  return r;
}

struct BenchStore {
  std::string dir = MakeTempDir();
  ManualClock clock{kDayStart + 2 * joule::kNanosPerDay};
  MetricsRegistry metrics;
  std::unique_ptr<RocksDbHistoryStore> store;

  BenchStore() {
    RocksDbHistoryOptions o;
    o.path = dir + "/history";
    o.clock = &clock;
    auto opened = RocksDbHistoryStore::Open(o, &metrics);
    if (!opened.ok()) {
      std::fprintf(stderr, "%s\n", opened.status().ToString().c_str());
      std::abort();
    }
    store = std::move(opened).value();
  }
  ~BenchStore() {
    store.reset();
    std::filesystem::remove_all(dir);
  }
  // devices × minutes records, time-major, in batches of 1000.
  void Fill(int devices, int minutes) {
    std::mt19937 rng(1);
    std::vector<AggregateRecord> batch;
    for (int m = 0; m < minutes; ++m) {
      for (int d = 0; d < devices; ++d) {
        batch.push_back(MakeRecord(d, kDayStart + m * kNanosPerMinute, rng));
        if (batch.size() == 1000) Put(batch);
      }
    }
    Put(batch);
  }
  void Put(std::vector<AggregateRecord>& batch) {
    if (batch.empty()) return;
    if (!store->Put(batch).ok()) std::abort();
    batch.clear();
  }
};

void BM_HistoryPut(benchmark::State& state) {
  const bool stale = state.range(0) != 0;
  BenchStore s;
  std::mt19937 rng(7);
  int64_t minute = 0;
  std::vector<AggregateRecord> batch;
  auto make_batch = [&] {
    batch.clear();
    for (int d = 0; d < 1000; ++d) {
      batch.push_back(MakeRecord(d, kDayStart + minute * kNanosPerMinute, rng));
    }
  };
  make_batch();
  for (auto _ : state) {
    if (!stale) {
      state.PauseTiming();
      ++minute;
      make_batch();
      state.ResumeTiming();
    }
    if (!s.store->Put(batch).ok()) std::abort();
  }
  state.SetItemsProcessed(state.iterations() * 1000);
}
BENCHMARK(BM_HistoryPut)
    ->ArgName("stale")
    ->Arg(0)
    ->Arg(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// Filled once, shared by the read benchmarks; its directory is removed at exit.
BenchStore* ReadStore() {
  static BenchStore s;
  static const bool filled = [] {
    s.Fill(100, 1440);
    if (!s.store->CompactAll().ok()) std::abort();
    return true;
  }();
  (void)filled;
  return &s;
}

void BM_HistoryRange1440(benchmark::State& state) {
  BenchStore* s = ReadStore();
  std::mt19937 rng(3);
  size_t records = 0;
  for (auto _ : state) {
    HistoryQuery q{DeviceId(static_cast<int>(rng() % 100)),
                   Resolution::kBase,
                   kDayStart,
                   kDayStart + 1440 * kNanosPerMinute,
                   1500,
                   ""};
    auto page = s->store->Range(q);
    if (!page.ok() || page->records.size() != 1440) std::abort();
    records += page->records.size();
    benchmark::DoNotOptimize(page);
  }
  state.SetItemsProcessed(static_cast<int64_t>(records));
}
BENCHMARK(BM_HistoryRange1440)->UseRealTime()->Unit(benchmark::kMicrosecond);

// Point reads: one record by (device, resolution, window_start), random device and minute.
void BM_HistoryGet(benchmark::State& state) {
  BenchStore* s = ReadStore();
  std::mt19937 rng(11);
  for (auto _ : state) {
    auto got = s->store->Get(DeviceId(static_cast<int>(rng() % 100)), Resolution::kBase,
                             kDayStart + static_cast<int64_t>(rng() % 1440) * kNanosPerMinute);
    if (!got.ok() || !got->has_value()) std::abort();
    benchmark::DoNotOptimize(got);
  }
}
BENCHMARK(BM_HistoryGet)->UseRealTime()->Unit(benchmark::kMicrosecond);

// A day's range as the history API reads it on a cache miss: keys and versions only
// (Scan without decoding).
void BM_HistoryScanVersions1440(benchmark::State& state) {
  BenchStore* s = ReadStore();
  std::mt19937 rng(3);
  for (auto _ : state) {
    HistoryQuery q{DeviceId(static_cast<int>(rng() % 100)),
                   Resolution::kBase,
                   kDayStart,
                   kDayStart + 1440 * kNanosPerMinute,
                   1500,
                   ""};
    uint64_t sum = 0;
    size_t n = 0;
    auto cursor = s->store->Scan(q, [&](const joule::store::HistoryEntry& e) {
      sum += e.version;
      ++n;
      return joule::Status::Ok();
    });
    if (!cursor.ok() || n != 1440) std::abort();
    benchmark::DoNotOptimize(sum);
  }
  state.SetItemsProcessed(state.iterations() * 1440);
}
BENCHMARK(BM_HistoryScanVersions1440)->UseRealTime()->Unit(benchmark::kMicrosecond);

void BM_HistoryLatest60(benchmark::State& state) {
  BenchStore* s = ReadStore();
  std::mt19937 rng(5);
  for (auto _ : state) {
    auto latest = s->store->Latest(DeviceId(static_cast<int>(rng() % 100)), Resolution::kBase, 60);
    if (!latest.ok() || latest->size() != 60) std::abort();
    benchmark::DoNotOptimize(latest);
  }
}
BENCHMARK(BM_HistoryLatest60)->UseRealTime()->Unit(benchmark::kMicrosecond);

void BM_HistoryBytesPerRecord(benchmark::State& state) {
  g_digits = state.range(0) != 0 ? 1 : -1;
  const char* env = std::getenv("JOULE_HISTORY_BENCH_DEVICES");
  const int devices = env != nullptr ? std::atoi(env) : 1000;
  for (auto _ : state) {
    BenchStore s;
    const auto started = std::chrono::steady_clock::now();
    s.Fill(devices, 1440);
    const double fill_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    if (!s.store->CompactAll().ok()) std::abort();
    auto usage = s.store->DiskUsage(Resolution::kBase);
    if (!usage.ok()) std::abort();
    const double records = static_cast<double>(devices) * 1440;
    state.counters["devices"] = devices;
    state.counters["records"] = records;
    state.counters["sst_bytes"] = static_cast<double>(usage->sst_bytes);
    state.counters["bytes_per_record"] = static_cast<double>(usage->sst_bytes) / records;
    state.counters["fill_records_per_s"] = records / fill_seconds;
  }
  g_digits = -1;
}
BENCHMARK(BM_HistoryBytesPerRecord)
    ->ArgName("decimals")
    ->Arg(0)
    ->Arg(1)
    ->Iterations(1)
    ->Unit(benchmark::kSecond);

}  // namespace

BENCHMARK_MAIN();

// The partition processors' path with their real sinks, without HTTP: a log (no fsync)
// filled with N devices × S seconds of the harness's data shape (1 Hz, power_w, voltage_v,
// current_a and a cumulative energy_wh, time-major; bench/harness/gen_data.py), then
// `joule serve`'s processors (2 by default, 8 partitions, checkpoints on) read it through
// the window engine into the memory latest store and the RocksDB history store. Prints one
// JSON object: process CPU seconds (utime + stime, every thread including RocksDB's) and
// wall seconds from the processors' start until they stopped, events per CPU-second, and
// the history store's counters. Measures what issue 11 calls the per-event sink costs
// (history puts, the latest store's and the processor's per-device readings) next to the
// engine and log reading; compare the same command before and after a change.
//   processor_bench [--devices 10000] [--seconds 60] [--processors 2] [--no-history]
//                   [--idle-wait-ms 3000] [--dir DIR [--fill-only | --no-fill]]
//                   [--manual-clock | --replay-clock] [--read-batch 4096]
//                   [--no-version-cache] [--redis URL]
// --dir keeps the data in DIR; --fill-only writes the log and exits; --no-fill processes the
// log already in DIR (a copy of a filled one: `cp -r` it first), so that a profiler sees
// only the processing. --manual-clock freezes the processors' processing time at the
// start (no early firings, idle timeouts or throttle releases until Stop): the run is then
// deterministic, for instruction counts (valgrind --tool=callgrind). --replay-clock makes
// each processor's processing time follow the data instead: a batch is processed at the
// newest event time that processor has read so far (as core_throughput's replay clock), so
// early firings, ticks, throttle releases and checkpoints happen per event as often as in a
// live server that keeps up (~0.6 records per event with the default 5 s early firing),
// and the run is still deterministic. --read-batch: log records per processor read (the
// server's 4096; with --replay-clock a batch of a partition spans 4096 / (devices / 8)
// seconds of data, and the clock moves by that much per batch). --no-version-cache
// turns off the history store's version cache (every write reads the stored version first).
// --redis writes the latest store to Redis (its keys for dev-* are overwritten) instead of
// memory.
#include <stdlib.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "app/partition_processor.h"
#include "common/clock.h"
#include "common/metrics.h"
#include "log/log.h"
#include "model/event.h"
#include "model/partition.h"
#include "store/memory/memory_latest_store.h"
#include "store/redis/redis_latest_store.h"
#include "store/rocksdb/rocksdb_history_store.h"

namespace {

using namespace joule;

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

double LoadAverage() {
  double l[1] = {0};
  return getloadavg(l, 1) == 1 ? l[0] : -1;
}

struct Args {
  int devices = 10000;
  int seconds = 60;
  int processors = 2;
  bool history = true;
  int idle_wait_ms = 3000;
  std::string keep;
  bool fill = true;
  bool process = true;
  bool manual_clock = false;
  bool replay_clock = false;
  size_t read_batch = 4096;
  bool version_cache = true;
  std::string redis;
};

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "processor_bench: %s\n", what.c_str());
  std::exit(1);
}

// Fills the log like the harness's events.ndjson would through ingest.
uint64_t FillLog(const Args& a, log::Log* log, int64_t start_ns) {
  std::mt19937_64 rng(42);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<double> base(a.devices), phase(a.devices), meter(a.devices);
  std::vector<std::string> ids(a.devices);
  std::vector<uint32_t> partition(a.devices);
  for (int i = 0; i < a.devices; ++i) {
    base[i] = 20 + 880 * u(rng);
    phase[i] = 6.28 * u(rng);
    meter[i] = 1000 + 89000 * u(rng);
    char id[16];
    std::snprintf(id, sizeof id, "dev-%05d", i);
    ids[i] = id;
    partition[i] = model::PartitionOf(ids[i], log->partitions());
  }
  uint64_t events = 0;
  model::Event e;
  e.metrics.resize(4);
  e.metrics[0].name = "power_w";
  e.metrics[1].name = "voltage_v";
  e.metrics[2].name = "current_a";
  e.metrics[3].name = "energy_wh";
  for (int s = 0; s < a.seconds; ++s) {
    std::vector<std::vector<std::string>> per_partition(log->partitions());
    for (int i = 0; i < a.devices; ++i) {
      const double p = std::round(base[i] * (1 + 0.3 * std::sin(phase[i] + s / 30.0)) * 100) / 100;
      const double v = std::round((230 + 3 * std::sin(phase[i] + s / 97.0)) * 10) / 10;
      meter[i] += p / 3600.0;
      e.device_id = ids[i];
      e.timestamp_ns = start_ns + static_cast<int64_t>(s) * kNanosPerSecond;
      e.received_at_ns = e.timestamp_ns;
      e.metrics[0].value = p;
      e.metrics[1].value = v;
      e.metrics[2].value = std::round(p / v * 1000) / 1000;
      e.metrics[3].value = std::round(meter[i] * 1000) / 1000;
      std::string rec;
      model::EncodeEvent(e, &rec);
      per_partition[partition[i]].push_back(std::move(rec));
      ++events;
    }
    for (uint32_t p = 0; p < log->partitions(); ++p) {
      if (per_partition[p].empty()) continue;
      Status st = log->Append(p, std::move(per_partition[p]), nullptr);
      if (!st.ok()) Die("append: " + st.ToString());
    }
  }
  Status st = log->Flush();
  if (!st.ok()) Die("log flush: " + st.ToString());
  return events;
}

// --replay-clock: processing time = the newest event time the calling processor thread has
// handed to the latest store (every decoded event goes there before the engine sees it), so
// a batch runs at the newest event time of the batches before it. A thread that has handed
// over nothing (a processor before its first batch; Start and Stop, from main) sees the
// oldest event time of the log, so that no thread depends on another's progress.
class ReplayClock final : public Clock {
 public:
  explicit ReplayClock(int64_t start_ns) : start_(start_ns) {}
  int64_t NowNanos() const override { return own_newest_ != 0 ? own_newest_ : start_; }
  void Saw(std::span<const model::Event> events) {
    int64_t n = NowNanos();
    for (const model::Event& e : events) n = std::max(n, e.timestamp_ns);
    own_newest_ = n;
  }

 private:
  static thread_local int64_t own_newest_;
  const int64_t start_;
};
thread_local int64_t ReplayClock::own_newest_ = 0;

// Forwards to the real latest store and tells the replay clock what each processor read.
class ClockedLatestStore final : public store::LatestStore {
 public:
  ClockedLatestStore(store::LatestStore* inner, ReplayClock* clock)
      : inner_(inner), clock_(clock) {}
  std::string_view backend() const override { return inner_->backend(); }
  bool PrefersBatches() const override { return inner_->PrefersBatches(); }
  Status PutRecord(const model::AggregateRecord& r) override { return inner_->PutRecord(r); }
  Status PutRecords(std::span<const model::AggregateRecord> r) override {
    return inner_->PutRecords(r);
  }
  Status PutReading(const model::Event& e) override {
    clock_->Saw(std::span<const model::Event>(&e, 1));
    return inner_->PutReading(e);
  }
  Status PutReadings(std::span<const model::Event> e) override {
    clock_->Saw(e);
    return inner_->PutReadings(e);
  }
  Result<bool> Get(std::string_view id, size_t n, store::LatestSnapshot* out) override {
    return inner_->Get(id, n, out);
  }
  Status Ping() override { return inner_->Ping(); }
  uint64_t InstanceGeneration() const override { return inner_->InstanceGeneration(); }

 private:
  store::LatestStore* inner_;
  ReplayClock* clock_;
};

// The oldest event time in the log (the replay clock's start).
int64_t FirstEventTime(log::Log* log) {
  int64_t first = INT64_MAX;
  for (uint32_t p = 0; p < log->partitions(); ++p) {
    auto reader = log->NewReader(p, log->StartOffset(p));
    if (!reader.ok()) Die("reader: " + reader.status().ToString());
    std::vector<log::LogRecord> records;
    auto n = (*reader)->Next(1, &records);
    if (!n.ok()) Die("read: " + n.status().ToString());
    model::Event e;
    if (*n == 1 && model::DecodeEvent(records[0].payload, &e).ok()) {
      first = std::min(first, e.timestamp_ns);
    }
  }
  return first == INT64_MAX ? SystemClock::Default()->NowNanos() : first;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) Die("missing value for " + arg);
      return argv[++i];
    };
    if (arg == "--devices") {
      a.devices = std::stoi(next());
    } else if (arg == "--seconds") {
      a.seconds = std::stoi(next());
    } else if (arg == "--processors") {
      a.processors = std::stoi(next());
    } else if (arg == "--no-history") {
      a.history = false;
    } else if (arg == "--idle-wait-ms") {
      a.idle_wait_ms = std::stoi(next());
    } else if (arg == "--dir") {
      a.keep = next();
    } else if (arg == "--fill-only") {
      a.process = false;
    } else if (arg == "--no-fill") {
      a.fill = false;
    } else if (arg == "--redis") {
      a.redis = next();
    } else if (arg == "--no-version-cache") {
      a.version_cache = false;
    } else if (arg == "--read-batch") {
      a.read_batch = std::stoul(next());
    } else if (arg == "--replay-clock") {
      a.replay_clock = true;
      a.idle_wait_ms = 0;
    } else if (arg == "--manual-clock") {
      a.manual_clock = true;
      a.idle_wait_ms = 0;
    } else {
      Die("unknown argument " + arg);
    }
  }
  std::string dir = a.keep;
  if (dir.empty()) {
    std::string tmpl = "/var/tmp/joule-processor-bench-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) Die("mkdtemp");
    dir = tmpl;
  }
  const std::filesystem::path root(dir);
  std::filesystem::create_directories(root / "checkpoints");

  MetricsRegistry metrics;
  log::LogOptions lo;
  lo.dir = (root / "log").string();
  lo.partitions = 8;
  lo.fsync = false;
  lo.max_pending_bytes = 1ull << 30;
  auto log_opened = log::Log::Open(lo, &metrics);
  if (!log_opened.ok()) Die("log: " + log_opened.status().ToString());
  std::unique_ptr<log::Log> log = std::move(*log_opened);

  // Event time ends now (rounded to the minute), as the harness's data does.
  const int64_t now = SystemClock::Default()->NowNanos();
  const int64_t start_ns =
      (now / kNanosPerMinute) * kNanosPerMinute - static_cast<int64_t>(a.seconds) * kNanosPerSecond;
  uint64_t events = 0;
  if (a.fill) {
    events = FillLog(a, log.get(), start_ns);
  } else {
    for (uint32_t p = 0; p < lo.partitions; ++p) events += log->DurableEnd(p).value;
  }
  if (!a.process) {
    std::printf("{\"filled\": \"%s\", \"events\": %llu}\n", dir.c_str(),
                static_cast<unsigned long long>(events));
    return 0;
  }

  std::unique_ptr<store::RocksDbHistoryStore> history;
  if (a.history) {
    store::RocksDbHistoryOptions ho;
    ho.path = (root / "history").string();
    if (!a.version_cache) ho.version_cache_devices = 0;
    auto opened = store::RocksDbHistoryStore::Open(ho, &metrics);
    if (!opened.ok()) Die("history: " + opened.status().ToString());
    history = std::move(*opened);
  }
  std::unique_ptr<store::LatestStore> latest_store;
  if (a.redis.empty()) {
    latest_store = std::make_unique<store::MemoryLatestStore>(60);
  } else {
    store::RedisLatestStoreOptions ro;
    ro.url = a.redis;
    ro.metrics = &metrics;
    auto opened = store::RedisLatestStore::Open(ro);
    if (!opened.ok()) Die("redis: " + opened.status().ToString());
    latest_store = std::move(*opened);
  }
  ManualClock manual(SystemClock::Default()->NowNanos());
  ReplayClock replay(a.replay_clock ? FirstEventTime(log.get()) : 0);
  ClockedLatestStore clocked(latest_store.get(), &replay);
  store::LatestStore& latest = a.replay_clock ? clocked : *latest_store;
  const Clock* clock = a.manual_clock   ? static_cast<const Clock*>(&manual)
                       : a.replay_clock ? static_cast<const Clock*>(&replay)
                                        : SystemClock::Default();
  const double load0 = LoadAverage();
  const double cpu0 = CpuSeconds(), wall0 = WallSeconds();
  std::vector<std::unique_ptr<app::PartitionProcessor>> processors;
  for (int i = 0; i < a.processors; ++i) {
    app::PartitionProcessorOptions po;
    po.index = i;
    po.read_batch = a.read_batch;
    for (uint32_t p = i; p < lo.partitions; p += a.processors) po.partitions.push_back(p);
    // As the harness runs joule serve. Not with --replay-clock: a processor reads a few
    // seconds of data per partition per batch (4096 records), so its clock jumps by that
    // much between a device's events, and a 2 s idle timeout would finalize every window
    // early and re-open it as a late update (the engine's default, 60 s, is used).
    if (!a.replay_clock) po.engine.idle_timeout_ns = 2 * kNanosPerSecond;
    po.checkpoint_path = (root / "checkpoints" / ("processor-" + std::to_string(i) + ".ckpt"));
    processors.push_back(std::make_unique<app::PartitionProcessor>(
        std::move(po), log.get(), &latest, history.get(), clock, &metrics, nullptr));
  }
  for (auto& p : processors) {
    Status st = p->Start();
    if (!st.ok()) Die("start: " + st.ToString());
  }
  for (bool done = false; !done;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    done = true;
    for (auto& p : processors) done = done && p->LagRecords() == 0;
  }
  const double wall_processed = WallSeconds() - wall0;
  std::this_thread::sleep_for(std::chrono::milliseconds(a.idle_wait_ms));
  for (auto& p : processors) {
    Status st = p->Stop();
    if (!st.ok()) Die("stop: " + st.ToString());
  }
  const double cpu = CpuSeconds() - cpu0, wall = WallSeconds() - wall0;
  const double load1 = LoadAverage();

  auto counter = [&](const char* name) { return metrics.GetCounter(name, "")->Value(); };
  uint64_t emitted = 0;
  for (const char* res : {"base", "1h", "1d"}) {
    for (const char* fin : {"false", "true"}) {
      emitted +=
          metrics
              .GetCounter("joule_windows_emitted_total", "", {{"resolution", res}, {"final", fin}})
              ->Value();
    }
  }
  std::printf(
      "{\"devices\": %d, \"seconds\": %d, \"processors\": %d, \"history\": %s, \"events\": %llu, "
      "\"cpu_s\": %.3f, \"wall_s\": %.3f, \"wall_until_processed_s\": %.3f, "
      "\"events_per_cpu_s\": %.0f, \"history_put_records\": %llu, \"history_stale\": %llu, "
      "\"history_version_reads\": %llu, \"records_emitted\": %llu, \"clock\": \"%s\", "
      "\"latest\": \"%s\", "
      "\"loadavg\": [%.2f, %.2f]}\n",
      a.devices, a.seconds, a.processors, a.history ? "true" : "false",
      static_cast<unsigned long long>(events), cpu, wall, wall_processed,
      static_cast<double>(events) / cpu,
      static_cast<unsigned long long>(counter("joule_history_put_records_total")),
      static_cast<unsigned long long>(counter("joule_history_stale_writes_total")),
      static_cast<unsigned long long>(counter("joule_history_version_reads_total")),
      static_cast<unsigned long long>(emitted),
      a.manual_clock   ? "manual"
      : a.replay_clock ? "replay"
                       : "system",
      a.redis.empty() ? "memory" : "redis", load0, load1);
  processors.clear();
  history.reset();
  log.reset();
  if (a.keep.empty()) std::filesystem::remove_all(root);
  return 0;
}

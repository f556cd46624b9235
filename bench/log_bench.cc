// Log append throughput (records/s) and group-commit efficiency (records per fsync).
//
// BM_LogAppendPipelined: one producer appends batches of N ~150-byte records round-robin
//   over 8 partitions without waiting (like ingest under load); Unavailable (the
//   max_pending_bytes limit) makes it wait for durability, as ingest's 503 would.
//   fsync=0 is the durability "none" baseline of the same run.
// BM_LogAppendClosedLoop: T threads, each appending one batch and waiting for its durability
//   callback before the next (like T concurrent request handlers).
// BM_LogIngestShape: T closed-loop clients shaped like HTTP ingest: each spends `work_us` of
//   CPU (the parse), then appends a batch of 1,000 ~100-byte records spread over all 8
//   partitions (one AppendBatch per partition, like ingest::EventAppender) and waits until
//   all of them are durable. Reports the mean ack, group-commit rounds and the process CPU per
//   batch beyond the simulated parse (the log's own cost: writer, fdatasyncs, wake-ups).
#include <benchmark/benchmark.h>
#include <stdlib.h>
#include <sys/resource.h>

#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/metrics.h"
#include "log/log.h"
#include "log/record_batch.h"

namespace {

using joule::MetricsRegistry;
using joule::Status;
using joule::StatusCode;
using joule::log::Log;
using joule::log::LogOptions;

// The shape under test can be changed without rebuilding, for interleaved A/B runs:
// JOULE_LOG_BENCH_PARTITIONS (default 8), JOULE_LOG_BENCH_IN_FLIGHT
// (LogOptions::max_rounds_in_flight), JOULE_LOG_BENCH_WINDOW_US (group-commit window).
int64_t EnvOr(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoll(v, nullptr, 10) : fallback;
}
const uint32_t kPartitions = static_cast<uint32_t>(EnvOr("JOULE_LOG_BENCH_PARTITIONS", 8));

std::string MakeTempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "joule-log-bench-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) std::abort();
  return tmpl;
}

std::vector<std::string> MakeBatch(size_t n) {
  std::vector<std::string> batch;
  for (size_t i = 0; i < n; ++i) {
    std::string r = "{\"device_id\":\"dev-" + std::to_string(i) +
                    "\",\"timestamp\":1732800000000,\"metrics\":{\"power_w\":";
    while (r.size() < 150) r.push_back('1');
    batch.push_back(std::move(r));
  }
  return batch;
}

struct BenchLog {
  std::string dir = MakeTempDir();
  MetricsRegistry metrics;
  std::unique_ptr<Log> log;

  explicit BenchLog(bool fsync) {
    LogOptions options;
    options.dir = dir;
    options.partitions = kPartitions;
    options.fsync = fsync;
    options.max_rounds_in_flight =
        static_cast<uint32_t>(EnvOr("JOULE_LOG_BENCH_IN_FLIGHT", options.max_rounds_in_flight));
    options.group_commit_window_ns =
        1000 * EnvOr("JOULE_LOG_BENCH_WINDOW_US", options.group_commit_window_ns / 1000);
    auto opened = Log::Open(options, &metrics);
    if (!opened.ok()) std::abort();
    log = std::move(*opened);
  }
  ~BenchLog() {
    log.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  void Report(benchmark::State& state) {
    auto* per_fsync = metrics.GetHistogram("joule_log_records_per_fsync", "", {});
    auto* latency = metrics.GetHistogram("joule_log_append_latency_seconds", "", {});
    state.counters["fsyncs"] = static_cast<double>(per_fsync->Count());
    state.counters["records_per_fsync"] =
        per_fsync->Count() ? per_fsync->Sum() / static_cast<double>(per_fsync->Count()) : 0;
    state.counters["mean_ack_us"] =
        latency->Count() ? 1e6 * latency->Sum() / static_cast<double>(latency->Count()) : 0;
  }
};

void BM_LogAppendPipelined(benchmark::State& state) {
  const size_t batch_size = static_cast<size_t>(state.range(0));
  BenchLog bench(state.range(1) != 0);
  const std::vector<std::string> batch = MakeBatch(batch_size);
  uint32_t partition = 0;
  int64_t records = 0;
  for (auto _ : state) {
    for (;;) {
      Status st = bench.log->Append(partition, batch, nullptr);
      if (st.ok()) break;
      if (st.code() != StatusCode::kUnavailable) std::abort();
      (void)bench.log->Flush();  // backpressure: wait for the queue to drain
    }
    partition = (partition + 1) % kPartitions;
    records += static_cast<int64_t>(batch_size);
  }
  (void)bench.log->Flush();  // count time until everything is durable
  state.SetItemsProcessed(records);
  state.SetBytesProcessed(records * 150);
  bench.Report(state);
}
BENCHMARK(BM_LogAppendPipelined)
    ->ArgNames({"batch", "fsync"})
    ->ArgsProduct({{1, 100, 1000}, {1, 0}})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

// Shared by the threads of one closed-loop run.
BenchLog* g_closed_loop = nullptr;

void BM_LogAppendClosedLoop(benchmark::State& state) {
  const size_t batch_size = static_cast<size_t>(state.range(0));
  if (state.thread_index() == 0) g_closed_loop = new BenchLog(/*fsync=*/true);
  const std::vector<std::string> batch = MakeBatch(batch_size);
  const uint32_t partition = static_cast<uint32_t>(state.thread_index()) % kPartitions;
  std::mutex mu;
  std::condition_variable cv;
  for (auto _ : state) {
    bool done = false;
    Status st = g_closed_loop->log->Append(partition, batch, [&](Status, auto) {
      std::lock_guard<std::mutex> l(mu);
      done = true;
      cv.notify_one();
    });
    if (!st.ok()) std::abort();
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] { return done; });
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * batch_size));
  if (state.thread_index() == 0) {
    g_closed_loop->Report(state);
    delete g_closed_loop;
    g_closed_loop = nullptr;
  }
}
BENCHMARK(BM_LogAppendClosedLoop)
    ->ArgNames({"batch"})
    ->Arg(1)
    ->Arg(100)
    ->Threads(1)
    ->Threads(8)
    ->Threads(32)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

double ProcessCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6;
}

// Burns `d` of this thread's CPU time (reading the CPU clock, a system call, every ~20 µs).
void SpinFor(std::chrono::microseconds d) {
  timespec t0{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
  volatile uint64_t sink = 0;
  for (;;) {
    for (int i = 0; i < 20000; ++i) sink = sink + static_cast<uint64_t>(i);
    timespec t{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    if ((t.tv_sec - t0.tv_sec) * 1'000'000'000LL + (t.tv_nsec - t0.tv_nsec) >= d.count() * 1000) {
      return;
    }
  }
}

BenchLog* g_ingest_shape = nullptr;
double g_ingest_cpu0 = 0;

void BM_LogIngestShape(benchmark::State& state) {
  constexpr size_t kRecords = 1000;
  const auto work = std::chrono::microseconds(state.range(0));
  if (state.thread_index() == 0) {
    g_ingest_shape = new BenchLog(/*fsync=*/state.range(1) != 0);
    g_ingest_cpu0 = ProcessCpuSeconds();
  }
  const std::string record(100, 'r');
  std::mutex mu;
  std::condition_variable cv;
  for (auto _ : state) {
    SpinFor(work);
    int remaining = kPartitions;
    for (uint32_t p = 0; p < kPartitions; ++p) {
      joule::log::RecordBatch batch;
      for (size_t i = p; i < kRecords; i += kPartitions) batch.Add(record);
      Status st = g_ingest_shape->log->AppendBatch(p, std::move(batch), [&](Status, auto) {
        std::lock_guard<std::mutex> l(mu);
        if (--remaining == 0) cv.notify_one();
      });
      if (!st.ok()) std::abort();
    }
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] { return remaining == 0; });
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kRecords));
  if (state.thread_index() == 0) {
    g_ingest_shape->Report(state);
    auto* rounds = g_ingest_shape->metrics.GetHistogram("joule_log_commit_phase_seconds", "", {},
                                                        {{"phase", "write"}});
    const double batches = static_cast<double>(state.iterations()) * state.threads();
    state.counters["rounds"] = static_cast<double>(rounds->Count());
    state.counters["batches_per_round"] =
        rounds->Count() ? batches / static_cast<double>(rounds->Count()) : 0;
    state.counters["log_cpu_us_per_batch"] =
        1e6 * (ProcessCpuSeconds() - g_ingest_cpu0) / batches - static_cast<double>(work.count());
    delete g_ingest_shape;
    g_ingest_shape = nullptr;
  }
}
BENCHMARK(BM_LogIngestShape)
    ->ArgNames({"work_us", "fsync"})
    ->ArgsProduct({{1000}, {1, 0}})
    ->Threads(4)
    ->Threads(16)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();

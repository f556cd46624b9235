// The raw archive's per-event CPU cost, piece by piece (src/store/archive/README.md).
//
// Data: the harness's fleet shape (bench/harness/gen_data.py): 10k devices `dev-NNNNN` at
// 1 Hz, time-major, each event with power_w (2 decimals), voltage_v (1), current_a (3) and
// a cumulative energy_wh counter (3), received_at a few ms after the event time; encoded
// as log payloads (model::EncodeEvent), the archiver's input.
//
// BM_DecodeEvent      model::DecodeEvent of a payload into a reused Event
// BM_DecodeEventView  store::DecodeEventView: views into the payload, no copies
// BM_ArchiveRow       store::ArchiveRowEncoder of a decoded event (row JSON only)
// BM_Zstd/L/K/W       zstd level L of the rows, K KiB per call, window log W (0 = the
//                     level's own; the writer: 1/32/17)
// BM_WriterAdd        the archiver's whole per-event path: payload -> DecodeEventView ->
//                     ArchiveWriter::Add
//                     (row, zstd, writes to a temp dir; Seal/fsync outside the timing)
// BM_WriterBackfill/N/S  out-of-order traffic driven as the archiver drives the writer
//                     (Add, and Seal whenever SealDue), seals and fsyncs included, in a
//                     temp dir: N events of the fleet's rows with new timestamps. S = 0:
//                     uniformly random over 6 days (144 hours); S = 1: 60 devices each
//                     uploading its backlog in time order (1 a minute) from its own start
//                     hour, interleaved. Counters: files published, rounds, events/s (wall).
//
// items_per_second = events. Instructions per event (the shared machine's wall clock is
// noisy): callgrind's total / N with
//   JOULE_BENCH_ITERATIONS=N valgrind --tool=callgrind --toggle-collect='*BM_WriterAdd*'
//     build/ci/bench/archive_bench --benchmark_filter=BM_WriterAdd
#include <benchmark/benchmark.h>
#include <stdlib.h>
#include <zstd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "model/event.h"
#include "store/archive/archive_row.h"
#include "store/archive/archive_writer.h"
#include "store/archive/event_view.h"

namespace {

using joule::model::Event;

constexpr int kDevices = 10'000;
constexpr int kSeconds = 6;
constexpr int64_t kStartNs = 1'764'358'200'000'000'000;  // 2025-11-28T19:30:00Z

double Round(double v, int decimals) {
  const double f = std::pow(10.0, decimals);
  return std::round(v * f) / f;
}

// Log payloads of kDevices × kSeconds events, time-major.
const std::vector<std::string>& Payloads() {
  static const std::vector<std::string> payloads = [] {
    std::mt19937_64 rnd(42);
    std::uniform_real_distribution<double> base_d(20, 900), phase_d(0, 6.28), meter_d(1000, 90000),
        jitter_d(0, 40);
    std::vector<double> base(kDevices), phase(kDevices), meter(kDevices);
    for (int i = 0; i < kDevices; ++i) {
      base[i] = base_d(rnd);
      phase[i] = phase_d(rnd);
      meter[i] = Round(meter_d(rnd), 2);
    }
    std::vector<std::string> out;
    out.reserve(kDevices * kSeconds);
    Event e;
    char id[16];
    for (int s = 0; s < kSeconds; ++s) {
      for (int i = 0; i < kDevices; ++i) {
        const double p = Round(base[i] * (1 + 0.3 * std::sin(phase[i] + s / 30.0)), 2);
        const double v = Round(230 + 3 * std::sin(phase[i] + s / 97.0), 1);
        const double c = Round(p / v, 3);
        meter[i] = Round(meter[i] + p / 3600.0, 3);
        std::snprintf(id, sizeof id, "dev-%05d", i);
        e.device_id = id;
        e.timestamp_ns = kStartNs + int64_t{s} * 1'000'000'000;
        e.received_at_ns = e.timestamp_ns + static_cast<int64_t>(jitter_d(rnd) * 1e6);
        e.metrics = {{"power_w", p}, {"voltage_v", v}, {"current_a", c}, {"energy_wh", meter[i]}};
        std::string payload;
        joule::model::EncodeEvent(e, &payload);
        out.push_back(std::move(payload));
      }
    }
    return out;
  }();
  return payloads;
}

const std::vector<Event>& Events() {
  static const std::vector<Event> events = [] {
    std::vector<Event> out;
    for (const auto& p : Payloads()) {
      Event e;
      if (!joule::model::DecodeEvent(p, &e).ok()) std::abort();
      out.push_back(std::move(e));
    }
    return out;
  }();
  return events;
}

void BM_DecodeEvent(benchmark::State& state) {
  const auto& payloads = Payloads();
  Event e;
  size_t i = 0;
  for (auto _ : state) {
    if (!joule::model::DecodeEvent(payloads[i], &e).ok()) std::abort();
    benchmark::DoNotOptimize(e.metrics.data());
    if (++i == payloads.size()) i = 0;
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_DecodeEventView(benchmark::State& state) {
  const auto& payloads = Payloads();
  joule::store::EventView view;
  Event fallback;
  size_t i = 0;
  for (auto _ : state) {
    if (!joule::store::DecodeEventView(payloads[i], &view, &fallback).ok()) std::abort();
    benchmark::DoNotOptimize(view.metrics.data());
    if (++i == payloads.size()) i = 0;
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_ArchiveRow(benchmark::State& state) {
  const auto& events = Events();
  joule::store::ArchiveRowEncoder encoder;
  std::string out;
  size_t i = 0;
  for (auto _ : state) {
    encoder.Append(events[i], &out);
    if (out.size() >= (32 << 10)) out.clear();
    if (++i == events.size()) i = 0;
  }
  benchmark::DoNotOptimize(out.data());
  state.SetItemsProcessed(state.iterations());
}

// The rows of all events, as one NDJSON text.
const std::string& Rows() {
  static const std::string rows = [] {
    std::string out;
    for (const auto& e : Events()) joule::store::AppendArchiveRow(e, &out);
    return out;
  }();
  return rows;
}

void BM_Zstd(benchmark::State& state) {
  const std::string& rows = Rows();
  const size_t chunk = static_cast<size_t>(state.range(1)) << 10;
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, static_cast<int>(state.range(0)));
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
  if (state.range(2) > 0) {
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_windowLog, static_cast<int>(state.range(2)));
  }
  std::vector<char> buf(ZSTD_CStreamOutSize());
  uint64_t in_bytes = 0, out_bytes = 0;
  for (auto _ : state) {
    for (size_t pos = 0; pos < rows.size(); pos += chunk) {
      const size_t n = std::min(chunk, rows.size() - pos);
      ZSTD_inBuffer in{rows.data() + pos, n, 0};
      while (in.pos < in.size) {
        ZSTD_outBuffer out{buf.data(), buf.size(), 0};
        ZSTD_compressStream2(cctx, &out, &in, ZSTD_e_continue);
        out_bytes += out.pos;
      }
    }
    size_t left;
    do {
      ZSTD_inBuffer in{nullptr, 0, 0};
      ZSTD_outBuffer out{buf.data(), buf.size(), 0};
      left = ZSTD_compressStream2(cctx, &out, &in, ZSTD_e_end);
      out_bytes += out.pos;
    } while (left != 0);
    in_bytes += rows.size();
  }
  ZSTD_freeCCtx(cctx);
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(Events().size()));
  state.SetBytesProcessed(static_cast<int64_t>(in_bytes));
  state.counters["ratio"] = out_bytes ? static_cast<double>(in_bytes) / out_bytes : 0;
  state.counters["row_bytes"] = static_cast<double>(rows.size()) / Events().size();
}

void BM_WriterAdd(benchmark::State& state) {
  const auto& payloads = Payloads();
  std::string tmpl =
      (std::filesystem::temp_directory_path() / "joule-archive-bench-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) std::abort();
  joule::store::ArchiveWriterOptions options;
  options.root = tmpl;
  options.max_file_bytes = 1ull << 40;
  options.max_file_age_ns = int64_t{1} << 62;
  auto writer = joule::store::ArchiveWriter::Open(options);
  if (!writer.ok()) std::abort();
  uint64_t offset = 0;
  size_t i = 0;
  joule::store::EventView view;
  Event fallback;
  for (auto _ : state) {
    if (!joule::store::DecodeEventView(payloads[i], &view, &fallback).ok()) std::abort();
    if (!(*writer)->Add(0, offset++, view).ok()) std::abort();
    if (++i == payloads.size()) {
      i = 0;
      state.PauseTiming();
      if (!(*writer)->Seal().ok()) std::abort();
      state.ResumeTiming();
    }
  }
  if (!(*writer)->Seal().ok()) std::abort();
  state.SetItemsProcessed(state.iterations());
  state.counters["bytes_per_event"] =
      static_cast<double>((*writer)->stats().bytes_published.load()) / state.iterations();
  writer->reset();
  std::filesystem::remove_all(tmpl);
}

void BM_WriterBackfill(benchmark::State& state) {
  const auto& events = Events();
  const int64_t n = state.range(0);
  const int64_t shape = state.range(1);
  std::mt19937_64 rnd(7);
  std::vector<std::string> payloads;
  payloads.reserve(static_cast<size_t>(n));
  constexpr int64_t kSpanNs = 6 * 24 * int64_t{3'600'000'000'000};
  for (int64_t i = 0; i < n; ++i) {
    Event e = events[static_cast<size_t>(i) % events.size()];
    if (shape == 0) {
      e.timestamp_ns = kStartNs + static_cast<int64_t>(rnd() % kSpanNs);
    } else {  // device i % 60, its (i / 60)-th reading, from its own start hour
      const int64_t device = i % 60;
      e.device_id = "backlog-" + std::to_string(device);
      e.timestamp_ns = kStartNs + device * 3'600'000'000'000 + (i / 60) * 60'000'000'000;
    }
    e.received_at_ns = kStartNs + kSpanNs + i * 1'000'000;
    std::string payload;
    joule::model::EncodeEvent(e, &payload);
    payloads.push_back(std::move(payload));
  }
  uint64_t files = 0;
  uint64_t rounds = 0;
  uint64_t bytes = 0;
  for (auto _ : state) {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "joule-archive-bench-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) std::abort();
    joule::store::ArchiveWriterOptions options;  // the archiver's defaults
    options.root = tmpl;
    auto writer = joule::store::ArchiveWriter::Open(options);
    if (!writer.ok()) std::abort();
    joule::store::EventView view;
    Event fallback;
    for (int64_t i = 0; i < n; ++i) {
      if (!joule::store::DecodeEventView(payloads[static_cast<size_t>(i)], &view, &fallback).ok()) {
        std::abort();
      }
      if (!(*writer)->Add(0, static_cast<uint64_t>(i), view).ok()) std::abort();
      if ((*writer)->SealDue()) {
        if (!(*writer)->Seal().ok()) std::abort();
        ++rounds;
      }
    }
    if (!(*writer)->Seal().ok()) std::abort();
    ++rounds;
    files += (*writer)->stats().files_published.load();
    bytes += (*writer)->stats().bytes_published.load();
    state.PauseTiming();
    writer->reset();
    std::filesystem::remove_all(tmpl);
    state.ResumeTiming();
  }
  const double it = static_cast<double>(state.iterations());
  state.SetItemsProcessed(state.iterations() * n);
  state.counters["files"] = static_cast<double>(files) / it;
  state.counters["rounds"] = static_cast<double>(rounds) / it;
  state.counters["bytes_per_file"] = files ? static_cast<double>(bytes) / files : 0;
}

}  // namespace

int main(int argc, char** argv) {
  // The data set is built before any benchmark, so a callgrind run with
  // --toggle-collect='*BM_*' counts only the measured work.
  Rows();
  // JOULE_BENCH_ITERATIONS=N: exactly N iterations each (instructions per event from
  // callgrind's total / N; google-benchmark 1.7 has no --benchmark_min_time=Nx).
  const char* fixed = std::getenv("JOULE_BENCH_ITERATIONS");
  const auto n = fixed ? static_cast<benchmark::IterationCount>(std::atoll(fixed)) : 0;
  auto reg = [n](const char* name, void (*fn)(benchmark::State&)) {
    auto* b = benchmark::RegisterBenchmark(name, fn);
    if (n > 0) b->Iterations(n);
    return b;
  };
  reg("BM_DecodeEvent", BM_DecodeEvent);
  reg("BM_DecodeEventView", BM_DecodeEventView);
  reg("BM_ArchiveRow", BM_ArchiveRow);
  reg("BM_Zstd", BM_Zstd)
      ->Args({1, 32, 0})
      ->Args({1, 32, 17})
      ->Args({1, 128, 17})
      ->Args({1, 4, 17})
      ->Args({-1, 32, 17})
      ->Unit(benchmark::kMillisecond);
  reg("BM_WriterAdd", BM_WriterAdd);
  reg("BM_WriterBackfill", BM_WriterBackfill)
      ->Args({20'000, 0})
      ->Args({3'600, 1})
      ->Args({505'200, 0})
      ->Iterations(1)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

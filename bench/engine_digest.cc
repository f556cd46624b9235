// engine_digest: runs the window engine over fixed, seeded workloads (in order, jittered
// within the out-of-orderness bound, late within and beyond allowed lateness, duplicates
// with and without event ids, counter resets, gaps, new metrics appearing, silent devices,
// checkpoint save → restore mid-stream) and prints one 64-bit digest of every emitted record
// (all fields, bitwise) per workload. Two builds of the engine that print the same digests
// emit identical records: the check used when the engine's internals are rewritten.
#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "model/event.h"
#include "stream/window_engine.h"

namespace {

using joule::kNanosPerSecond;
using joule::model::AggregateRecord;
using joule::model::Event;
using joule::stream::EngineOptions;
using joule::stream::RecordSink;
using joule::stream::WindowEngine;

// FNV-1a over a record's fields, bitwise.
struct Hasher {
  uint64_t h = 0xcbf29ce484222325ULL;
  void Mix(const void* p, size_t len) {
    const auto* c = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < len; ++i) {
      h ^= c[i];
      h *= 0x100000001b3ULL;
    }
  }
  template <typename T>
  void Fixed(T v) {
    Mix(&v, sizeof(T));
  }
  void Str(const std::string& s) {
    Fixed(s.size());
    Mix(s.data(), s.size());
  }
  void Record(const AggregateRecord& r, bool with_version) {
    Str(r.device_id);
    Fixed(static_cast<int>(r.resolution));
    Fixed(r.window_start_ns);
    Fixed(r.window_end_ns);
    Fixed(r.final);
    if (with_version) Fixed(r.version);
    Fixed(r.count);
    Fixed(r.metrics.size());
    for (const auto& m : r.metrics) {
      Str(m.name);
      Fixed(static_cast<int>(m.kind));
      Fixed(m.count);
      if (m.count > 0) {
        Fixed(m.min);
        Fixed(m.max);
        Fixed(m.sum);
        Fixed(m.first);
        Fixed(m.last);
      }
      Fixed(m.energy_wh);
      Fixed(m.covered_ns);
      Fixed(m.delta);
      Fixed(m.resets);
    }
    Str(r.timezone);
    Str(r.local_date);
  }
};

struct DigestSink : RecordSink {
  Hasher all;  // every record, in emission order
  uint64_t n = 0;
  // The last final record of every window, without its version: what a sink that keeps the
  // highest version ends up holding, independent of when each record was emitted.
  std::map<std::tuple<std::string, int, int64_t>, uint64_t> finals;
  void Emit(const AggregateRecord& r) override {
    ++n;
    all.Record(r, true);
    if (r.final && dump != nullptr) {
      std::string line = r.device_id + " " + std::to_string(static_cast<int>(r.resolution)) + " " +
                         std::to_string(r.window_start_ns) + " n=" + std::to_string(r.count);
      char buf[256];
      for (const auto& m : r.metrics) {
        std::snprintf(buf, sizeof buf, " %s:%" PRIu64 ",%a,%a,%a,%a,%a,%a,%" PRId64 ",%a,%" PRIu64,
                      m.name.c_str(), m.count, m.min, m.max, m.sum, m.first, m.last, m.energy_wh,
                      m.covered_ns, m.delta, m.resets);
        line += buf;
      }
      dumped[{r.device_id, static_cast<int>(r.resolution), r.window_start_ns}] = line;
    }
    if (r.final) {
      Hasher f;
      f.Record(r, false);
      finals[{r.device_id, static_cast<int>(r.resolution), r.window_start_ns}] = f.h;
    }
  }
  // DIGEST_DUMP=DIR: the last final record of every window as text, DIR/<workload>.txt.
  const char* dump = std::getenv("DIGEST_DUMP");
  std::map<std::tuple<std::string, int, int64_t>, std::string> dumped;
  void WriteDump(const char* workload) const {
    if (dump == nullptr) return;
    std::string path = std::string(dump) + "/" + workload + ".txt";
    FILE* f = std::fopen(path.c_str(), "w");
    if (f == nullptr) return;
    for (const auto& [key, line] : dumped) std::fprintf(f, "%s\n", line.c_str());
    std::fclose(f);
  }
  uint64_t FinalsDigest() const {
    Hasher h;
    for (const auto& [key, v] : finals) h.Fixed(v);
    return h.h;
  }
};

struct Zones : joule::stream::TimezoneProvider {
  std::optional<std::string> TimezoneOf(std::string_view id) override {
    static const char* kZones[] = {
        "UTC",          "America/New_York", "Asia/Kolkata", "Asia/Kathmandu", "Australia/Lord_Howe",
        "Europe/Berlin"};
    return kZones[std::hash<std::string_view>{}(id) % 6];
  }
};

struct Workload {
  const char* name;
  int devices;
  int seconds;
  bool jitter;       // shuffle within the out-of-orderness bound
  double late;       // share of events delayed beyond the watermark
  double very_late;  // share delayed beyond allowed lateness
  double dup;        // share sent twice
  bool event_ids;
  bool checkpoint;  // save → restore into a fresh engine every 97 simulated seconds
  size_t batch;     // 0 = Process per event
};

void Run(const Workload& wl) {
  EngineOptions options;
  options.allowed_lateness_ns = 600 * kNanosPerSecond;
  Zones zones;
  auto engine = std::make_unique<WindowEngine>(options, &zones);
  DigestSink sink;
  std::mt19937_64 rng(12345);
  std::uniform_real_distribution<double> u(0, 1);
  const int64_t start = 1793420000LL * kNanosPerSecond;  // 2026-11-01, a DST change
  struct Pending {
    int64_t arrive;
    Event e;
  };
  std::vector<Pending> queue;
  std::vector<double> meter(static_cast<size_t>(wl.devices), 1000);
  uint64_t eid = 0;
  for (int s = 0; s < wl.seconds; ++s) {
    for (int d = 0; d < wl.devices; ++d) {
      if (d % 13 == 5 && (s / 200) % 3 == 1) continue;  // silent stretches
      Event e;
      e.device_id = "dev-" + std::to_string(d);
      const int64_t t = start + static_cast<int64_t>(s) * kNanosPerSecond +
                        static_cast<int64_t>(d) * (kNanosPerSecond / wl.devices);
      e.timestamp_ns = t;
      const double p = 100 + 80 * std::sin(s * 0.013 + d);
      meter[static_cast<size_t>(d)] += p / 3600;
      if (d % 17 == 3 && s % 301 == 300) meter[static_cast<size_t>(d)] = 3;   // reset
      if (d % 11 == 2 && s % 50 < 2) meter[static_cast<size_t>(d)] *= 0.995;  // noise dip
      e.metrics = {{"power_w", p}, {"voltage_v", 230 + u(rng)}, {"current_a", p / 230}};
      if (d % 5 != 4) e.metrics.push_back({"energy_wh", meter[static_cast<size_t>(d)]});
      if (s > 400 && d % 7 == 1) e.metrics.push_back({"temp_c", 20 + u(rng)});  // new metric
      if (d % 9 == 8) std::swap(e.metrics[0], e.metrics[1]);                    // other order
      if (wl.event_ids) e.event_id = "e" + std::to_string(eid++);
      int64_t arrive = t;
      if (d % 19 == 7 && s % 400 < 350 && s % 400 > 300) continue;  // gap over max_gap
      if (wl.jitter) arrive += static_cast<int64_t>(u(rng) * 8e9);
      double x = u(rng);
      if (x < wl.late) {
        arrive += static_cast<int64_t>((15 + u(rng) * 300) * 1e9);
      } else if (x < wl.late + wl.very_late) {
        arrive += static_cast<int64_t>((700 + u(rng) * 300) * 1e9);
      }
      e.received_at_ns = arrive + 20000000;
      if (u(rng) < wl.dup) queue.push_back({arrive + static_cast<int64_t>(u(rng) * 3e9), e});
      queue.push_back({arrive, std::move(e)});
    }
    // Deliver everything that has arrived by the end of this second, in arrival order.
    const int64_t now = start + static_cast<int64_t>(s + 1) * kNanosPerSecond;
    std::stable_sort(queue.begin(), queue.end(),
                     [](const Pending& a, const Pending& b) { return a.arrive < b.arrive; });
    size_t k = 0;
    std::vector<Event> batch;
    while (k < queue.size() && queue[k].arrive < now) batch.push_back(queue[k++].e);
    queue.erase(queue.begin(), queue.begin() + static_cast<ptrdiff_t>(k));
    if (wl.batch == 0) {
      for (const Event& e : batch) engine->Process(e, now - 1, &sink);
    } else {
      for (size_t i = 0; i < batch.size(); i += wl.batch) {
        engine->ProcessBatch(batch.data() + i, std::min(wl.batch, batch.size() - i), now - 1,
                             &sink);
      }
    }
    engine->Tick(now, &sink);
    if (wl.checkpoint && s % 97 == 96) {
      std::string state;
      if (!engine->SaveState(&state).ok()) std::abort();
      engine = std::make_unique<WindowEngine>(options, &zones);
      if (!engine->RestoreState(state).ok()) std::abort();
      std::string again;
      if (!engine->SaveState(&again).ok() || again != state) {
        std::printf("%s: save→restore→save not byte-stable\n", wl.name);
        std::exit(1);
      }
    }
  }
  for (int k = 0; k < 200; ++k) {
    engine->Tick(start + static_cast<int64_t>(wl.seconds + 1 + k * 10) * kNanosPerSecond, &sink);
  }
  auto st = engine->stats();
  sink.all.Fixed(st.events);
  sink.all.Fixed(st.duplicates);
  sink.all.Fixed(st.late_updates);
  sink.all.Fixed(st.late_dropped);
  sink.all.Fixed(st.records_emitted);
  sink.WriteDump(wl.name);
  std::printf("%-12s records %9" PRIu64 " events %8" PRIu64 " late %6" PRIu64 " dropped %6" PRIu64
              " dups %6" PRIu64 " digest %016" PRIx64 " finals %6zu %016" PRIx64 "\n",
              wl.name, sink.n, st.events, st.late_updates, st.late_dropped, st.duplicates,
              sink.all.h, sink.finals.size(), sink.FinalsDigest());
}

// The stream_bench workload (devices at 1 Hz, power/voltage/current/energy, batches of
// `batch`, Tick once per simulated second), with the measured part in its own function so
// `valgrind --tool=callgrind --toggle-collect=*MeasuredPhase*` counts only steady state.
struct CountingSink : RecordSink {
  void Emit(const AggregateRecord& r) override {
    ++n;
    metrics += r.metrics.size();
  }
  uint64_t n = 0, metrics = 0;
};

struct Profile {
  int devices;
  size_t batch;
  WindowEngine engine;
  CountingSink sink;
  std::vector<Event> events;
  int64_t start = 1795000000LL * kNanosPerSecond;
  int64_t second = 0;
  bool jitter = false;  // as stream_bench's OutOfOrder: consecutive seconds swapped
  bool ids = false;     // every event carries a unique event_id (de-duplication by id)
  int every = 1;        // each device sends once every `every` seconds (staggered by device)
  std::vector<Event> due;
  std::vector<double> meter;  // each device's energy counter (cumulative, as a meter's)
  uint64_t next_id = 0;

  Profile(int n, size_t b, EngineOptions options)
      : devices(n),
        batch(b),
        engine(std::move(options)),
        events(static_cast<size_t>(n)),
        meter(static_cast<size_t>(n), 1000.0) {
    for (int i = 0; i < n; ++i) {
      auto& e = events[static_cast<size_t>(i)];
      e.device_id = "plug-" + std::to_string(100000 + i);
      e.metrics = {{"power_w", 0}, {"voltage_v", 0}, {"current_a", 0}, {"energy_wh", 0}};
    }
  }
  void Second() {
    for (size_t i = 0; i < events.size(); ++i) {
      auto& e = events[i];
      const double p =
          100.0 + 50.0 * std::sin(static_cast<double>(second + static_cast<int64_t>(i)) * 0.01);
      e.timestamp_ns =
          start + second * kNanosPerSecond + static_cast<int64_t>(i) * (kNanosPerSecond / devices);
      if (jitter) e.timestamp_ns += (second & 1) == 0 ? kNanosPerSecond : -kNanosPerSecond;
      e.received_at_ns = e.timestamp_ns + 50 * 1000 * 1000;
      if (ids) e.event_id = "ev-" + std::to_string(next_id++);
      e.metrics[0].value = p;
      e.metrics[1].value = 230.0 + static_cast<double>(i % 7) * 0.1;
      e.metrics[2].value = p / 230.0;
      // Only the devices that send this second (`every`) read their meter.
      if (every == 1 || (static_cast<int64_t>(i) + second) % every == 0)
        meter[i] += p * every / 3600.0;
      e.metrics[3].value = meter[i];
    }
    std::vector<Event>* send = &events;
    if (every > 1) {
      due.clear();
      for (size_t i = 0; i < events.size(); ++i) {
        if ((static_cast<int64_t>(i) + second) % every == 0) due.push_back(events[i]);
      }
      send = &due;
    }
    for (size_t i = 0; i < send->size(); i += batch) {
      const size_t n = std::min(batch, send->size() - i);
      engine.ProcessBatch(&(*send)[i], n, (*send)[i + n - 1].received_at_ns, &sink);
    }
    ++second;
    engine.Tick(start + second * kNanosPerSecond + kNanosPerSecond / 2, &sink);
  }
};

__attribute__((noinline)) void MeasuredPhase(Profile& p, int seconds) {
  for (int s = 0; s < seconds; ++s) p.Second();
}

}  // namespace

int main(int argc, char** argv) {
  // --profile DEVICES BATCH WARM_S MEASURE_S [OPTIONS], OPTIONS a comma-separated list of
  // jitter, ids, lateness=SECONDS (stream.allowed_lateness; default the engine's, 1 h),
  // every=N (each device sends every N seconds instead of every second)
  if ((argc == 6 || argc == 7) && std::strcmp(argv[1], "--profile") == 0) {
    const std::string_view opts = argc == 7 ? argv[6] : "";
    EngineOptions options;
    if (const size_t at = opts.find("lateness="); at != std::string_view::npos) {
      options.allowed_lateness_ns = std::atoll(argv[6] + at + 9) * kNanosPerSecond;
    }
    Profile p(std::atoi(argv[2]), static_cast<size_t>(std::atoi(argv[3])), std::move(options));
    p.jitter = opts.find("jitter") != std::string_view::npos;
    p.ids = opts.find("ids") != std::string_view::npos;
    if (const size_t at = opts.find("every="); at != std::string_view::npos) {
      p.every = std::max(1, std::atoi(argv[6] + at + 6));
    }
    for (int s = 0, n = std::atoi(argv[4]); s < n; ++s) p.Second();
    MeasuredPhase(p, std::atoi(argv[5]));
    const auto st = p.engine.stats();
    std::printf("records %" PRIu64 " metrics %" PRIu64 " duplicates %" PRIu64
                " state_bytes %" PRIu64 "\n",
                p.sink.n, p.sink.metrics, st.duplicates, st.state_bytes_estimate);
    return 0;
  }
  const Workload kWorkloads[] = {
      {"in_order", 200, 1500, false, 0, 0, 0, false, false, 0},
      {"batched", 200, 1500, false, 0, 0, 0, false, false, 64},
      {"jitter", 100, 1500, true, 0, 0, 0, false, false, 0},
      {"late", 60, 1500, true, 0.03, 0.01, 0, false, false, 0},
      {"dups", 60, 1500, true, 0.01, 0, 0.05, false, false, 16},
      {"dups_ids", 60, 1500, true, 0.01, 0, 0.05, true, false, 0},
      {"checkpoint", 60, 1500, true, 0.02, 0.005, 0.02, true, true, 8},
  };
  for (const Workload& wl : kWorkloads) Run(wl);
  return 0;
}

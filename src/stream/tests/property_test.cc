// Property test: random streams (shuffled within the out-of-orderness bound, with
// duplicates, optionally with late events and checkpoint/restore in the middle) against
// a deliberately simple reference that computes every window directly from the sorted,
// de-duplicated sample list.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "common/clock.h"
#include "model/aggregate_record.h"
#include "stream/local_day.h"
#include "stream/window_engine.h"

namespace joule::stream {
namespace {

using model::AggregateRecord;
using model::MetricAggregate;
using model::MetricKind;

constexpr int64_t kSec = kNanosPerSecond;

struct RefMetric {
  MetricKind kind = MetricKind::kGauge;
  uint64_t count = 0;
  double min = 0, max = 0, sum = 0, first = 0, last = 0;
  double energy = 0, delta = 0;
  int64_t covered = 0;
  uint64_t resets = 0;
  bool present = false;
};
struct RefWindow {
  int64_t start = 0, end = 0;
  uint64_t count = 0;
  std::map<std::string, RefMetric> metrics;
};
// key: (resolution, start)
using RefResult = std::map<std::pair<int, int64_t>, RefWindow>;

// The reference: straight from the definitions in CONTRACT §2.
RefResult Reference(std::vector<model::Event> events, const EngineOptions& o,
                    const date::time_zone* zone) {
  std::sort(events.begin(), events.end(),
            [](const auto& a, const auto& b) { return a.timestamp_ns < b.timestamp_ns; });
  const int64_t W = o.window_ns;
  auto floor_to = [](int64_t t, int64_t w) { return (t >= 0 ? t / w : (t - w + 1) / w) * w; };
  std::map<int64_t, RefWindow> base;
  auto win = [&](int64_t s) -> RefWindow& {
    RefWindow& w = base[s];
    w.start = s;
    w.end = s + W;
    return w;
  };
  std::map<std::string, std::vector<std::pair<int64_t, double>>> series;
  for (const auto& e : events) {
    RefWindow& w = win(floor_to(e.timestamp_ns, W));
    ++w.count;
    for (const auto& m : e.metrics) {
      RefMetric& r = w.metrics[m.name];
      r.kind = model::DefaultMetricKind(m.name);
      if (r.count == 0) {
        r.min = r.max = r.first = m.value;
      }
      r.min = std::min(r.min, m.value);
      r.max = std::max(r.max, m.value);
      r.last = m.value;
      r.sum += m.value;
      ++r.count;
      r.present = true;
      series[m.name].push_back({e.timestamp_ns, m.value});
    }
  }
  for (const auto& [name, s] : series) {
    MetricKind kind = model::DefaultMetricKind(name);
    if (kind == MetricKind::kGauge) continue;
    double baseline = s.empty() ? 0 : s[0].second;
    for (size_t i = 1; i < s.size(); ++i) {
      auto [t1, v1] = s[i - 1];
      auto [t2, v2] = s[i];
      int64_t dt = t2 - t1;
      if (kind == MetricKind::kPower) {
        if (dt > o.max_gap_ns) continue;
        for (int64_t ws = floor_to(t1, W); ws < t2; ws += W) {
          int64_t a = std::max(t1, ws), b = std::min(t2, ws + W);
          if (b <= a) continue;
          auto p = [&](int64_t x) {
            if (x == t2) return v2;
            return v1 + (v2 - v1) * (static_cast<double>(x - t1) / static_cast<double>(dt));
          };
          RefMetric& r = win(ws).metrics[name];
          r.kind = kind;
          r.present = true;
          r.energy += (p(a) + p(b)) / 2 * static_cast<double>(b - a) / 1e9 / 3600;
          r.covered += b - a;
        }
      } else {
        double inc;
        bool reset = false;
        if (v2 >= baseline) {
          inc = v2 - baseline;
          baseline = v2;
        } else if (v2 >= 0.9 * baseline) {
          inc = 0;
        } else {
          inc = std::max(v2, 0.0);
          reset = true;
          baseline = v2;
        }
        if (reset) {
          RefMetric& r = win(floor_to(t2, W)).metrics[name];
          r.kind = kind;
          r.present = true;
          ++r.resets;
        }
        if (dt > o.max_gap_ns) {
          RefMetric& r = win(floor_to(t2, W)).metrics[name];
          r.kind = kind;
          r.present = true;
          r.delta += inc;
          continue;
        }
        for (int64_t ws = floor_to(t1, W); ws < t2; ws += W) {
          int64_t a = std::max(t1, ws), b = std::min(t2, ws + W);
          if (b <= a) continue;
          RefMetric& r = win(ws).metrics[name];
          r.kind = kind;
          r.present = true;
          r.delta += inc * static_cast<double>(b - a) / static_cast<double>(dt);
        }
      }
    }
  }
  RefResult out;
  for (auto& [s, w] : base) {
    out[{0, s}] = w;
    int64_t hs = floor_to(s, kNanosPerHour);
    LocalDay day = LocalDayOf(zone, s);
    std::pair<int, int64_t> keys[2] = {{1, hs}, {2, day.start_ns}};
    int64_t ends[2] = {hs + kNanosPerHour, day.end_ns};
    for (int k = 0; k < 2; ++k) {
      RefWindow& r = out[keys[k]];
      r.start = keys[k].second;
      r.end = ends[k];
      r.count += w.count;
      for (const auto& [name, m] : w.metrics) {
        RefMetric& rm = r.metrics[name];
        rm.kind = m.kind;
        if (m.count > 0) {
          if (rm.count == 0) {
            rm.min = m.min;
            rm.max = m.max;
            rm.first = m.first;
          }
          rm.min = std::min(rm.min, m.min);
          rm.max = std::max(rm.max, m.max);
          rm.last = m.last;
          rm.count += m.count;
          rm.sum += m.sum;
        }
        rm.energy += m.energy;
        rm.covered += m.covered;
        rm.delta += m.delta;
        rm.resets += m.resets;
        rm.present = rm.present || m.present;
      }
    }
  }
  return out;
}

struct Latest : RecordSink {
  void Emit(const AggregateRecord& r) override {
    auto key = std::make_pair(static_cast<int>(r.resolution), r.window_start_ns);
    auto it = records.find(key);
    if (it != records.end()) {
      EXPECT_GT(r.version, it->second.version);
      if (it->second.final && r.final) ++re_finals;
    }
    records[key] = r;
  }
  std::map<std::pair<int, int64_t>, AggregateRecord> records;
  int re_finals = 0;
};

void Near(double got, double want, const std::string& what) {
  EXPECT_NEAR(got, want, 1e-9 * std::max(std::fabs(want), 1.0)) << what;
}

void Compare(const RefResult& ref, const Latest& got) {
  EXPECT_EQ(ref.size(), got.records.size());
  for (const auto& [key, w] : ref) {
    std::string where = "res " + std::to_string(key.first) + " start " + std::to_string(key.second);
    auto it = got.records.find(key);
    if (it == got.records.end()) {
      ADD_FAILURE() << "missing record " << where;
      continue;
    }
    const AggregateRecord& r = it->second;
    SCOPED_TRACE(where + " " + RecordToJson(r));
    EXPECT_TRUE(r.final);
    EXPECT_EQ(r.window_end_ns, w.end);
    EXPECT_EQ(r.count, w.count);
    size_t present = 0;
    for (const auto& [name, m] : w.metrics) {
      if (!m.present) continue;
      ++present;
      const MetricAggregate* a = r.FindMetric(name);
      if (a == nullptr) {
        ADD_FAILURE() << "missing metric " << name;
        continue;
      }
      EXPECT_EQ(a->count, m.count) << name;
      if (m.count > 0) {
        EXPECT_EQ(a->min, m.min) << name;
        EXPECT_EQ(a->max, m.max) << name;
        EXPECT_EQ(a->first, m.first) << name;
        EXPECT_EQ(a->last, m.last) << name;
        Near(a->sum, m.sum, name + ".sum");
      }
      Near(a->energy_wh, m.energy, name + ".energy");
      EXPECT_EQ(a->covered_ns, m.covered) << name;
      Near(a->delta, m.delta, name + ".delta");
      EXPECT_EQ(a->resets, m.resets) << name;
    }
    EXPECT_EQ(r.metrics.size(), present);
  }
  for (const auto& [key, r] : got.records) {
    if (!ref.count(key)) ADD_FAILURE() << "unexpected record " << RecordToJson(r);
  }
}

class FixedZone : public TimezoneProvider {
 public:
  explicit FixedZone(std::string z) : zone_(std::move(z)) {}
  std::optional<std::string> TimezoneOf(std::string_view) override { return zone_; }

 private:
  std::string zone_;
};

struct Params {
  uint32_t seed;
  bool late;        // some events delayed beyond the out-of-orderness bound
  bool checkpoint;  // save/restore into a fresh engine every so often
  const char* zone;
  int64_t window_s = 60;
};

void RunProperty(const Params& p) {
  SCOPED_TRACE("seed " + std::to_string(p.seed));
  std::mt19937_64 rng(p.seed);
  EngineOptions o;
  o.early_fire_interval_ns = 3 * kSec;
  o.window_ns = p.window_s * kSec;
  // Without late events, keep idle finalization out of the way so that any re-emission of
  // a final record would be a bug (a silent gap shorter than max_gap legitimately updates
  // an idle-finalized window).
  if (!p.late) o.idle_timeout_ns = kNanosPerHour;
  auto uni = [&](double a, double b) { return std::uniform_real_distribution<double>(a, b)(rng); };
  auto chance = [&](double q) { return uni(0, 1) < q; };

  // A random series for one device.
  std::vector<model::Event> events;
  int64_t t = 1795000000LL * kSec + static_cast<int64_t>(uni(0, 3600)) * kSec;
  double meter = uni(0, 1e5);
  const int n = 600 + static_cast<int>(uni(0, 600));
  for (int i = 0; i < n; ++i) {
    double step = chance(0.02) ? uni(200, 900) : uni(0.2, 25);
    t += static_cast<int64_t>(step * 1e9) + 1;
    model::Event e;
    e.device_id = "prop";
    e.timestamp_ns = t;
    if (chance(0.7)) e.event_id = "e" + std::to_string(i);
    if (chance(0.9)) e.metrics.push_back({"power_w", std::round(uni(0, 3000) * 8) / 8});
    if (chance(0.6)) {
      double r = uni(0, 1);
      if (r < 0.05) {
        meter = meter * uni(0.91, 0.999);  // noise dip
      } else if (r < 0.08) {
        meter = uni(0, 50);  // reset
      } else {
        meter += uni(0, 5);
      }
      e.metrics.push_back({"energy_wh", meter});
    }
    if (chance(0.5) || e.metrics.empty()) e.metrics.push_back({"voltage_v", uni(220, 240)});
    std::sort(e.metrics.begin(), e.metrics.end(),
              [](const auto& a, const auto& b) { return a.name < b.name; });
    if (chance(0.5)) std::shuffle(e.metrics.begin(), e.metrics.end(), rng);
    events.push_back(e);
  }

  // Arrival order: shuffled within the bound; some duplicated; some late.
  struct Arrival {
    double key;
    size_t index;
  };
  std::vector<Arrival> order;
  for (size_t i = 0; i < events.size(); ++i) {
    double key = static_cast<double>(events[i].timestamp_ns) +
                 uni(0, 0.999) * static_cast<double>(o.out_of_orderness_ns);
    if (p.late && chance(0.05)) key += uni(10, 1800) * 1e9;  // late, within allowed lateness
    order.push_back({key, i});
    if (chance(0.05)) order.push_back({key + uni(0, 600) * 1e9, i});  // duplicate
  }
  std::sort(order.begin(), order.end(), [](auto& a, auto& b) { return a.key < b.key; });

  FixedZone tz(p.zone);
  auto engine = std::make_unique<WindowEngine>(o, &tz);
  Latest sink;
  int64_t now = 0;
  int64_t last_tick = 0;
  size_t k = 0;
  for (const Arrival& a : order) {
    now = std::max(now, static_cast<int64_t>(a.key) + kSec / 2);
    model::Event e = events[a.index];
    e.received_at_ns = now;
    engine->Process(e, now, &sink);
    if (now - last_tick >= kSec) {
      engine->Tick(now, &sink);
      last_tick = now;
    }
    if (p.checkpoint && ++k % 97 == 0) {
      std::string bytes;
      ASSERT_TRUE(engine->SaveState(&bytes).ok());
      engine = std::make_unique<WindowEngine>(o, &tz);
      Status st = engine->RestoreState(bytes);
      ASSERT_TRUE(st.ok()) << st.ToString();
    }
  }
  // Let the device go idle: everything becomes final.
  for (int i = 0; i < 3; ++i) {
    now += 2 * kNanosPerDay;
    engine->Tick(now, &sink);
  }
  const date::time_zone* zone = ZoneCache().Find(p.zone);
  RefResult ref = Reference(events, o, zone);
  Compare(ref, sink);

  // Invariant: the sum of base-window energies equals the 1h and 1d energies and the
  // integral over the whole series.
  double base = 0, hour = 0, day = 0, integral = 0;
  for (const auto& [key, r] : sink.records) {
    const MetricAggregate* m = r.FindMetric("power_w");
    if (m == nullptr) continue;
    (key.first == 0 ? base : key.first == 1 ? hour : day) += m->energy_wh;
  }
  {
    std::vector<std::pair<int64_t, double>> s;
    for (const auto& e : events) {
      for (const auto& m : e.metrics) {
        if (m.name == "power_w") s.push_back({e.timestamp_ns, m.value});
      }
    }
    std::sort(s.begin(), s.end());
    for (size_t i = 1; i < s.size(); ++i) {
      int64_t dt = s[i].first - s[i - 1].first;
      if (dt <= o.max_gap_ns) integral += (s[i].second + s[i - 1].second) / 2 * dt / 3.6e12;
    }
  }
  Near(base, integral, "sum of base energies");
  Near(hour, integral, "sum of 1h energies");
  Near(day, integral, "sum of 1d energies");

  auto st = engine->stats();
  EXPECT_EQ(st.events, events.size());
  EXPECT_EQ(st.late_dropped, 0u);
  EXPECT_GT(ref.size(), 30u);
  if (p.late) {
    EXPECT_GT(st.late_updates, 0u);
  }
  if (!p.late) {
    EXPECT_EQ(st.late_updates, 0u);
    EXPECT_EQ(sink.re_finals, 0) << "in-bound disorder must not cause final re-emissions";
  }
}

TEST(PropertyTest, ShuffledWithinBound) {
  for (uint32_t seed = 1; seed <= 20; ++seed) RunProperty({seed, false, false, "UTC"});
}

TEST(PropertyTest, LateEventsWithinAllowedLateness) {
  for (uint32_t seed = 100; seed <= 120; ++seed) {
    RunProperty({seed, true, false, "Asia/Kathmandu"});
  }
}

TEST(PropertyTest, CheckpointRestoreMidStream) {
  for (uint32_t seed = 200; seed <= 210; ++seed) {
    RunProperty({seed, seed % 2 == 0, true, "America/New_York"});
  }
}

TEST(PropertyTest, OtherBaseWindows) {
  for (uint32_t seed = 300; seed <= 306; ++seed) {
    RunProperty({seed, seed % 2 == 1, seed % 3 == 0, "Asia/Kolkata", seed % 2 ? 30 : 300});
  }
}

// In-order and shuffled-within-bound input give bit-identical final records.
TEST(PropertyTest, OutOfOrderBitIdentical) {
  std::mt19937_64 rng(7);
  std::vector<model::Event> events;
  int64_t t = 1795000000LL * kSec;
  for (int i = 0; i < 2000; ++i) {
    t += static_cast<int64_t>(std::uniform_real_distribution<double>(0.1, 4)(rng) * 1e9);
    model::Event e;
    e.device_id = "d";
    e.timestamp_ns = t;
    e.metrics = {{"power_w", std::uniform_real_distribution<double>(0, 2000)(rng)},
                 {"energy_wh", static_cast<double>(i) * 0.37}};
    events.push_back(e);
  }
  auto run = [&](const std::vector<model::Event>& in) {
    EngineOptions o;
    WindowEngine engine(o);
    struct Finals : RecordSink {
      void Emit(const AggregateRecord& r) override {
        if (r.final) out.push_back(r);
      }
      std::vector<AggregateRecord> out;
    } sink;
    int64_t now = 0;
    for (const auto& e : in) {
      now = std::max(now, e.timestamp_ns);
      engine.Process(e, now, &sink);
    }
    engine.Tick(now + kNanosPerDay, &sink);
    for (auto& r : sink.out) r.version = 0;  // early firings differ; content must not
    std::sort(sink.out.begin(), sink.out.end(), [](const auto& a, const auto& b) {
      return std::tie(a.resolution, a.window_start_ns) < std::tie(b.resolution, b.window_start_ns);
    });
    return sink.out;
  };
  auto shuffled = events;
  for (size_t i = 0; i + 1 < shuffled.size(); i += 2) {
    if (shuffled[i + 1].timestamp_ns - shuffled[i].timestamp_ns < 5 * kSec) {
      std::swap(shuffled[i], shuffled[i + 1]);
    }
  }
  auto a = run(events), b = run(shuffled);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i], b[i]) << RecordToJson(a[i]);
}

// Two different events (distinct event_ids) with the same timestamp: whatever the arrival
// order, within the out-of-orderness bound, the final records are identical (equal times
// are ordered by value in the histories).
TEST(PropertyTest, EqualTimestampsAnyArrivalOrder) {
  const int64_t t0 = 1795000000LL * kSec;
  auto ev = [&](int64_t t, const char* id, double p, double e) {
    model::Event x;
    x.device_id = "d";
    x.timestamp_ns = t;
    x.event_id = id;
    x.metrics = {{"power_w", p}, {"voltage_v", 200 + p}, {"energy_wh", e}};
    return x;
  };
  const model::Event a = ev(t0, "a", 100, 10), b = ev(t0 + 7 * kSec, "b", 300, 11),
                     c = ev(t0 + 7 * kSec, "c", 200, 12), z = ev(t0 + 9 * kSec, "z", 50, 13);
  auto run = [&](const std::vector<model::Event>& in) {
    WindowEngine engine{EngineOptions{}};
    struct Finals : RecordSink {
      void Emit(const AggregateRecord& r) override {
        if (r.final) out.push_back(r);
      }
      std::vector<AggregateRecord> out;
    } sink;
    int64_t now = t0;
    for (const auto& e : in) engine.Process(e, now += kSec, &sink);
    engine.Tick(now + kNanosPerDay, &sink);
    for (auto& r : sink.out) r.version = 0;
    std::sort(sink.out.begin(), sink.out.end(), [](const auto& x, const auto& y) {
      return std::tie(x.resolution, x.window_start_ns) < std::tie(y.resolution, y.window_start_ns);
    });
    return sink.out;
  };
  const auto want = run({a, b, c, z});
  ASSERT_FALSE(want.empty());
  for (const auto& order : std::vector<std::vector<model::Event>>{
           {a, c, b, z}, {a, z, c, b}, {a, z, b, c}, {c, a, z, b}}) {
    const auto got = run(order);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], want[i]) << RecordToJson(got[i]);
  }
  // All four samples are in the first minute's record.
  const MetricAggregate* p = nullptr;
  for (const auto& m : want[0].metrics) {
    if (m.name == "power_w") p = &m;
  }
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->count, 4u);
  EXPECT_EQ(p->first, 100);
}

}  // namespace
}  // namespace joule::stream

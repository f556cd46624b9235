// Metric registration: a device's metric ids follow first appearance, names are interned
// engine-wide, and events may list their metrics in any order or bring new ones.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/clock.h"
#include "stream/window_engine.h"

namespace joule::stream {
namespace {

struct Collect : RecordSink {
  void Emit(const model::AggregateRecord& r) override { out.push_back(r); }
  std::vector<model::AggregateRecord> out;
};

const model::AggregateRecord* FinalBase(const Collect& c, const std::string& device) {
  const model::AggregateRecord* found = nullptr;
  for (const auto& r : c.out) {
    if (r.device_id == device && r.final && r.resolution == model::Resolution::kBase) found = &r;
  }
  return found;
}

// One event registering 64 new names (the engine-wide name table grows while the event's
// metrics are being looked up), then events listing them in another order.
TEST(MetricTableTest, ManyNewNamesInOneEventAndAnyOrder) {
  WindowEngine engine{EngineOptions{}};
  Collect sink;
  const int64_t t0 = 1795000020LL * kNanosPerSecond;
  for (int d = 0; d < 3; ++d) {
    for (int k = 0; k < 3; ++k) {
      model::Event ev;
      ev.device_id = "dev-" + std::to_string(d);
      ev.timestamp_ns = t0 + k * kNanosPerSecond;
      for (int m = 0; m < 64; ++m) {
        const int id = k % 2 == 0 ? m : 63 - m;  // reversed order every other event
        ev.metrics.push_back(
            {"m" + std::to_string(d) + "_" + std::to_string(id) + "_c", 100.0 * d + id + k});
      }
      engine.Process(ev, ev.timestamp_ns, &sink);
    }
  }
  engine.Tick(t0 + 10 * kNanosPerSecond + EngineOptions{}.idle_timeout_ns, &sink);
  for (int d = 0; d < 3; ++d) {
    const auto* r = FinalBase(sink, "dev-" + std::to_string(d));
    ASSERT_NE(r, nullptr);
    EXPECT_EQ(r->count, 3u);
    ASSERT_EQ(r->metrics.size(), 64u);
    for (int id = 0; id < 64; ++id) {
      const std::string name = "m" + std::to_string(d) + "_" + std::to_string(id) + "_c";
      const auto* m = r->FindMetric(name);
      ASSERT_NE(m, nullptr) << name;
      EXPECT_EQ(m->count, 3u);
      EXPECT_EQ(m->min, 100.0 * d + id);
      EXPECT_EQ(m->max, 100.0 * d + id + 2);
      EXPECT_EQ(m->sum, 3 * (100.0 * d + id) + 3);
    }
  }
}

// A known device's event that starts with names never seen before, followed by its known
// metrics: registering the new names grows the engine's name table in the middle of the
// event's lookups.
TEST(MetricTableTest, NewNamesBeforeKnownOnes) {
  WindowEngine engine{EngineOptions{}};
  Collect sink;
  const int64_t t0 = 1795000020LL * kNanosPerSecond;
  model::Event first;
  first.device_id = "dev";
  first.timestamp_ns = t0;
  first.metrics = {{"x_c", 1}, {"y_c", 2}};
  engine.Process(first, t0, &sink);
  model::Event second = first;
  second.timestamp_ns = t0 + kNanosPerSecond;
  second.metrics.clear();
  for (int m = 0; m < 40; ++m) second.metrics.push_back({"new" + std::to_string(m), 1.0 * m});
  second.metrics.push_back({"x_c", 10});
  second.metrics.push_back({"y_c", 20});
  engine.Process(second, second.timestamp_ns, &sink);
  engine.Tick(t0 + 10 * kNanosPerSecond + EngineOptions{}.idle_timeout_ns, &sink);
  const auto* r = FinalBase(sink, "dev");
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->count, 2u);
  ASSERT_EQ(r->metrics.size(), 42u);
  EXPECT_EQ(r->FindMetric("x_c")->sum, 11);
  EXPECT_EQ(r->FindMetric("y_c")->sum, 22);
  EXPECT_EQ(r->FindMetric("new7")->sum, 7);
  EXPECT_EQ(r->FindMetric("new7")->count, 1u);
}

// A counter's baselines (CONTRACT §2) are stored only once one differs from its reading: a
// meter that only goes up keeps none (8 bytes a sample less), and a noise dip — a reading
// below the baseline but within 10 % of it, which leaves the baseline where it was — stores
// them from then on. The records are the contract's either way.
TEST(MetricTableTest, CounterBaselinesAreStoredOnlyAfterNoise) {
  const int64_t t0 = 1795000020LL * kNanosPerSecond;
  auto run = [&](bool dip, uint64_t* state_bytes) {
    WindowEngine engine{EngineOptions{}};
    Collect sink;
    double meter = 1000;
    for (int k = 0; k < 30; ++k) {
      model::Event ev;
      ev.device_id = "meter";
      ev.timestamp_ns = t0 + k * kNanosPerSecond;
      meter += 10;
      // Reading 10 reads 5 % low once: noise, no increment, the baseline stays at reading 9.
      const double v = dip && k == 10 ? meter * 0.95 : meter;
      ev.metrics.push_back({"energy_wh", v});
      engine.Process(ev, ev.timestamp_ns, &sink);
    }
    *state_bytes = engine.stats().state_bytes_estimate;
    engine.Tick(t0 + 30 * kNanosPerSecond + EngineOptions{}.idle_timeout_ns, &sink);
    const auto* r = FinalBase(sink, "meter");
    EXPECT_NE(r, nullptr);
    return r == nullptr ? model::AggregateRecord{} : *r;
  };
  uint64_t plain_bytes = 0, dip_bytes = 0;
  const model::AggregateRecord plain = run(false, &plain_bytes);
  const model::AggregateRecord dipped = run(true, &dip_bytes);
  ASSERT_NE(plain.FindMetric("energy_wh"), nullptr);
  ASSERT_NE(dipped.FindMetric("energy_wh"), nullptr);
  // 29 increments of 10 (t0 + 20 s .. t0 + 49 s lies in one minute).
  EXPECT_EQ(plain.FindMetric("energy_wh")->delta, 290);
  // With the dip: reading 10 adds nothing and reading 11 adds 20 (from the baseline at 9).
  EXPECT_EQ(dipped.FindMetric("energy_wh")->delta, 290);
  EXPECT_EQ(dipped.FindMetric("energy_wh")->resets, 0u);
  // Once one differed: one chunk of 64 baselines and its chunk table (4 pointers) more.
  EXPECT_EQ(dip_bytes, plain_bytes + 64 * sizeof(double) + 4 * sizeof(double*)) << plain_bytes;
}

}  // namespace
}  // namespace joule::stream

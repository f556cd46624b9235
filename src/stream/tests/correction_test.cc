// WindowEngine::CorrectBaseWindow: a replay's corrected base window reaches the 1h and 1d
// windows the live engine still holds (docs/formats/archive.md, "Replay").
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "common/clock.h"
#include "model/aggregate_record.h"
#include "model/event.h"
#include "stream/window_engine.h"

namespace joule::stream {
namespace {

// The newest version of every key.
struct Latest : RecordSink {
  void Emit(const model::AggregateRecord& r) override {
    auto key = std::make_tuple(r.device_id, static_cast<int>(r.resolution), r.window_start_ns);
    auto it = records.find(key);
    if (it == records.end() || it->second.version < r.version) records[key] = r;
  }
  const model::AggregateRecord* Find(model::Resolution res, int64_t start) const {
    auto it = records.find(std::make_tuple(std::string("d"), static_cast<int>(res), start));
    return it == records.end() ? nullptr : &it->second;
  }
  std::map<std::tuple<std::string, int, int64_t>, model::AggregateRecord> records;
};

constexpr int64_t kT0 = 1795000800LL * kNanosPerSecond;  // 2026-11-18 11:20 UTC

model::Event At(int64_t t, double power, double meter) {
  model::Event e;
  e.device_id = "d";
  e.timestamp_ns = t;
  e.received_at_ns = t;
  e.metrics = {{"power_w", power}, {"energy_wh", meter}, {"voltage_v", 229.0 + power / 1000}};
  return e;
}

void ExpectSameContent(const model::AggregateRecord& got, const model::AggregateRecord& want) {
  SCOPED_TRACE(model::RecordToJson(want));
  EXPECT_EQ(got.count, want.count);
  ASSERT_EQ(got.metrics.size(), want.metrics.size());
  for (size_t i = 0; i < want.metrics.size(); ++i) {
    const auto& g = got.metrics[i];
    const auto& w = want.metrics[i];
    EXPECT_EQ(g.name, w.name);
    EXPECT_EQ(g.count, w.count);
    EXPECT_EQ(g.min, w.min);
    EXPECT_EQ(g.max, w.max);
    EXPECT_EQ(g.first, w.first);
    EXPECT_EQ(g.last, w.last);
    EXPECT_EQ(g.covered_ns, w.covered_ns);
    EXPECT_EQ(g.resets, w.resets);
    auto near = [](double a, double b) {
      return std::fabs(a - b) <= 1e-9 * std::max(1.0, std::fabs(b));
    };
    EXPECT_TRUE(near(g.sum, w.sum)) << g.sum << " " << w.sum;
    EXPECT_TRUE(near(g.energy_wh, w.energy_wh)) << g.energy_wh << " " << w.energy_wh;
    EXPECT_TRUE(near(g.delta, w.delta)) << g.delta << " " << w.delta;
  }
}

TEST(CorrectBaseWindowTest, RollupsHeldByTheLiveEngineGetTheReplayedMinute) {
  EngineOptions o;
  o.allowed_lateness_ns = 60 * kNanosPerSecond;
  o.out_of_orderness_ns = 5 * kNanosPerSecond;
  WindowEngine live(o), full(o);
  Latest live_out, full_out;
  std::vector<model::Event> events;
  double meter = 5000;
  for (int i = 0; i < 120; ++i) {  // 20 minutes, every 10 s
    meter += 1.5;
    events.push_back(At(kT0 + i * 10 * kNanosPerSecond, 100.0 + i % 5, meter));
  }
  // Too late for the live engine: 3:35 into the data, sent after all of it. Its meter
  // reading lies between its neighbours' (no reset, no noise).
  const model::Event late = At(kT0 + 215 * kNanosPerSecond, 950.0, 5000 + 22 * 1.5 - 0.5);
  for (const auto& e : events) {
    live.Process(e, e.timestamp_ns, &live_out);
    live.Tick(e.timestamp_ns, &live_out);
  }
  const int64_t now = events.back().timestamp_ns + kNanosPerSecond;
  live.Process(late, now, &live_out);
  WindowEngine::DeviceHealth h;
  ASSERT_TRUE(live.Health("d", &h));
  ASSERT_EQ(h.late_dropped, 1u);
  std::vector<model::Event> all = events;
  all.insert(all.begin() + 22, late);
  for (const auto& e : all) full.Process(e, e.timestamp_ns, &full_out);

  const int64_t minute = kT0 + 3 * kNanosPerMinute;
  const model::AggregateRecord* before = live_out.Find(model::Resolution::kBase, minute);
  const model::AggregateRecord* after = full_out.Find(model::Resolution::kBase, minute);
  ASSERT_NE(before, nullptr);
  ASSERT_NE(after, nullptr);
  ASSERT_EQ(after->count, before->count + 1);
  EXPECT_TRUE(live.CorrectBaseWindow(*before, *after, &live_out));

  // Everything final in both (silent past the day's end), then the rollups agree.
  const int64_t later = now + 2 * kNanosPerDay;
  live.Tick(later, &live_out);
  full.Tick(later, &full_out);
  const int64_t hour = kT0 - 10 * kNanosPerMinute;
  for (model::Resolution res : {model::Resolution::kHour, model::Resolution::kDay}) {
    const model::AggregateRecord* want = nullptr;
    const model::AggregateRecord* got = nullptr;
    for (const auto& [key, r] : full_out.records) {
      if (r.resolution == res && r.window_start_ns <= hour && hour < r.window_end_ns) want = &r;
    }
    for (const auto& [key, r] : live_out.records) {
      if (r.resolution == res && r.window_start_ns <= hour && hour < r.window_end_ns) got = &r;
    }
    ASSERT_NE(want, nullptr);
    ASSERT_NE(got, nullptr);
    EXPECT_TRUE(got->final);
    ExpectSameContent(*got, *want);
  }
  // Without a held rollup (an unknown device) nothing happens.
  model::AggregateRecord other = *after;
  other.device_id = "nobody";
  EXPECT_FALSE(live.CorrectBaseWindow(model::AggregateRecord{}, other, &live_out));
}

// An hour whose only events were too late, not yet settled: the live engine never held
// it, so there was no rollup to correct — the replay's minute creates it (found by a
// black-box test: the replayed minute was written, its hour never, and the day no longer
// equalled its hours). A rollup that eviction may have freed (settled: the replay writes it
// itself) is not created again from nothing.
TEST(CorrectBaseWindowTest, ARollupTheEngineNeverHeldIsCreated) {
  EngineOptions o;
  o.allowed_lateness_ns = 30 * kNanosPerMinute;
  o.out_of_orderness_ns = 5 * kNanosPerSecond;
  WindowEngine live(o), full(o);
  Latest live_out, full_out;
  // kT0 is 11:20 UTC: the device reports 12:10–12:16; an event of 11:30 comes too late.
  std::vector<model::Event> events;
  for (int i = 0; i < 36; ++i) {
    events.push_back(
        At(kT0 + 50 * kNanosPerMinute + i * 10 * kNanosPerSecond, 100.0 + i % 5, 6000 + i * 1.5));
  }
  const model::Event late = At(kT0 + 10 * kNanosPerMinute + 7 * kNanosPerSecond, 900.0, 5990);
  for (const auto& e : events) {
    live.Process(e, e.timestamp_ns, &live_out);
    live.Tick(e.timestamp_ns, &live_out);
  }
  const int64_t now = events.back().timestamp_ns + kNanosPerSecond;
  live.Process(late, now, &live_out);
  WindowEngine::DeviceHealth h;
  ASSERT_TRUE(live.Health("d", &h));
  ASSERT_EQ(h.late_dropped, 1u);
  full.Process(late, late.timestamp_ns, &full_out);
  full.Tick(now + 2 * kNanosPerDay, &full_out);

  const int64_t minute = kT0 + 10 * kNanosPerMinute;
  const int64_t hour = kT0 - 20 * kNanosPerMinute;
  ASSERT_EQ(live_out.Find(model::Resolution::kHour, hour), nullptr);
  const model::AggregateRecord* after = full_out.Find(model::Resolution::kBase, minute);
  ASSERT_NE(after, nullptr);
  const model::AggregateRecord* day = nullptr;
  for (const auto& [key, r] : live_out.records) {
    if (r.resolution == model::Resolution::kDay) day = &r;
  }
  ASSERT_NE(day, nullptr);
  const uint64_t day_count = day->count;
  model::AggregateRecord none;  // no live record of the minute
  none.device_id = "d";
  none.resolution = model::Resolution::kBase;
  none.window_start_ns = after->window_start_ns;
  none.window_end_ns = after->window_end_ns;
  EXPECT_TRUE(live.CorrectBaseWindow(none, *after, &live_out));

  const model::AggregateRecord* got = live_out.Find(model::Resolution::kHour, hour);
  const model::AggregateRecord* want = full_out.Find(model::Resolution::kHour, hour);
  ASSERT_NE(got, nullptr) << "the hour was not created";
  ASSERT_NE(want, nullptr);
  EXPECT_TRUE(got->final);
  ExpectSameContent(*got, *want);
  live.Tick(now + 2 * kNanosPerDay, &live_out);
  EXPECT_EQ(day->count, day_count + 1);  // (the newest version of the same key)

  // Two hours earlier, behind what eviction may have freed: no hour from nothing.
  model::AggregateRecord old = *after;
  old.window_start_ns -= 2 * kNanosPerHour;
  old.window_end_ns -= 2 * kNanosPerHour;
  none.window_start_ns = old.window_start_ns;
  none.window_end_ns = old.window_end_ns;
  live.CorrectBaseWindow(none, old, &live_out);
  EXPECT_EQ(live_out.Find(model::Resolution::kHour, hour - 2 * kNanosPerHour), nullptr);
}

}  // namespace
}  // namespace joule::stream

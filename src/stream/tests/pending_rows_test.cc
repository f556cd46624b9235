// Pending rows (src/stream README, "Tenth pass"): an in-order event may be kept back and
// folded later; every record must be the one folding it at once emits. Differential: one
// engine takes random streams in batches (rows pend across batches and ticks); the other
// takes the same events one by one and is asked for the device's health after each, which
// folds that device's pending rows at once. Both must emit the same records in the same
// order, report the same health and save the same state.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
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

struct Zones : TimezoneProvider {
  std::optional<std::string> TimezoneOf(std::string_view id) override {
    return id.back() % 2 ? "America/New_York" : "Asia/Kathmandu";
  }
};

struct Stream {
  std::vector<model::Event> events;
  // Before events[i]: a tick at this processing time (0: none), a checkpoint round trip.
  std::vector<int64_t> tick_before;
  std::vector<bool> restore_before;
  std::vector<int64_t> now;  // processing time of events[i]
};

// Devices at 1 Hz around a moving clock; some with every metric in one order (they pend),
// some dropping or adding a metric now and then, some reordered, late, duplicated, with
// event ids or not, with gaps over max_gap and silences over the idle timeout.
Stream Generate(uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto chance = [&](int percent) { return static_cast<int>(rng() % 100) < percent; };
  Stream s;
  const int64_t start =
      1795000000LL * kNanosPerSecond + static_cast<int64_t>(rng() % 3600) * kNanosPerSecond;
  const int devices = 3 + static_cast<int>(rng() % 4);
  std::vector<int64_t> device_t(static_cast<size_t>(devices), start);
  std::vector<double> meter(static_cast<size_t>(devices), 1000.0);
  int64_t now = start;
  const int n = 3000 + static_cast<int>(rng() % 2000);
  for (int i = 0; i < n; ++i) {
    const auto k = static_cast<size_t>(rng() % static_cast<uint64_t>(devices));
    int64_t& t = device_t[k];
    int64_t step = kNanosPerSecond;
    if (chance(2)) step = static_cast<int64_t>(rng() % 400) * kNanosPerSecond;  // a gap
    if (chance(3)) step += static_cast<int64_t>(rng() % 1000) * 1000 * 1000;
    t += step;
    int64_t ts = t;
    if (chance(6)) ts -= static_cast<int64_t>(rng() % 20) * kNanosPerSecond;    // out of order
    if (chance(1)) ts -= static_cast<int64_t>(rng() % 5000) * kNanosPerSecond;  // late
    now = std::max(now + static_cast<int64_t>(rng() % 300) * 1000 * 1000, t);
    model::Event ev;
    ev.device_id = "dev-" + std::to_string(k);
    ev.timestamp_ns = ts;
    ev.received_at_ns = chance(5) ? 0 : now + static_cast<int64_t>(rng() % 3) * kNanosPerSecond;
    if (k % 2 == 0 || chance(10)) ev.event_id = "e" + std::to_string(ts);
    meter[k] += chance(2) ? -900.0 : static_cast<double>(rng() % 100) / 10.0;  // resets too
    const double p = 100.0 + static_cast<double>(rng() % 1000) / 10.0;
    ev.metrics = {{"power_w", p},
                  {"voltage_v", 230.0 + static_cast<double>(rng() % 10)},
                  {"energy_wh", meter[k]}};
    if (k == 1 && chance(20)) ev.metrics.pop_back();                    // a metric missing
    if (k == 2 && chance(5)) ev.metrics.push_back({"temp_c", 21.5});    // a new metric
    if (k == 3 && chance(10)) std::swap(ev.metrics[0], ev.metrics[1]);  // another order
    if (chance(3) && !s.events.empty()) {
      s.events.push_back(s.events.back());  // a duplicate
      s.tick_before.push_back(0);
      s.restore_before.push_back(false);
      s.now.push_back(now);
    }
    s.tick_before.push_back(chance(15) ? now : 0);
    s.restore_before.push_back(chance(1));
    s.events.push_back(std::move(ev));
    s.now.push_back(now);
    if (chance(1)) now += 120 * kNanosPerSecond;  // every device silent past idle_timeout
  }
  return s;
}

void RoundTrip(WindowEngine& e) {
  std::string state;
  ASSERT_TRUE(e.SaveState(&state).ok());
  ASSERT_TRUE(e.RestoreState(state).ok());
  e.BeginRecoveryEpoch();
}

TEST(PendingRowsTest, SameRecordsAsFoldingAtOnce) {
  for (uint64_t seed = 1; seed <= 40; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    const Stream s = Generate(seed);
    EngineOptions o;
    o.allowed_lateness_ns = 600 * kNanosPerSecond;
    Zones zones;
    WindowEngine batched(o, &zones), at_once(o, &zones);
    Collect a, b;
    std::mt19937_64 rng(seed * 7919);
    size_t i = 0;
    while (i < s.events.size()) {
      // A batch: events up to the next tick or round trip, at most 1–64 of them.
      size_t end = i + 1 + rng() % 64;
      for (size_t j = i + 1; j < end && j < s.events.size(); ++j) {
        if (s.tick_before[j] != 0 || s.restore_before[j]) end = j;
      }
      end = std::min(end, s.events.size());
      if (s.tick_before[i] != 0) {
        batched.Tick(s.tick_before[i], &a);
        at_once.Tick(s.tick_before[i], &b);
      }
      if (s.restore_before[i]) {
        RoundTrip(batched);
        RoundTrip(at_once);
      }
      batched.ProcessBatch(&s.events[i], end - i, s.now[end - 1], &a);
      for (size_t j = i; j < end; ++j) {
        at_once.Process(s.events[j], s.now[end - 1], &b);
        WindowEngine::DeviceHealth h;
        ASSERT_TRUE(at_once.Health(s.events[j].device_id, &h));
      }
      i = end;
    }
    batched.Tick(s.now.back() + 3600 * kNanosPerSecond, &a);
    at_once.Tick(s.now.back() + 3600 * kNanosPerSecond, &b);
    ASSERT_EQ(a.out.size(), b.out.size());
    for (size_t k = 0; k < a.out.size(); ++k) ASSERT_EQ(a.out[k], b.out[k]) << "record " << k;
    EXPECT_GT(a.out.size(), 100u);
    for (int k = 0; k < 7; ++k) {
      const std::string id = "dev-" + std::to_string(k);
      WindowEngine::DeviceHealth ha, hb;
      ASSERT_EQ(batched.Health(id, &ha), at_once.Health(id, &hb));
      EXPECT_EQ(ha.clock_skew_ns, hb.clock_skew_ns);
      EXPECT_EQ(ha.events, hb.events);
      EXPECT_EQ(ha.duplicates, hb.duplicates);
      EXPECT_EQ(ha.late_dropped, hb.late_dropped);
      EXPECT_EQ(ha.watermark_ns, hb.watermark_ns);
    }
    std::string sa, sb;
    ASSERT_TRUE(batched.SaveState(&sa).ok());
    ASSERT_TRUE(at_once.SaveState(&sb).ok());
    EXPECT_EQ(sa, sb);
  }
}

// A checkpoint taken while rows are pending holds them folded: restored, the engine goes
// on as the one that never stopped.
TEST(PendingRowsTest, CheckpointWithPendingRows) {
  EngineOptions o;
  WindowEngine live(o);
  Collect a, b;
  const int64_t base = 1795000020LL * kNanosPerSecond;
  auto event = [&](int s) {
    model::Event ev;
    ev.device_id = "plug";
    ev.timestamp_ns = base + s * kNanosPerSecond;
    ev.received_at_ns = ev.timestamp_ns;
    ev.metrics = {{"power_w", 100.0 + s}, {"energy_wh", 10.0 + s}};
    return ev;
  };
  for (int s = 0; s < 3; ++s) live.Process(event(s), base + s * kNanosPerSecond, &a);
  std::string state;
  ASSERT_TRUE(live.SaveState(&state).ok());
  WindowEngine restored(o);
  ASSERT_TRUE(restored.RestoreState(state).ok());
  for (int s = 3; s < 200; ++s) {
    live.Process(event(s), base + s * kNanosPerSecond, &a);
    restored.Process(event(s), base + s * kNanosPerSecond, &b);
  }
  live.Tick(base + 400 * kNanosPerSecond, &a);
  restored.Tick(base + 400 * kNanosPerSecond, &b);
  // The restored engine emits what the live one emitted after the checkpoint.
  ASSERT_GE(a.out.size(), b.out.size());
  ASSERT_FALSE(b.out.empty());
  const size_t skip = a.out.size() - b.out.size();
  for (size_t k = 0; k < b.out.size(); ++k) EXPECT_EQ(a.out[skip + k], b.out[k]) << k;
}

}  // namespace
}  // namespace joule::stream

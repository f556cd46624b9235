// Tick parks a silent, idle-finalized device until its next idle closing (README "Idle
// devices"): it is visited at its early-firing cadence, not on every tick, and an event
// un-parks it, so that its next silence is finalized within idle_timeout as before.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/clock.h"
#include "stream/window_engine.h"

namespace joule::stream {
namespace {

constexpr int64_t kSec = kNanosPerSecond;
constexpr int64_t kTick = 200 * 1000 * 1000;  // the processors' tick interval

struct Collect : RecordSink {
  void Emit(const model::AggregateRecord& r) override { out.push_back(r); }
  std::vector<model::AggregateRecord> out;
};

model::Event Ev(const std::string& device, int64_t t, double v) {
  model::Event ev;
  ev.device_id = device;
  ev.timestamp_ns = t;
  ev.metrics = {{"power_w", v}, {"voltage_v", 230.0}};
  return ev;
}

// The processing time of the first final record of (device, resolution, start), or -1.
int64_t FinalAt(const std::vector<std::pair<int64_t, model::AggregateRecord>>& seen,
                const std::string& device, model::Resolution res, int64_t start) {
  for (const auto& [now, r] : seen) {
    if (r.device_id == device && r.resolution == res && r.window_start_ns == start && r.final) {
      return now;
    }
  }
  return -1;
}

class IdleParkingTest : public ::testing::Test {
 protected:
  // Ticks every 200 ms from `from` to `to` inclusive, recording each record's tick time.
  void Ticks(WindowEngine& engine, int64_t from, int64_t to) {
    for (int64_t now = from; now <= to; now += kTick) {
      Collect c;
      engine.Tick(now, &c);
      for (auto& r : c.out) seen.emplace_back(now, r);
    }
  }
  void Send(WindowEngine& engine, const model::Event& ev, int64_t now) {
    Collect c;
    engine.Process(ev, now, &c);
    for (auto& r : c.out) seen.emplace_back(now, r);
  }
  std::vector<std::pair<int64_t, model::AggregateRecord>> seen;
  // 10:00:20 UTC: the hour and the day stay open through the test.
  const int64_t t0 = (1794996000LL + 20) * kSec;
};

TEST_F(IdleParkingTest, SilentDevicesAreVisitedAtTheirEarlyFiringCadenceNotEveryTick) {
  EngineOptions o;
  o.idle_timeout_ns = 2 * kSec;
  WindowEngine engine(o);
  constexpr int kDevices = 50;
  for (int d = 0; d < kDevices; ++d) {
    for (int k = 0; k < 3; ++k) {
      const int64_t t = t0 + k * kSec;
      Send(engine, Ev("dev-" + std::to_string(d), t, 100.0 + k), t);
    }
  }
  // Past the idle timeout: every base window is final, the 1h and 1d windows stay open.
  Ticks(engine, t0 + 3 * kSec, t0 + 10 * kSec);
  for (int d = 0; d < kDevices; ++d) {
    EXPECT_GT(
        FinalAt(seen, "dev-" + std::to_string(d), model::Resolution::kBase, t0 - t0 % (60 * kSec)),
        0);
  }
  // Then a minute of silence, 300 ticks: each device is due at its early firings (every
  // 5 s) and once at its eviction pass, not on all 300.
  const uint64_t before = engine.counters().tick_visits;
  Ticks(engine, t0 + 10 * kSec + kTick, t0 + 70 * kSec);
  const uint64_t visits = engine.counters().tick_visits - before;
  EXPECT_LE(visits, uint64_t{kDevices} * (60 / 5 + 3)) << visits;
  EXPECT_GE(visits, uint64_t{kDevices} * (60 / 5 - 1)) << visits;
}

// With early firings an hour apart, nothing but the idle check would visit the device
// after it sends again: without the un-parking its new base window would stay open until
// the hour's end.
TEST_F(IdleParkingTest, AnEventUnparksTheDeviceSoItsNextSilenceIsFinalizedInTime) {
  EngineOptions o;
  o.idle_timeout_ns = 2 * kSec;
  o.early_fire_interval_ns = 3600 * kSec;
  WindowEngine engine(o);
  Send(engine, Ev("plug", t0, 10.0), t0);
  Ticks(engine, t0 + kTick, t0 + 10 * kSec);  // silent: finalized, parked
  const int64_t m0 = t0 - t0 % (60 * kSec);
  ASSERT_GT(FinalAt(seen, "plug", model::Resolution::kBase, m0), 0);

  const int64_t t1 = m0 + 5 * 60 * kSec + 7 * kSec;  // five minutes later, one event
  Ticks(engine, t0 + 10 * kSec + kTick, t1 - kTick);
  Send(engine, Ev("plug", t1, 20.0), t1);
  Ticks(engine, t1 + kTick, t1 + 60 * kSec);
  const int64_t m1 = t1 - t1 % (60 * kSec);
  const int64_t at = FinalAt(seen, "plug", model::Resolution::kBase, m1);
  ASSERT_GT(at, 0) << "the window of the event after the silence never became final";
  // CONTRACT §2: final within idle_timeout of the last event (at the next tick).
  EXPECT_LE(at, t1 + o.idle_timeout_ns + kTick);
  EXPECT_GE(at, t1 + o.idle_timeout_ns);
}

// A parked device's open hour closes when its end passes in processing time (CONTRACT §2,
// idle finalization of ended rollups), at the first tick after it.
TEST_F(IdleParkingTest, AParkedDevicesHourClosesAtItsEnd) {
  EngineOptions o;
  o.idle_timeout_ns = 2 * kSec;
  o.early_fire_interval_ns = 3600 * kSec;
  WindowEngine engine(o);
  const int64_t hour = t0 - t0 % (3600 * kSec);
  // 90 s before the hour's end: the idle finalization closes its minute at once, the
  // hour when the hour has passed.
  const int64_t t = hour + 3600 * kSec - 90 * kSec;
  Send(engine, Ev("meter", t, 5.0), t);
  Ticks(engine, t + kTick, hour + 3600 * kSec + 2 * kSec);
  const int64_t at = FinalAt(seen, "meter", model::Resolution::kHour, hour);
  ASSERT_GT(at, 0);
  EXPECT_GE(at, hour + 3600 * kSec);
  EXPECT_LE(at, hour + 3600 * kSec + kTick);
}

}  // namespace
}  // namespace joule::stream

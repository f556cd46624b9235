// Staged rows (engine_state.h, kRowSkew): an in-order event's appends to the histories,
// the clock-skew ring and the de-duplication timestamps wait in the device's row buffer
// until something reads them. What the engine reports must not depend on whether they
// were appended yet.
#include <gtest/gtest.h>

#include <algorithm>
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

int64_t Median16(std::vector<int64_t> skews) {
  if (skews.size() > 16) skews.erase(skews.begin(), skews.end() - 16);
  std::sort(skews.begin(), skews.end());
  return skews[skews.size() / 2];
}

model::Event At(int64_t t, int64_t skew) {
  model::Event ev;
  ev.device_id = "dev";
  ev.timestamp_ns = t;
  ev.received_at_ns = t + skew;
  ev.metrics = {{"power_w", 100.0 + static_cast<double>(t % 7)}, {"energy_wh", 1.0}};
  return ev;
}

// Health reads the skew ring: the skews of staged (in-order) events count, in order, and so
// do those of a duplicate and of an out-of-order event arriving between them.
TEST(StagedRowsTest, HealthSkewCoversStagedEvents) {
  WindowEngine engine{EngineOptions{}};
  Collect sink;
  const int64_t t0 = 1795000020LL * kNanosPerSecond;
  std::vector<int64_t> skews;
  for (int k = 0; k < 23; ++k) {
    const int64_t skew = (k * 7919 % 101) * 1000000;  // not monotonic: the median moves
    model::Event ev = At(t0 + k * kNanosPerSecond, skew);
    if (k == 9) ev.timestamp_ns -= 2500LL * 1000 * 1000;  // out of order
    if (k == 9) ev.received_at_ns = ev.timestamp_ns + skew;
    engine.Process(ev, t0 + k * kNanosPerSecond, &sink);
    skews.push_back(skew);
    if (k == 14) {  // a duplicate (same timestamp as event 14) and another skew
      engine.Process(At(t0 + k * kNanosPerSecond, 55000000), t0 + k * kNanosPerSecond, &sink);
      skews.push_back(55000000);
    }
    WindowEngine::DeviceHealth h;
    ASSERT_TRUE(engine.Health("dev", &h));
    EXPECT_EQ(h.clock_skew_ns, Median16(skews)) << "after event " << k;
  }
  WindowEngine::DeviceHealth h;
  ASSERT_TRUE(engine.Health("dev", &h));
  EXPECT_EQ(h.duplicates, 1u);
  EXPECT_EQ(h.events, 23u);
}

// A duplicate found by event_id while the device's rows are staged, and duplicates by
// timestamp of staged events (their timestamps are still in the row buffer).
TEST(StagedRowsTest, DuplicatesOfStagedEvents) {
  WindowEngine engine{EngineOptions{}};
  Collect sink;
  const int64_t t0 = 1795000020LL * kNanosPerSecond;
  for (int k = 0; k < 5; ++k) {
    model::Event ev = At(t0 + k * kNanosPerSecond, 0);
    ev.event_id = "e" + std::to_string(k);
    engine.Process(ev, t0 + k * kNanosPerSecond, &sink);
  }
  model::Event again = At(t0 + 6 * kNanosPerSecond, 0);  // later, but a known event_id
  again.event_id = "e3";
  engine.Process(again, t0 + 6 * kNanosPerSecond, &sink);
  for (int k = 7; k < 10; ++k) engine.Process(At(t0 + k * kNanosPerSecond, 0), t0, &sink);
  engine.Process(At(t0 + 8 * kNanosPerSecond, 0), t0, &sink);  // same timestamp as a staged one
  engine.Process(At(t0 + 9 * kNanosPerSecond, 0), t0, &sink);
  WindowEngine::DeviceHealth h;
  ASSERT_TRUE(engine.Health("dev", &h));
  EXPECT_EQ(h.duplicates, 3u);
  EXPECT_EQ(h.events, 8u);
  // Saving appends the staged rows; a restored engine saves the same bytes.
  std::string a, b;
  ASSERT_TRUE(engine.SaveState(&a).ok());
  WindowEngine restored{EngineOptions{}};
  ASSERT_TRUE(restored.RestoreState(a).ok());
  ASSERT_TRUE(restored.SaveState(&b).ok());
  EXPECT_EQ(a, b);
}

}  // namespace
}  // namespace joule::stream

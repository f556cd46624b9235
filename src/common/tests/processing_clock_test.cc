#include "common/processing_clock.h"

#include <gtest/gtest.h>

#include "common/clock.h"

namespace joule {
namespace {

constexpr int64_t kStart = 1'800'000'000 * kNanosPerSecond;

// Wall and monotonic clocks advanced together, the wall one also stepped.
struct Clocks {
  ManualClock wall{kStart};
  ManualClock monotonic{5 * kNanosPerSecond};
  ProcessingClock processing{&wall, &monotonic};
  void Advance(int64_t ns) {
    wall.Advance(ns);
    monotonic.Advance(ns);
  }
};

TEST(ProcessingClockTest, FollowsTheWallClockWhenItDoesNotStep) {
  Clocks c;
  EXPECT_EQ(c.processing.NowNanos(), kStart);
  for (int i = 1; i <= 100; ++i) {
    c.Advance(3 * kNanosPerSecond);
    EXPECT_EQ(c.processing.NowNanos(), c.wall.NowNanos());
  }
  // NTP's slewing (a wall clock a little slower or faster) is followed as it is.
  c.monotonic.Advance(10 * kNanosPerSecond);
  c.wall.Advance(10 * kNanosPerSecond + 5 * kNanosPerMilli);
  EXPECT_EQ(c.processing.NowNanos(), c.wall.NowNanos());
  EXPECT_EQ(c.processing.offset_ns(), 0);
}

TEST(ProcessingClockTest, AStepBackIsAbsorbedAndSlewedOut) {
  Clocks c;
  c.processing.NowNanos();
  c.Advance(kNanosPerSecond);
  const int64_t before = c.processing.NowNanos();
  c.wall.Advance(-10 * kNanosPerMinute);  // NTP steps the clock back 10 min
  c.Advance(2 * kNanosPerSecond);
  const int64_t after = c.processing.NowNanos();
  // Processing time went on by the real 2 s (minus 10 % of them slewed off), not back 10 min.
  EXPECT_GT(after, before);
  EXPECT_LE(after - before, 2 * kNanosPerSecond);
  EXPECT_GE(after - before, 2 * kNanosPerSecond * 9 / 10);
  EXPECT_GT(c.processing.offset_ns(), 9 * kNanosPerMinute);
  // It runs at 0.9x until it meets the wall clock again (10 min / 10 % = 100 min), never
  // backwards, and then follows it.
  int64_t last = after;
  for (int i = 0; i < 110 * 60; ++i) {
    c.Advance(kNanosPerSecond);
    const int64_t now = c.processing.NowNanos();
    EXPECT_GE(now - last, kNanosPerSecond * 9 / 10 - 1);
    EXPECT_LE(now - last, kNanosPerSecond);
    last = now;
  }
  EXPECT_EQ(c.processing.offset_ns(), 0);
  EXPECT_EQ(c.processing.NowNanos(), c.wall.NowNanos());
}

TEST(ProcessingClockTest, AStepForwardIsAbsorbedAndSlewedIn) {
  Clocks c;
  c.processing.NowNanos();
  c.Advance(kNanosPerSecond);
  const int64_t before = c.processing.NowNanos();
  c.wall.Advance(3 * kNanosPerHour);  // the clock steps forward 3 h
  c.Advance(kNanosPerSecond);
  const int64_t after = c.processing.NowNanos();
  EXPECT_GE(after - before, kNanosPerSecond);
  EXPECT_LE(after - before, kNanosPerSecond * 11 / 10);
  EXPECT_LT(c.processing.offset_ns(), -2 * kNanosPerHour);
  // At 1.1x it catches up with the wall clock 30 h later.
  for (int i = 0; i < 31 * 60; ++i) {
    c.Advance(kNanosPerMinute);
    c.processing.NowNanos();
  }
  EXPECT_EQ(c.processing.NowNanos(), c.wall.NowNanos());
}

TEST(ProcessingClockTest, ASmallStepBackNeverMovesItBackwards) {
  Clocks c;
  c.processing.NowNanos();
  c.Advance(kNanosPerSecond);
  const int64_t before = c.processing.NowNanos();
  c.wall.Advance(-500 * kNanosPerMilli);  // within the tolerance: followed, but not backwards
  EXPECT_GE(c.processing.NowNanos(), before);
  c.Advance(kNanosPerSecond);
  EXPECT_GE(c.processing.NowNanos(), before);
}

}  // namespace
}  // namespace joule

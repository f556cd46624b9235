#include "ingest/rate_limiter.h"

#include <gtest/gtest.h>

#include <string>

#include "common/clock.h"

namespace joule::ingest {
namespace {

TEST(RateLimiterTest, BurstThenRefused) {
  ManualClock clock(1'000 * kNanosPerSecond);
  RateLimiter limiter(/*rate_per_second=*/2, /*burst=*/3);
  int64_t retry = 0;
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(limiter.TryAcquire("device:a", 1, clock.NowNanos(), &retry)) << i;
  }
  EXPECT_FALSE(limiter.TryAcquire("device:a", 1, clock.NowNanos(), &retry));
  // One token at 2/s takes 500 ms.
  EXPECT_EQ(retry, 500 * kNanosPerMilli);
}

TEST(RateLimiterTest, RefillsAtRateUpToBurst) {
  ManualClock clock(0);
  RateLimiter limiter(2, 3);
  int64_t retry = 0;
  ASSERT_TRUE(limiter.TryAcquire("k", 3, clock.NowNanos(), &retry));
  EXPECT_FALSE(limiter.TryAcquire("k", 1, clock.NowNanos(), &retry));
  clock.Advance(250 * kNanosPerMilli);  // half a token
  EXPECT_FALSE(limiter.TryAcquire("k", 1, clock.NowNanos(), &retry));
  EXPECT_EQ(retry, 250 * kNanosPerMilli);
  clock.Advance(250 * kNanosPerMilli);
  EXPECT_TRUE(limiter.TryAcquire("k", 1, clock.NowNanos(), &retry));
  EXPECT_FALSE(limiter.TryAcquire("k", 1, clock.NowNanos(), &retry));
  clock.Advance(100 * kNanosPerSecond);  // capped at the burst
  EXPECT_TRUE(limiter.TryAcquire("k", 3, clock.NowNanos(), &retry));
  EXPECT_FALSE(limiter.TryAcquire("k", 1, clock.NowNanos(), &retry));
}

// A step back of the clock (NTP) does not stop the refill until the clock is back where it
// was: the bucket refills from the new time on, and Retry-After holds (found by a
// black-box test: a device at 0.5 requests/s got 429 with Retry-After: 1 for the length of
// the step).
TEST(RateLimiterTest, RefillsAfterTheClockStepsBack) {
  ManualClock clock(10'000 * kNanosPerSecond);
  RateLimiter limiter(2, 3);
  int64_t retry = 0;
  ASSERT_TRUE(limiter.TryAcquire("k", 3, clock.NowNanos(), &retry));
  clock.Advance(-kNanosPerHour);
  EXPECT_FALSE(limiter.TryAcquire("k", 1, clock.NowNanos(), &retry));
  EXPECT_EQ(retry, 500 * kNanosPerMilli);
  clock.Advance(retry);
  EXPECT_TRUE(limiter.TryAcquire("k", 1, clock.NowNanos(), &retry));
  clock.Advance(2 * kNanosPerSecond);
  EXPECT_TRUE(limiter.TryAcquire("k", 3, clock.NowNanos(), &retry));
}

TEST(RateLimiterTest, RetryAfterForSeveralTokens) {
  ManualClock clock(0);
  RateLimiter limiter(5, 10);
  int64_t retry = 0;
  ASSERT_TRUE(limiter.TryAcquire("d", 8, clock.NowNanos(), &retry));
  EXPECT_FALSE(limiter.TryAcquire("d", 5, clock.NowNanos(), &retry));
  EXPECT_EQ(retry, 600 * kNanosPerMilli);  // 3 missing at 5/s
  clock.Advance(retry);
  EXPECT_TRUE(limiter.TryAcquire("d", 5, clock.NowNanos(), &retry));
}

TEST(RateLimiterTest, MoreThanBurstNeverSucceeds) {
  ManualClock clock(0);
  RateLimiter limiter(5, 10);
  int64_t retry = 0;
  EXPECT_FALSE(limiter.TryAcquire("d", 50, clock.NowNanos(), &retry));
  EXPECT_EQ(retry, 0);  // the bucket is already full
  // Nothing was taken.
  EXPECT_TRUE(limiter.TryAcquire("d", 10, clock.NowNanos(), &retry));
}

TEST(RateLimiterTest, KeysAreIndependent) {
  ManualClock clock(0);
  RateLimiter limiter(1, 2);
  int64_t retry = 0;
  ASSERT_TRUE(limiter.TryAcquire("device:a", 2, clock.NowNanos(), &retry));
  EXPECT_FALSE(limiter.TryAcquire("device:a", 1, clock.NowNanos(), &retry));
  EXPECT_TRUE(limiter.TryAcquire("device:b", 2, clock.NowNanos(), &retry));
  EXPECT_TRUE(limiter.TryAcquire("owner:a", 1, clock.NowNanos(), &retry));
}

TEST(RateLimiterTest, EvictsIdleKeysAndStaysBounded) {
  ManualClock clock(0);
  RateLimiter limiter(1, 2, /*max_keys=*/16);  // one bucket per shard
  int64_t retry = 0;
  for (int i = 0; i < 1000; ++i) {
    ASSERT_TRUE(limiter.TryAcquire("key-" + std::to_string(i), 1, clock.NowNanos(), &retry));
    clock.Advance(kNanosPerMilli);
  }
  EXPECT_LE(limiter.size(), 16u);
  // A refilled (idle) bucket is dropped first, and dropping it changes nothing.
  clock.Advance(10 * kNanosPerSecond);
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(limiter.TryAcquire("again-" + std::to_string(i), 2, clock.NowNanos(), &retry));
  }
  EXPECT_LE(limiter.size(), 16u);
}

TEST(RateLimiterTest, EvictedKeyStartsFull) {
  ManualClock clock(0);
  RateLimiter limiter(1, 2, /*max_keys=*/1);  // one bucket per shard
  int64_t retry = 0;
  ASSERT_TRUE(limiter.TryAcquire("a", 2, clock.NowNanos(), &retry));
  clock.Advance(5 * kNanosPerSecond);  // "a" is full again: evictable without effect
  for (int i = 0; i < 200; ++i) {
    limiter.TryAcquire("other-" + std::to_string(i), 1, clock.NowNanos(), &retry);
  }
  EXPECT_TRUE(limiter.TryAcquire("a", 2, clock.NowNanos(), &retry));
}

}  // namespace
}  // namespace joule::ingest

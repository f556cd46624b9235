#include "app/read_retry.h"

#include <gtest/gtest.h>

#include <chrono>
#include <vector>

namespace joule::app {
namespace {

using namespace std::chrono_literals;

// The schedule of a failing log read: 10 ms doubling to 1 s, logged at the first failure
// and then once per 10 s with the count since (a black-box test found an immediate retry
// logging ~60 MB/s).
TEST(ReadRetryTest, BacksOffAndThrottlesTheLog) {
  ReadRetry r;
  const auto t0 = ReadRetry::Clock::time_point() + 1h;
  EXPECT_FALSE(r.failing());
  EXPECT_FALSE(r.Waiting(t0));
  uint64_t unlogged = 0;
  EXPECT_TRUE(r.Failed(t0, &unlogged));  // the first failure is logged
  EXPECT_EQ(unlogged, 1u);
  EXPECT_EQ(r.backoff(), 10ms);
  EXPECT_TRUE(r.Waiting(t0 + 9ms));
  EXPECT_FALSE(r.Waiting(t0 + 10ms));
  std::vector<std::chrono::nanoseconds> backoffs;
  auto t = t0;
  for (int i = 0; i < 8; ++i) {
    t += r.backoff();
    EXPECT_FALSE(r.Failed(t, &unlogged));  // within 10 s of the last line: not logged
    backoffs.push_back(r.backoff());
  }
  EXPECT_EQ(backoffs,
            (std::vector<std::chrono::nanoseconds>{20ms, 40ms, 80ms, 160ms, 320ms, 640ms, 1s, 1s}));
  EXPECT_TRUE(r.Failed(t0 + 10s, &unlogged));  // a summary line: the 9 since the first
  EXPECT_EQ(unlogged, 9u);
  EXPECT_EQ(r.Succeeded(), 10u);
  EXPECT_FALSE(r.failing());
  EXPECT_TRUE(r.Failed(t0 + 11s, &unlogged));  // failing again: logged at once
  EXPECT_EQ(r.backoff(), 10ms);
}

TEST(ReadRetryTest, SleepsOnlyWhileSomeReadIsFailing) {
  std::vector<ReadRetry> retries(3);
  EXPECT_FALSE(ReadRetry::SleepUntilFirstRetry(retries, 1s));  // none failing: at once
  uint64_t unlogged = 0;
  retries[1].Failed(ReadRetry::Clock::now(), &unlogged);
  const auto start = ReadRetry::Clock::now();
  EXPECT_TRUE(ReadRetry::SleepUntilFirstRetry(retries, 1s));
  EXPECT_LT(ReadRetry::Clock::now() - start, 500ms);  // until the 10 ms retry, not 1 s
}

}  // namespace
}  // namespace joule::app

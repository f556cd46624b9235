#include "common/time_format.h"

#include <gtest/gtest.h>

#include "common/clock.h"

namespace joule {

TEST(TimeFormatTest, ParsesZuluAndOffsets) {
  int64_t a, b;
  ASSERT_TRUE(ParseRfc3339("2026-11-28T18:00:05.250Z", &a));
  ASSERT_TRUE(ParseRfc3339("2026-11-28T19:00:05.250+01:00", &b));
  EXPECT_EQ(a, b);
  EXPECT_EQ(FormatRfc3339Millis(a), "2026-11-28T18:00:05.250Z");
  ASSERT_TRUE(ParseRfc3339("2026-11-28T13:15:05.250-04:45", &b));
  EXPECT_EQ(a, b);
}

TEST(TimeFormatTest, NineFractionDigits) {
  int64_t t;
  ASSERT_TRUE(ParseRfc3339("1970-01-01T00:00:00.123456789Z", &t));
  EXPECT_EQ(t, 123456789);
  EXPECT_FALSE(ParseRfc3339("1970-01-01T00:00:00.1234567890Z", &t));
  EXPECT_FALSE(ParseRfc3339("1970-01-01T00:00:00.Z", &t));
}

TEST(TimeFormatTest, RejectsMalformed) {
  int64_t t;
  EXPECT_FALSE(ParseRfc3339("2026-11-28", &t));
  EXPECT_FALSE(ParseRfc3339("2026-11-28T19:00:05", &t));
  EXPECT_FALSE(ParseRfc3339("2026-02-30T19:00:05Z", &t));
  EXPECT_FALSE(ParseRfc3339("2026-13-01T19:00:05Z", &t));
  EXPECT_FALSE(ParseRfc3339("2026-11-28T25:00:05Z", &t));
  EXPECT_FALSE(ParseRfc3339("2026-11-28T19:00:05+0100", &t));
  EXPECT_FALSE(ParseRfc3339("2026-11-28T19:00:05Zjunk", &t));
  EXPECT_TRUE(ParseRfc3339("2024-02-29T00:00:00Z", &t));
  EXPECT_FALSE(ParseRfc3339("2023-02-29T00:00:00Z", &t));
}

TEST(TimeFormatTest, NegativeTimesFormatByFloor) {
  EXPECT_EQ(FormatRfc3339Millis(-1), "1969-12-31T23:59:59.999Z");
}

TEST(TimeFormatTest, Durations) {
  EXPECT_EQ(*ParseDurationNanos("10s"), 10 * kNanosPerSecond);
  EXPECT_EQ(*ParseDurationNanos("5m"), 5 * kNanosPerMinute);
  EXPECT_EQ(*ParseDurationNanos("1h"), kNanosPerHour);
  EXPECT_EQ(*ParseDurationNanos("7d"), 7 * kNanosPerDay);
  EXPECT_EQ(*ParseDurationNanos("250ms"), 250 * kNanosPerMilli);
  EXPECT_FALSE(ParseDurationNanos("ten").ok());
  EXPECT_FALSE(ParseDurationNanos("5y").ok());
}

TEST(TimeFormatTest, Sizes) {
  EXPECT_EQ(*ParseSizeBytes("4MiB"), 4u << 20);
  EXPECT_EQ(*ParseSizeBytes("64KiB"), 64u << 10);
  EXPECT_EQ(*ParseSizeBytes("1000"), 1000u);
  EXPECT_FALSE(ParseSizeBytes("big").ok());
}

}  // namespace joule

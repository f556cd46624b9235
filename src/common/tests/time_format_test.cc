#include "common/time_format.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <limits>
#include <random>
#include <string>
#include <vector>

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
  // A space before the unit, as sizes take one ("10 s" was refused while "4 MiB" was taken);
  // a wrong unit lists the units (found by a black-box test).
  EXPECT_EQ(*ParseDurationNanos("10 s"), 10 * kNanosPerSecond);
  EXPECT_EQ(*ParseDurationNanos("250 ms"), 250 * kNanosPerMilli);
  EXPECT_EQ(ParseDurationNanos("5y").status().message(),
            "invalid duration unit in '5y' (units: ns, us, ms, s, m, h, d)");
}

TEST(TimeFormatTest, Sizes) {
  EXPECT_EQ(*ParseSizeBytes("4MiB"), 4u << 20);
  EXPECT_EQ(*ParseSizeBytes("64KiB"), 64u << 10);
  EXPECT_EQ(*ParseSizeBytes("1000"), 1000u);
  EXPECT_FALSE(ParseSizeBytes("big").ok());
  // TB as KB, MB and GB ("1TB" was refused); a wrong unit lists the units (found by a
  // black-box test).
  EXPECT_EQ(*ParseSizeBytes("1TB"), 1'000'000'000'000u);
  EXPECT_EQ(*ParseSizeBytes("1TiB"), 1ull << 40);
  EXPECT_EQ(*ParseSizeBytes("4 MiB"), 4u << 20);
  EXPECT_EQ(ParseSizeBytes("1K").status().message(),
            "invalid size unit in '1K' (units: B, KiB, MiB, GiB, TiB, KB or kB, MB, GB, TB)");
  // Past 2^64 - 1 is "too large", never the product modulo 2^64 (17179869184GiB was 0:
  // found by a black-box test).
  EXPECT_EQ(*ParseSizeBytes("18446744073709551615"), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(*ParseSizeBytes("16777215TiB"), 16777215ull << 40);
  for (const char* big :
       {"18446744073709551616", "99999999999999999999999", "99999999999GiB", "17179869184GiB",
        "17179869185GiB", "16777216TiB", "18446744073709552KB"}) {
    auto r = ParseSizeBytes(big);
    ASSERT_FALSE(r.ok()) << big << " = " << *r;
    EXPECT_EQ(r.status().message(), fmt::format("size '{}' too large", big));
  }
}

}  // namespace joule

namespace joule {
namespace {

// The digits, fields and width of the millisecond form, against fmt's formatting of the
// same civil fields, over the whole int64 range (years 1677–2262).
TEST(TimeFormatTest, MillisFormAgreesWithFmtOverTheInt64Range) {
  std::mt19937_64 rng(7);
  std::vector<int64_t> times = {0,
                                -1,
                                1,
                                std::numeric_limits<int64_t>::min(),
                                std::numeric_limits<int64_t>::max(),
                                951782400LL * kNanosPerSecond};
  for (int i = 0; i < 200'000; ++i) times.push_back(static_cast<int64_t>(rng()));
  for (int64_t t : times) {
    const int64_t ms = t / kNanosPerMilli - (t % kNanosPerMilli < 0 ? 1 : 0);
    const int64_t days = ms / 86'400'000 - (ms % 86'400'000 < 0 ? 1 : 0);
    const int64_t ms_of_day = ms - days * 86'400'000;
    int64_t y;
    unsigned m, d;
    CivilFromDays(days, &y, &m, &d);
    const int64_t s = ms_of_day / 1000;
    const std::string want = fmt::format("{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}.{:03d}Z", y, m,
                                         d, s / 3600, s / 60 % 60, s % 60, ms_of_day % 1000);
    ASSERT_EQ(FormatRfc3339Millis(t), want) << t;
    char b[24];
    ASSERT_EQ(WriteRfc3339Millis(b, t), b + 24);
    ASSERT_EQ(std::string(b, 24), want) << t;
  }
}

}  // namespace
}  // namespace joule

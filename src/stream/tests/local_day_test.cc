#include "stream/local_day.h"

#include <gtest/gtest.h>

#include <cstdio>

#include "common/clock.h"
#include "common/time_format.h"

namespace joule::stream {
namespace {

int64_t T(const char* s) {
  int64_t t = 0;
  EXPECT_TRUE(ParseRfc3339(s, &t)) << s;
  return t;
}

struct DayCase {
  const char* zone;
  const char* instant;
  const char* date;
  const char* start;
  int64_t hours_x4;  // day length in quarter hours
};

TEST(LocalDayTest, Zones) {
  ZoneCache zones;
  const DayCase cases[] = {
      {"UTC", "2026-11-28T19:00:00Z", "2026-11-28", "2026-11-28T00:00:00Z", 96},
      {"Europe/Berlin", "2026-11-28T23:30:00Z", "2026-11-29", "2026-11-28T23:00:00Z", 96},
      {"America/New_York", "2026-03-08T12:00:00Z", "2026-03-08", "2026-03-08T05:00:00Z", 92},
      {"America/New_York", "2026-11-01T12:00:00Z", "2026-11-01", "2026-11-01T04:00:00Z", 100},
      {"Asia/Kolkata", "2026-11-28T18:29:59Z", "2026-11-28", "2026-11-27T18:30:00Z", 96},
      {"Asia/Kolkata", "2026-11-28T18:30:00Z", "2026-11-29", "2026-11-28T18:30:00Z", 96},
      {"Asia/Kathmandu", "2026-11-28T18:15:00Z", "2026-11-29", "2026-11-28T18:15:00Z", 96},
      // Lord Howe: +10:30 standard, +11 in DST (first Sunday of October 02:00 → 02:30).
      {"Australia/Lord_Howe", "2026-10-04T06:00:00Z", "2026-10-04", "2026-10-03T13:30:00Z", 94},
      {"Australia/Lord_Howe", "2026-04-05T06:00:00Z", "2026-04-05", "2026-04-04T13:00:00Z", 98},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.zone) + " " + c.instant);
    const date::time_zone* z = zones.Find(c.zone);
    LocalDay d = LocalDayOf(z, T(c.instant));
    EXPECT_EQ(d.date, c.date);
    EXPECT_EQ(FormatRfc3339Millis(d.start_ns), FormatRfc3339Millis(T(c.start)));
    EXPECT_EQ(d.end_ns - d.start_ns, c.hours_x4 * 15 * kNanosPerMinute);
  }
  EXPECT_EQ(zones.Find("Not/AZone"), nullptr);
}

// The date label of a UTC day, over every day a nanosecond timestamp can hold (years
// 1678–2261), against the civil-date conversion printed with snprintf.
TEST(LocalDayTest, DateLabels) {
  const int64_t first = -106000, last = 106000;  // days since 1970-01-01
  for (int64_t day = first; day <= last; ++day) {
    LocalDay d = LocalDayOf(nullptr, day * kNanosPerDay + 12 * kNanosPerHour);
    int64_t y;
    unsigned m, dd;
    CivilFromDays(day, &y, &m, &dd);
    char want[32];
    std::snprintf(want, sizeof want, "%04lld-%02u-%02u", static_cast<long long>(y), m, dd);
    ASSERT_EQ(d.date, want) << day;
  }
  EXPECT_EQ(LocalDayOf(nullptr, 0).date, "1970-01-01");
  EXPECT_EQ(LocalDayOf(nullptr, -1).date, "1969-12-31");
}

}  // namespace
}  // namespace joule::stream

#include "net/http_date.h"

#include <gtest/gtest.h>

#include <ctime>
#include <string>

namespace joule::net {
namespace {

std::string Fixdate(int64_t unix_seconds) {
  char out[29];
  FormatImfFixdate(unix_seconds, out);
  return std::string(out, sizeof out);
}

TEST(HttpDate, ImfFixdate) {
  EXPECT_EQ(Fixdate(784111777), "Sun, 06 Nov 1994 08:49:37 GMT");  // RFC 9110's example
  EXPECT_EQ(Fixdate(0), "Thu, 01 Jan 1970 00:00:00 GMT");
  EXPECT_EQ(Fixdate(951782400), "Tue, 29 Feb 2000 00:00:00 GMT");
  EXPECT_EQ(Fixdate(1796083199), "Mon, 30 Nov 2026 23:59:59 GMT");
  EXPECT_EQ(Fixdate(4102444800), "Fri, 01 Jan 2100 00:00:00 GMT");
  EXPECT_EQ(Fixdate(253402300799), "Fri, 31 Dec 9999 23:59:59 GMT");
  // Every day of four years against the C library.
  for (int64_t t = 1'700'000'000; t < 1'700'000'000 + 4 * 366 * 86400; t += 86400 + 3601) {
    const time_t tt = static_cast<time_t>(t);
    tm parts{};
    gmtime_r(&tt, &parts);
    char want[64];
    strftime(want, sizeof want, "%a, %d %b %Y %H:%M:%S GMT", &parts);  // C locale
    ASSERT_EQ(Fixdate(t), want) << t;
  }
}

TEST(HttpDate, HeaderLineIsTheCurrentSecond) {
  const time_t before = time(nullptr);
  const std::string line(DateHeaderLine());
  const time_t after = time(nullptr);
  ASSERT_EQ(line.size(), 37u) << line;
  EXPECT_EQ(line.substr(0, 6), "Date: ");
  EXPECT_EQ(line.substr(35), "\r\n");
  // The coarse clock may lag the precise one by a tick.
  const std::string date = line.substr(6, 29);
  EXPECT_TRUE(date == Fixdate(before) || date == Fixdate(after) || date == Fixdate(before - 1))
      << date;
}

}  // namespace
}  // namespace joule::net

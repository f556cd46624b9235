#include "net/http_date.h"

#include <time.h>

#include <cstring>

namespace joule::net {
namespace {

constexpr std::string_view kPrefix = "Date: ";
constexpr size_t kDateSize = 29;  // "Sun, 06 Nov 1994 08:49:37 GMT"

void Put2(char* out, int v) {
  out[0] = static_cast<char>('0' + v / 10);
  out[1] = static_cast<char>('0' + v % 10);
}

}  // namespace

void FormatImfFixdate(int64_t unix_seconds, char* out) {
  static constexpr char kDays[] = "SunMonTueWedThuFriSat";
  static constexpr char kMonths[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
  // Days to civil date (H. Hinnant's algorithm), so no gmtime_r and no time zone lookup.
  int64_t days = unix_seconds / 86400;
  int64_t secs = unix_seconds % 86400;
  if (secs < 0) {
    secs += 86400;
    --days;
  }
  const int weekday = static_cast<int>((days % 7 + 11) % 7);  // 1970-01-01 was a Thursday
  const int64_t z = days + 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const int64_t doe = z - era * 146097;
  const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const int64_t mp = (5 * doy + 2) / 153;
  const int day = static_cast<int>(doy - (153 * mp + 2) / 5 + 1);
  const int month = static_cast<int>(mp < 10 ? mp + 3 : mp - 9);
  const int year = static_cast<int>(yoe + era * 400 + (month <= 2 ? 1 : 0));

  std::memcpy(out, kDays + 3 * weekday, 3);
  out[3] = ',';
  out[4] = ' ';
  Put2(out + 5, day);
  out[7] = ' ';
  std::memcpy(out + 8, kMonths + 3 * (month - 1), 3);
  out[11] = ' ';
  Put2(out + 12, year / 100);
  Put2(out + 14, year % 100);
  out[16] = ' ';
  Put2(out + 17, static_cast<int>(secs / 3600));
  out[19] = ':';
  Put2(out + 20, static_cast<int>(secs / 60 % 60));
  out[22] = ':';
  Put2(out + 23, static_cast<int>(secs % 60));
  std::memcpy(out + 25, " GMT", 4);
}

std::string_view DateHeaderLine() {
  struct Cache {
    int64_t second = -1;
    char line[kPrefix.size() + kDateSize + 2];
  };
  thread_local Cache cache;
  timespec now{};
  clock_gettime(CLOCK_REALTIME_COARSE, &now);
  if (now.tv_sec != cache.second) {
    std::memcpy(cache.line, kPrefix.data(), kPrefix.size());
    FormatImfFixdate(now.tv_sec, cache.line + kPrefix.size());
    std::memcpy(cache.line + kPrefix.size() + kDateSize, "\r\n", 2);
    cache.second = now.tv_sec;
  }
  return {cache.line, sizeof cache.line};
}

}  // namespace joule::net

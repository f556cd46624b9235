#include "stream/local_day.h"

#include <date/tz.h>

#include <chrono>
#include <cstdio>
#include <exception>

#include "common/clock.h"
#include "common/time_format.h"

namespace joule::stream {

const date::time_zone* ZoneCache::Find(std::string_view name) {
  if (name.empty() || name == "UTC" || name == "Etc/UTC") return nullptr;
  auto it = zones_.find(std::string(name));
  if (it != zones_.end()) return it->second;
  const date::time_zone* zone = nullptr;
  try {
    zone = date::locate_zone(name);
  } catch (const std::exception&) {
    zone = nullptr;  // unknown zone: UTC
  }
  zones_.emplace(std::string(name), zone);
  return zone;
}

namespace {

std::string FormatDate(int64_t days) {
  int64_t y;
  unsigned m, d;
  CivilFromDays(days, &y, &m, &d);
  if (y < 0 || y > 9999) {  // outside the four-digit years: the general path
    char buf[32];
    std::snprintf(buf, sizeof buf, "%04lld-%02u-%02u", static_cast<long long>(y), m, d);
    return buf;
  }
  // "YYYY-MM-DD" by hand: this runs for every new day window (snprintf was ~1,700
  // instructions a call).
  const auto yy = static_cast<unsigned>(y);
  const char out[10] = {static_cast<char>('0' + yy / 1000),
                        static_cast<char>('0' + yy / 100 % 10),
                        static_cast<char>('0' + yy / 10 % 10),
                        static_cast<char>('0' + yy % 10),
                        '-',
                        static_cast<char>('0' + m / 10),
                        static_cast<char>('0' + m % 10),
                        '-',
                        static_cast<char>('0' + d / 10),
                        static_cast<char>('0' + d % 10)};
  return std::string(out, sizeof out);
}

int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

// UTC seconds of local midnight starting `local_day` (days since epoch, local).
int64_t LocalMidnightToSys(const date::time_zone* zone, int64_t local_day) {
  using namespace std::chrono;
  date::local_seconds ls{seconds{local_day * 86400}};
  date::local_info li = zone->get_info(ls);
  switch (li.result) {
    case date::local_info::unique:
    case date::local_info::ambiguous:  // first occurrence = the earlier offset
      return (ls.time_since_epoch() - li.first.offset).count();
    case date::local_info::nonexistent:
    default:
      return li.second.begin.time_since_epoch().count();
  }
}

}  // namespace

LocalDay LocalDayOf(const date::time_zone* zone, int64_t t_ns) {
  LocalDay out;
  if (zone == nullptr) {
    int64_t day = FloorDiv(t_ns, kNanosPerDay);
    out.start_ns = day * kNanosPerDay;
    out.end_ns = out.start_ns + kNanosPerDay;
    out.date = FormatDate(day);
    return out;
  }
  using namespace std::chrono;
  date::sys_seconds st{seconds{FloorDiv(t_ns, kNanosPerSecond)}};
  date::sys_info info = zone->get_info(st);
  int64_t local_s = st.time_since_epoch().count() + info.offset.count();
  int64_t day = FloorDiv(local_s, 86400);
  int64_t start = LocalMidnightToSys(zone, day) * kNanosPerSecond;
  if (start > t_ns) {  // only possible in pathological zone data: step back a day
    --day;
    start = LocalMidnightToSys(zone, day) * kNanosPerSecond;
  }
  int64_t end = LocalMidnightToSys(zone, day + 1) * kNanosPerSecond;
  if (end <= t_ns) {
    ++day;
    start = end;
    end = LocalMidnightToSys(zone, day + 1) * kNanosPerSecond;
  }
  out.start_ns = start;
  out.end_ns = end;
  out.date = FormatDate(day);
  return out;
}

}  // namespace joule::stream

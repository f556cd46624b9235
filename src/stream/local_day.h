// LocalDays: the local calendar day containing an instant, in an IANA time zone (via
// Howard Hinnant's date/tz on the system tz database). Zone lookups are cached, since
// date::locate_zone is slow. Not thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

namespace date {
class time_zone;
}

namespace joule::stream {

struct LocalDay {
  int64_t start_ns = 0;  // UTC instant of local midnight (or the first valid instant)
  int64_t end_ns = 0;    // the next day's start
  std::string date;      // "YYYY-MM-DD"
};

class ZoneCache {
 public:
  // Returns the zone, or nullptr for UTC or an unknown name (treated as UTC).
  const date::time_zone* Find(std::string_view name);

 private:
  std::unordered_map<std::string, const date::time_zone*> zones_;
};

// The local day containing t_ns. `zone` == nullptr means UTC. A local midnight that does
// not exist (DST gap at midnight) starts the day at the end of the gap; an ambiguous one
// (overlap) at its first occurrence.
LocalDay LocalDayOf(const date::time_zone* zone, int64_t t_ns);

}  // namespace joule::stream

#include "store/metadata_time.h"

#include <algorithm>
#include <mutex>
#include <string>
#include <unordered_set>

#include "common/logging.h"

namespace joule::store {

int64_t NanosFromStoredMicros(int64_t micros) {
  return std::clamp(micros, kMinStoredMicros, kMaxStoredMicros) * 1000;
}

std::optional<int64_t> NanosFromStoredMicros(std::optional<int64_t> micros) {
  if (!micros) return std::nullopt;
  return NanosFromStoredMicros(*micros);
}

std::optional<int64_t> InstalledAtFromStoredMicros(std::string_view device_id,
                                                   std::optional<int64_t> micros) {
  if (!micros) return std::nullopt;
  if (*micros >= kMinStoredMicros && *micros <= kMaxStoredMicros) return *micros * 1000;
  // Once per device: the row is read again on every cache miss and device list. Devices
  // are few enough to remember; past the bound, every read warns (a flood of bad rows).
  static std::mutex mu;
  static std::unordered_set<std::string> warned;
  bool first = true;
  {
    std::lock_guard lock(mu);
    if (warned.size() < 10'000) first = warned.emplace(device_id).second;
  }
  if (first) {
    logging::Warn(
        "device installed_at out of range (1677-09-21..2262-04-11): read as absent; the stored "
        "value is left as it is",
        {{"device_id", std::string(device_id)}, {"stored_microseconds", std::to_string(*micros)}});
  }
  return std::nullopt;
}

std::optional<int64_t> StoredMicrosFromNanos(std::optional<int64_t> nanos) {
  if (!nanos) return std::nullopt;
  return *nanos / 1000;
}

}  // namespace joule::store

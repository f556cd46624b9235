// How `joule serve` and `joule replay` set up the window engine from the config, so that
// a replay computes exactly what the live processors compute.
#pragma once

#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "app/config.h"
#include "store/metadata_store.h"
#include "stream/window_engine.h"

namespace joule::app {

stream::EngineOptions EngineOptionsFrom(const Config& config);

// The engine's view of device timezones: the metadata store (through its cache, which
// serves a device it has seen stale while the database is unreachable); std::nullopt
// when the store cannot answer (unreachable or timed out: the zone is not guessed, see
// stream::TimezoneProvider); "UTC" for unregistered devices, and for a zone name the API would
// refuse (api::ValidateTimezone: unknown to the tz database, "localtime", "posix/…"), which plain
// SQL can still put into `devices.timezone`. The engine falls back to UTC for an unknown zone
// anyway, but it writes the name it was given into every 1d record ("timezone"): the records must
// name the zone actually used. Such a name is logged (warn, once per name). Thread-safe: the
// processors share one.
class MetadataTimezones final : public stream::TimezoneProvider {
 public:
  explicit MetadataTimezones(store::MetadataStore* metadata) : metadata_(metadata) {}
  std::optional<std::string> TimezoneOf(std::string_view device_id) override;

 private:
  // Whether `name` is a zone the engine can use; logs a refused one the first time.
  bool Usable(const std::string& name, std::string_view device_id);

  store::MetadataStore* metadata_;
  std::mutex mu_;
  std::unordered_map<std::string, bool> checked_;  // zone name → usable
};

}  // namespace joule::app

#include "app/engine_setup.h"

namespace joule::app {

stream::EngineOptions EngineOptionsFrom(const Config& c) {
  stream::EngineOptions o;
  o.window_ns = c.window_ns;
  o.out_of_orderness_ns = c.out_of_orderness_ns;
  o.allowed_lateness_ns = c.allowed_lateness_ns;
  o.idle_timeout_ns = c.idle_timeout_ns;
  o.early_fire_interval_ns = c.early_fire_interval_ns;
  o.max_gap_ns = c.max_gap_ns;
  for (const auto& [name, kind] : c.metric_kinds) o.kinds[name] = kind;
  return o;
}

std::string MetadataTimezones::TimezoneOf(std::string_view device_id) {
  Result<store::Device> d = metadata_->GetDevice(device_id);
  if (!d.ok() || d->timezone.empty()) return "UTC";
  return d->timezone;
}

}  // namespace joule::app

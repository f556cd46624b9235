#include "app/engine_setup.h"

#include "api/device_fields.h"
#include "common/logging.h"

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

std::optional<std::string> MetadataTimezones::TimezoneOf(std::string_view device_id) {
  Result<store::Device> d = metadata_->GetDevice(device_id);
  if (!d.ok()) {
    // The store cannot say now (unreachable, timed out): not guessed. A device the engine
    // has keeps its zone; a new one waits (the processor hands its events over later).
    if (d.status().code() == StatusCode::kUnavailable) return std::nullopt;
    return "UTC";  // unregistered (or an id the store refuses)
  }
  if (d->timezone.empty()) return "UTC";
  if (!Usable(d->timezone, device_id)) return "UTC";
  return d->timezone;
}

bool MetadataTimezones::Usable(const std::string& name, std::string_view device_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = checked_.find(name);
  if (it != checked_.end()) return it->second;
  const Status valid = api::ValidateTimezone(name);
  if (!valid.ok()) {
    logging::Warn(
        "device timezone unknown: its local days are computed in UTC",
        {{"device_id", std::string(device_id)}, {"timezone", name}, {"error", valid.message()}});
  }
  // Names are few (a handful of zones per deployment); a flood of distinct ones set with
  // SQL is checked again rather than kept.
  if (checked_.size() < 10'000) checked_.emplace(name, valid.ok());
  return valid.ok();
}

}  // namespace joule::app

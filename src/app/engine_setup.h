// How `joule serve` and `joule replay` set up the window engine from the config, so that
// a replay computes exactly what the live processors compute.
#pragma once

#include <string>
#include <string_view>

#include "app/config.h"
#include "store/metadata_store.h"
#include "stream/window_engine.h"

namespace joule::app {

stream::EngineOptions EngineOptionsFrom(const Config& config);

// The engine's view of device timezones: the metadata store (through its cache); "UTC"
// for unknown devices.
class MetadataTimezones final : public stream::TimezoneProvider {
 public:
  explicit MetadataTimezones(store::MetadataStore* metadata) : metadata_(metadata) {}
  std::string TimezoneOf(std::string_view device_id) override;

 private:
  store::MetadataStore* metadata_;
};

}  // namespace joule::app

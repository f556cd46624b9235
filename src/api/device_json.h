// JSON of device metadata, as embedded in every device response ("device": {…}).
#pragma once

#include <cstddef>
#include <string>

#include "common/json_writer.h"
#include "store/metadata_store.h"

namespace joule::api {

// {"device_id","owner_id","name","model","location","timezone","installed_at","config",
//  "created_at","updated_at"}; an unregistered device (empty owner) is just {"device_id"}.
void WriteDeviceJson(JsonWriter& w, const store::Device& device);
// The same bytes appended to `out` (literal keys, no JsonWriter state): the realtime route.
void AppendDeviceJson(std::string* out, const store::Device& device);
// An upper bound of what AppendDeviceJson appends, unless a string needs \u escapes.
size_t DeviceJsonSizeHint(const store::Device& device);

}  // namespace joule::api

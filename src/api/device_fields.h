// Validation of device metadata fields (CONTRACT §3): shared by the device API
// (POST/PATCH /v1/devices) and `joule devices import`, so both accept exactly the same
// values. Every failure is an InvalidArgument whose message names the field.
// Pure functions, thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"
#include "store/metadata_store.h"

namespace joule::api {

inline constexpr size_t kMaxOwnerIdLength = 128;
inline constexpr size_t kMaxDeviceTextLength = 256;         // name, model, location (bytes)
inline constexpr size_t kMaxDeviceConfigBytes = 16 * 1024;  // config, as compact JSON
// config's own levels of objects and arrays: what fits in a request body of at most 32.
inline constexpr size_t kMaxDeviceConfigDepth = 31;
inline constexpr size_t kMaxTimezoneLength = 64;

// 1–128 characters of [A-Za-z0-9._:-], not "." or "..".
Status ValidateDeviceIdField(std::string_view device_id);
// 1–128 characters of [A-Za-z0-9._:-], not "." or ".." (the device id syntax).
Status ValidateOwnerId(std::string_view owner_id);
// An IANA time zone name known to the system tz database ("UTC", "Europe/Berlin").
Status ValidateTimezone(std::string_view timezone);
// name, model, location: at most kMaxDeviceTextLength bytes, no control characters.
Status ValidateDeviceText(std::string_view field, std::string_view value);
// RFC 3339 → nanoseconds since the epoch.
Result<int64_t> ParseInstalledAt(std::string_view value);
// A device config given as text (`joule devices import`'s config column), under the API's
// rules for the `config` field: a JSON object of at most kMaxDeviceConfigBytes as compact
// JSON and kMaxDeviceConfigDepth levels, whose `whole_home` (if any) is true or false.
// Returns its compact JSON; "" and "null" are no config ("").
Result<std::string> ParseDeviceConfig(std::string_view text);
// The checks of a config object given as its compact JSON (the API parses the body's
// `config` itself): its size and `whole_home`. Returns the JSON.
Result<std::string> ValidateDeviceConfigJson(std::string json);
// Whether two stored configs ("" = none) are the same JSON value: object members in any
// order (the last of a repeated key counts), numbers by value. PostgreSQL's jsonb stores
// `{"a":1}` as `{"a": 1}` and reorders keys, so comparing the text would call it changed.
bool SameDeviceConfig(std::string_view a, std::string_view b);
// Every field of a device about to be created or imported (config is the caller's).
Status ValidateDevice(const store::Device& device);

}  // namespace joule::api

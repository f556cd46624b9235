// Validation of device metadata fields (CONTRACT §3): shared by the device API
// (POST/PATCH /v1/devices) and `joule devices import`, so both accept exactly the same
// values. Every failure is an InvalidArgument whose message names the field.
// Pure functions, thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "common/status.h"
#include "store/metadata_store.h"

namespace joule::api {

inline constexpr size_t kMaxOwnerIdLength = 128;
inline constexpr size_t kMaxDeviceTextLength = 256;         // name, model, location (bytes)
inline constexpr size_t kMaxDeviceConfigBytes = 16 * 1024;  // config, as compact JSON
inline constexpr size_t kMaxTimezoneLength = 64;

// 1–128 characters of [A-Za-z0-9._:-].
Status ValidateDeviceIdField(std::string_view device_id);
// 1–128 characters of [A-Za-z0-9._:-] (the device id alphabet).
Status ValidateOwnerId(std::string_view owner_id);
// An IANA time zone name known to the system tz database ("UTC", "Europe/Berlin").
Status ValidateTimezone(std::string_view timezone);
// name, model, location: at most kMaxDeviceTextLength bytes, no control characters.
Status ValidateDeviceText(std::string_view field, std::string_view value);
// RFC 3339 → nanoseconds since the epoch.
Result<int64_t> ParseInstalledAt(std::string_view value);
// Every field of a device about to be created or imported (config is the caller's).
Status ValidateDevice(const store::Device& device);

}  // namespace joule::api

// A device's whole-home (main) meter flag: `"config": {"whole_home": true}` in its metadata
// (CONTRACT §3). A whole-home meter measures the home's whole consumption, appliances
// included, so owner energy totals count only such meters where the owner has one (the
// other devices are loads behind it: owner_energy_routes.cc).
// Pure functions, thread-safe.
#pragma once

#include <string_view>

#include "common/status.h"

namespace joule::api {

inline constexpr std::string_view kWholeHomeConfigKey = "whole_home";

// Whether the device config JSON `config_json` (an object, or "" for none) marks a whole-home
// meter: its `whole_home` member is `true`. Anything else (no config, no member, another
// value, JSON that does not parse) is not one.
bool IsWholeHomeMeter(std::string_view config_json);

// The device API's check of a config about to be stored: `whole_home`, when present, is
// `true` or `false`, once (so `"whole_home": "yes"` is a 400, not a flag silently ignored).
Status ValidateWholeHomeFlag(std::string_view config_json);

}  // namespace joule::api

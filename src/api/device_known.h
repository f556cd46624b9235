// DeviceKnown: whether Joule knows a device that is not registered. With
// auth.mode = "disabled" ingest takes any device id without registration, and the read
// routes answer such a device like a registered one once Joule has seen it; only an id it
// has never seen is 404 `not_found` (CONTRACT §3, "Devices sending without registration").
// Realtime, history and a device stream apply this one rule. Thread-safe as the stores are.
#pragma once

#include <string>

#include "api/api_context.h"
#include "common/status.h"

namespace joule::api {

// True when the engine holds the device's state, the latest store has a reading or window
// of it, or history has any record of it (any resolution). Not known and the answer could
// be wrong: Unavailable — while the processors restore their state at start, or while the
// latest store is down or catching up (it may hold the device's only data), as realtime
// answers then (503 + Retry-After). A failed history read is its error. False otherwise.
Result<bool> DeviceKnown(const ApiContext& ctx, const std::string& device_id);

}  // namespace joule::api

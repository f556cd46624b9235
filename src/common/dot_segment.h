// "." and "..": path segments that no URL reaches (/v1/devices/.. is /v1 once a client or
// proxy normalises the path). Every id that appears in a URL path — devices, owners, alert
// rules and their scopes — refuses them (found by a black-box test: such devices were
// registered and ingested, and the dashboard showed 404). Pure, thread-safe.
#pragma once

#include <string_view>

namespace joule {

inline bool IsDotSegment(std::string_view id) { return id == "." || id == ".."; }

}  // namespace joule

#include "api/device_fields.h"

#include <date/tz.h>
#include <fmt/format.h>

#include <stdexcept>

#include "common/time_format.h"
#include "ingest/validation.h"

namespace joule::api {

Status ValidateDeviceIdField(std::string_view device_id) {
  if (ingest::ValidDeviceId(device_id)) return Status::Ok();
  return Status::InvalidArgument("device_id must be 1-128 characters of [A-Za-z0-9._:-]");
}

Status ValidateOwnerId(std::string_view owner_id) {
  // The same alphabet as device ids: owner ids appear in paths and CSV files.
  if (owner_id.size() <= kMaxOwnerIdLength && ingest::ValidDeviceId(owner_id)) {
    return Status::Ok();
  }
  return Status::InvalidArgument("owner_id must be 1-128 characters of [A-Za-z0-9._:-]");
}

Status ValidateTimezone(std::string_view timezone) {
  auto fail = [&] {
    std::string shown(timezone.substr(0, kMaxTimezoneLength));
    return Status::InvalidArgument(fmt::format(
        "timezone must be an IANA time zone name such as \"Europe/Berlin\" or \"UTC\", got "
        "\"{}\"",
        shown));
  };
  if (timezone.empty() || timezone.size() > kMaxTimezoneLength) return fail();
  for (char c : timezone) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '/' || c == '_' || c == '-' || c == '+';
    if (!ok) return fail();
  }
  if (timezone.front() == '/' || timezone.find("..") != std::string_view::npos) return fail();
  // Files of the tz database that are not zones of their own: the host's setting (a device's
  // local day would change with it), the POSIX rules template, the "Factory" placeholder,
  // and the posix/ and right/ (leap-second) copies of the real names.
  for (std::string_view not_a_zone : {"localtime", "posixrules", "Factory"}) {
    if (timezone == not_a_zone) return fail();
  }
  for (std::string_view prefix : {"posix/", "right/"}) {
    if (timezone.substr(0, prefix.size()) == prefix) return fail();
  }
  try {
    // Throws std::runtime_error for a name the tz database does not know.
    (void)date::locate_zone(timezone);
  } catch (const std::exception&) {
    return fail();
  }
  return Status::Ok();
}

Status ValidateDeviceText(std::string_view field, std::string_view value) {
  if (value.size() > kMaxDeviceTextLength) {
    return Status::InvalidArgument(fmt::format("{} must be at most {} bytes, got {}", field,
                                               kMaxDeviceTextLength, value.size()));
  }
  for (unsigned char c : value) {
    if (c < 0x20 || c == 0x7f) {
      return Status::InvalidArgument(fmt::format("{} must not contain control characters", field));
    }
  }
  return Status::Ok();
}

Result<int64_t> ParseInstalledAt(std::string_view value) {
  int64_t ns = 0;
  if (!ParseRfc3339(value, &ns)) {
    return Status::InvalidArgument(
        fmt::format("installed_at must be an RFC 3339 time such as \"2024-05-01T12:00:00Z\", "
                    "got \"{}\"",
                    value.substr(0, 64)));
  }
  return ns;
}

Status ValidateDevice(const store::Device& d) {
  JOULE_RETURN_IF_ERROR(ValidateDeviceIdField(d.device_id));
  JOULE_RETURN_IF_ERROR(ValidateOwnerId(d.owner_id));
  JOULE_RETURN_IF_ERROR(ValidateDeviceText("name", d.name));
  JOULE_RETURN_IF_ERROR(ValidateDeviceText("model", d.model));
  JOULE_RETURN_IF_ERROR(ValidateDeviceText("location", d.location));
  JOULE_RETURN_IF_ERROR(ValidateTimezone(d.timezone));
  return Status::Ok();
}

}  // namespace joule::api

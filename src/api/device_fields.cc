#include "api/device_fields.h"

#include <date/tz.h>
#include <fmt/format.h>
#include <simdjson.h>

#include <algorithm>
#include <map>
#include <stdexcept>

#include "api/whole_home_meter.h"
#include "common/time_format.h"
#include "ingest/validation.h"

namespace joule::api {

Status ValidateDeviceIdField(std::string_view device_id) {
  if (ingest::ValidDeviceId(device_id)) return Status::Ok();
  return Status::InvalidArgument(
      "device_id must be 1-128 characters of [A-Za-z0-9._:-], not \".\" or \"..\" (no URL "
      "reaches those)");
}

Status ValidateOwnerId(std::string_view owner_id) {
  // The same alphabet as device ids: owner ids appear in paths and CSV files.
  if (owner_id.size() <= kMaxOwnerIdLength && ingest::ValidDeviceId(owner_id)) {
    return Status::Ok();
  }
  return Status::InvalidArgument(
      "owner_id must be 1-128 characters of [A-Za-z0-9._:-], not \".\" or \"..\" (no URL "
      "reaches those)");
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

Result<std::string> ParseDeviceConfig(std::string_view text) {
  if (text.empty() || text == "null") return std::string();
  simdjson::dom::parser parser;
  // simdjson's max_depth counts the document itself (device_routes.cc ParseBodyObject).
  if (parser.allocate(std::max<size_t>(text.size(), 64), kMaxDeviceConfigDepth + 1) !=
      simdjson::SUCCESS) {
    return Status::ResourceExhausted("cannot allocate a JSON parser for config");
  }
  simdjson::dom::element root;
  const simdjson::error_code parsed = parser.parse(simdjson::padded_string(text)).get(root);
  if (parsed == simdjson::DEPTH_ERROR) {
    return Status::InvalidArgument(
        fmt::format("config is nested deeper than {} levels", kMaxDeviceConfigDepth));
  }
  if (parsed != simdjson::SUCCESS) {
    return Status::InvalidArgument(
        fmt::format("config is not valid JSON ({})", simdjson::error_message(parsed)));
  }
  if (!root.is_object()) return Status::InvalidArgument("config must be a JSON object");
  return ValidateDeviceConfigJson(simdjson::minify(root));
}

Result<std::string> ValidateDeviceConfigJson(std::string json) {
  if (json.size() > kMaxDeviceConfigBytes) {
    return Status::InvalidArgument(
        fmt::format("config must be at most {} bytes as JSON", kMaxDeviceConfigBytes));
  }
  // U+0000 in a string or key: PostgreSQL's jsonb cannot store it ("unsupported Unicode
  // escape sequence"), so it is refused on every metadata backend alike — a config SQLite
  // took could not move to PostgreSQL (found by a black-box test). Outside strings valid
  // JSON has no backslash, so every one starts an escape.
  for (size_t i = 0; i + 1 < json.size(); ++i) {
    if (json[i] != '\\') continue;
    if (json.compare(i + 1, 5, "u0000") == 0) {
      return Status::InvalidArgument(
          "config must not contain the character U+0000 (\\u0000) in a string or key");
    }
    ++i;  // the escaped character
  }
  JOULE_RETURN_IF_ERROR(ValidateWholeHomeFlag(json));
  return json;
}

namespace {

bool SameJson(simdjson::dom::element a, simdjson::dom::element b) {
  using simdjson::dom::element_type;
  const element_type ta = a.type(), tb = b.type();
  auto numeric = [](element_type t) {
    return t == element_type::INT64 || t == element_type::UINT64 || t == element_type::DOUBLE;
  };
  if (numeric(ta) && numeric(tb)) {
    if (ta == element_type::DOUBLE || tb == element_type::DOUBLE) {
      double x = 0, y = 0;
      return a.get(x) == simdjson::SUCCESS && b.get(y) == simdjson::SUCCESS && x == y;
    }
    if (ta != tb) return false;  // an int64 (below 2^63) is never a uint64 (2^63 and above)
    if (ta == element_type::INT64) {
      int64_t x = 0, y = 0;
      return a.get(x) == simdjson::SUCCESS && b.get(y) == simdjson::SUCCESS && x == y;
    }
    uint64_t x = 0, y = 0;
    return a.get(x) == simdjson::SUCCESS && b.get(y) == simdjson::SUCCESS && x == y;
  }
  if (ta != tb) return false;
  switch (ta) {
    case element_type::OBJECT: {
      simdjson::dom::object oa, ob;
      if (a.get(oa) != simdjson::SUCCESS || b.get(ob) != simdjson::SUCCESS) return false;
      std::map<std::string_view, simdjson::dom::element> ma, mb;
      for (auto field : oa) ma[field.key] = field.value;
      for (auto field : ob) mb[field.key] = field.value;
      if (ma.size() != mb.size()) return false;
      for (const auto& [key, value] : ma) {
        auto it = mb.find(key);
        if (it == mb.end() || !SameJson(value, it->second)) return false;
      }
      return true;
    }
    case element_type::ARRAY: {
      simdjson::dom::array xa, xb;
      if (a.get(xa) != simdjson::SUCCESS || b.get(xb) != simdjson::SUCCESS) return false;
      if (xa.size() != xb.size()) return false;
      auto ib = xb.begin();
      for (simdjson::dom::element ea : xa) {
        if (!SameJson(ea, *ib)) return false;
        ++ib;
      }
      return true;
    }
    case element_type::STRING: {
      std::string_view x, y;
      return a.get(x) == simdjson::SUCCESS && b.get(y) == simdjson::SUCCESS && x == y;
    }
    case element_type::BOOL: {
      bool x = false, y = false;
      return a.get(x) == simdjson::SUCCESS && b.get(y) == simdjson::SUCCESS && x == y;
    }
    default:  // NULL_VALUE
      return true;
  }
}

}  // namespace

bool SameDeviceConfig(std::string_view a, std::string_view b) {
  if (a == b) return true;
  if (a.empty() || b.empty()) return false;
  simdjson::dom::parser pa, pb;
  simdjson::dom::element ea, eb;
  if (pa.parse(simdjson::padded_string(a)).get(ea) != simdjson::SUCCESS ||
      pb.parse(simdjson::padded_string(b)).get(eb) != simdjson::SUCCESS) {
    return false;  // not JSON (the stores refuse it): different unless byte for byte equal
  }
  return SameJson(ea, eb);
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

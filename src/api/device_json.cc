#include "api/device_json.h"

#include <string_view>

#include "common/time_format.h"

namespace joule::api {

namespace {

void Lit(std::string* out, std::string_view text) { out->append(text.data(), text.size()); }

void AppendTime(std::string* out, int64_t nanos) {
  out->push_back('"');
  AppendRfc3339Millis(out, nanos);
  out->push_back('"');
}

}  // namespace

void AppendDeviceJson(std::string* out, const store::Device& d) {
  if (d.owner_id.empty()) {
    if (d.device_id.empty()) return Lit(out, "{}");
    Lit(out, "{\"device_id\":");
    JsonWriter::AppendEscaped(out, d.device_id);
    out->push_back('}');
    return;
  }
  Lit(out, "{\"device_id\":");
  JsonWriter::AppendEscaped(out, d.device_id);
  Lit(out, ",\"owner_id\":");
  JsonWriter::AppendEscaped(out, d.owner_id);
  Lit(out, ",\"name\":");
  JsonWriter::AppendEscaped(out, d.name);
  Lit(out, ",\"model\":");
  JsonWriter::AppendEscaped(out, d.model);
  Lit(out, ",\"location\":");
  JsonWriter::AppendEscaped(out, d.location);
  Lit(out, ",\"timezone\":");
  JsonWriter::AppendEscaped(out, d.timezone.empty() ? std::string_view("UTC") : d.timezone);
  Lit(out, ",\"installed_at\":");
  if (d.installed_at_ns) {
    AppendTime(out, *d.installed_at_ns);
  } else {
    Lit(out, "null");
  }
  Lit(out, ",\"config\":");
  if (d.config_json.empty()) {
    Lit(out, "{}");
  } else {
    Lit(out, d.config_json);
  }
  Lit(out, ",\"created_at\":");
  AppendTime(out, d.created_at_ns);
  Lit(out, ",\"updated_at\":");
  AppendTime(out, d.updated_at_ns);
  out->push_back('}');
}

size_t DeviceJsonSizeHint(const store::Device& d) {
  // Keys, quotes and times take < 256 bytes; an escaped character takes at most 2 bytes
  // unless it is a control character (\u00XX), which ids and names do not hold.
  return 256 +
         2 * (d.device_id.size() + d.owner_id.size() + d.name.size() + d.model.size() +
              d.location.size() + d.timezone.size()) +
         d.config_json.size();
}

void WriteDeviceJson(JsonWriter& w, const store::Device& d) {
  std::string json;
  json.reserve(DeviceJsonSizeHint(d));
  AppendDeviceJson(&json, d);
  w.Raw(json);
}

}  // namespace joule::api

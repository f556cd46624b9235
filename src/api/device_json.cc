#include "api/device_json.h"

#include "common/time_format.h"

namespace joule::api {

void WriteDeviceJson(JsonWriter& w, const store::Device& d) {
  w.BeginObject();
  if (d.owner_id.empty()) {
    if (!d.device_id.empty()) {
      w.Key("device_id");
      w.String(d.device_id);
    }
    w.EndObject();
    return;
  }
  w.Key("device_id");
  w.String(d.device_id);
  w.Key("owner_id");
  w.String(d.owner_id);
  w.Key("name");
  w.String(d.name);
  w.Key("model");
  w.String(d.model);
  w.Key("location");
  w.String(d.location);
  w.Key("timezone");
  w.String(d.timezone.empty() ? "UTC" : d.timezone);
  w.Key("installed_at");
  if (d.installed_at_ns) {
    w.String(FormatRfc3339Millis(*d.installed_at_ns));
  } else {
    w.Null();
  }
  w.Key("config");
  if (d.config_json.empty()) {
    w.BeginObject();
    w.EndObject();
  } else {
    w.Raw(d.config_json);
  }
  w.Key("created_at");
  w.String(FormatRfc3339Millis(d.created_at_ns));
  w.Key("updated_at");
  w.String(FormatRfc3339Millis(d.updated_at_ns));
  w.EndObject();
}

}  // namespace joule::api

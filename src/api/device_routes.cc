// The device API of CONTRACT §3: register, list, read, update, delete, token rotation,
// owner keys.
//
// Who may do what (admin = the admin token, or auth.mode = "disabled"):
// - POST /v1/devices, POST /v1/devices/{id}/token, POST /v1/owners/{owner_id}/keys: admin
//   only. Anyone else gets 403 forbidden — except that rotating the token of a device the
//   caller may not see is 404, like every route that takes a device id.
// - GET /v1/devices: admin: all (optionally ?owner_id=); owner key: its own devices (an
//   ?owner_id= of another owner is an empty list); device token: 403 (tokens ingest).
//   ?model= (an addition to CONTRACT §3) keeps the devices of exactly that model.
// - GET /v1/devices/{id}: admin; the device's owner; the device's own token.
// - PATCH, DELETE /v1/devices/{id}: admin; the device's owner (who may not change
//   owner_id: 400). A device token on its own device gets 403.
// - Another owner's device, or one that does not exist, is 404 not_found, never 403: the
//   answer does not depend on whether someone else's device exists.
//
// Request bodies are JSON objects of at most kMaxBodyBytes (413 payload_too_large; another
// Content-Type than JSON 415, json_body.h); unknown or repeated fields are 400
// invalid_argument with a message naming the field.
#include <fmt/format.h>
#include <simdjson.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "api/api_context.h"
#include "api/audit.h"
#include "api/device_fields.h"
#include "api/device_json.h"
#include "api/error_response.h"
#include "api/json_body.h"
#include "api/member_handler.h"
#include "api/query_params.h"
#include "api/routes.h"
#include "api/token_route.h"
#include "common/json_writer.h"
#include "common/logging.h"
#include "common/time_format.h"
#include "ingest/validation.h"
#include "net/http_server.h"
#include "net/router.h"

namespace joule::api {
namespace {

constexpr size_t kMaxCursorBytes = 1024;

// At most once a minute (a list request may meet the same rows every time).
void WarnUnservableId(const std::string& id) {
  static std::atomic<int64_t> next_ns{0};
  const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::steady_clock::now().time_since_epoch())
                          .count();
  int64_t due = next_ns.load(std::memory_order_relaxed);
  if (now < due || !next_ns.compare_exchange_strong(due, now + 60'000'000'000LL)) return;
  logging::Warn(
      "a device in the metadata store has an id outside the id syntax; it is not listed or "
      "served (rename it there: CONTRACT §1)",
      {{"device_id", id}});
}

constexpr size_t kMaxBodyBytes = 64 * 1024;
constexpr size_t kDefaultListLimit = 100;
constexpr size_t kMaxListLimit = 1000;

net::HttpResponse Forbidden(std::string_view message) {
  return net::HttpResponse::Error(403, "forbidden", message);
}

net::HttpResponse BadRequest(std::string_view message) {
  return net::HttpResponse::Error(400, "invalid_argument", message);
}

// The body as one JSON object, or the HTTP error to send.
struct ParsedObject {
  std::unique_ptr<simdjson::dom::parser> parser;  // owns the DOM `object` points into
  simdjson::dom::object object;
};

constexpr size_t kMaxJsonDepth = 32;  // objects and arrays, counting the body itself

// REQUIRES: the body passed RefuseJsonBody.
Result<ParsedObject> ParseBodyObject(const net::HttpRequest& req) {
  ParsedObject out;
  out.parser = std::make_unique<simdjson::dom::parser>();
  simdjson::dom::element root;
  // Nesting is bounded explicitly (the device `config` object is free-form JSON).
  // simdjson's max_depth counts the document itself: N lets N - 1 levels of objects and
  // arrays through (found by a black-box test: a body exactly 32 levels deep was refused).
  if (out.parser->allocate(std::max<size_t>(req.body.size(), 64), kMaxJsonDepth + 1) !=
      simdjson::SUCCESS) {
    return Status::ResourceExhausted("cannot allocate a JSON parser for the body");
  }
  const simdjson::error_code parsed = out.parser->parse(req.body.data(), req.body.size()).get(root);
  if (parsed == simdjson::DEPTH_ERROR) {
    return Status::InvalidArgument(
        fmt::format("request body is nested deeper than {} levels", kMaxJsonDepth));
  }
  if (parsed != simdjson::SUCCESS) return Status::InvalidArgument("request body is not valid JSON");
  if (root.get_object().get(out.object) != simdjson::SUCCESS) {
    return Status::InvalidArgument("request body must be a JSON object");
  }
  std::set<std::string_view> seen;
  for (auto field : out.object) {
    if (!seen.insert(field.key).second) {
      return Status::InvalidArgument(fmt::format("field \"{}\" appears more than once",
                                                 std::string_view(field.key).substr(0, 64)));
    }
  }
  return out;
}

Result<std::string> StringField(std::string_view name, simdjson::dom::element v) {
  std::string_view s;
  if (v.get_string().get(s) != simdjson::SUCCESS) {
    return Status::InvalidArgument(fmt::format("{} must be a string", name));
  }
  return std::string(s);
}

// A string, or null (→ "") where clearing is allowed.
Result<std::string> TextField(std::string_view name, simdjson::dom::element v) {
  if (v.is_null()) return std::string();
  JOULE_ASSIGN_OR_RETURN(std::string s, StringField(name, v));
  JOULE_RETURN_IF_ERROR(ValidateDeviceText(name, s));
  return s;
}

Result<std::optional<int64_t>> InstalledAtField(simdjson::dom::element v) {
  if (v.is_null()) return std::optional<int64_t>();
  JOULE_ASSIGN_OR_RETURN(std::string s, StringField("installed_at", v));
  JOULE_ASSIGN_OR_RETURN(int64_t ns, ParseInstalledAt(s));
  return std::optional<int64_t>(ns);
}

// An object (its compact JSON), or null (→ "", no config). Free-form, but for the one key
// Joule reads, `whole_home` (whole_home_meter.h).
Result<std::string> ConfigField(simdjson::dom::element v) {
  if (v.is_null()) return std::string();
  if (!v.is_object()) return Status::InvalidArgument("config must be a JSON object");
  return ValidateDeviceConfigJson(simdjson::minify(v));
}

Result<std::string> TimezoneField(simdjson::dom::element v) {
  JOULE_ASSIGN_OR_RETURN(std::string tz, StringField("timezone", v));
  JOULE_RETURN_IF_ERROR(ValidateTimezone(tz));
  return tz;
}

Result<store::Device> DeviceFromBody(const simdjson::dom::object& obj) {
  store::Device d;
  bool have_id = false, have_owner = false;
  for (auto field : obj) {
    const std::string_view key = field.key;
    if (key == "device_id") {
      JOULE_ASSIGN_OR_RETURN(d.device_id, StringField(key, field.value));
      JOULE_RETURN_IF_ERROR(ValidateDeviceIdField(d.device_id));
      have_id = true;
    } else if (key == "owner_id") {
      JOULE_ASSIGN_OR_RETURN(d.owner_id, StringField(key, field.value));
      JOULE_RETURN_IF_ERROR(ValidateOwnerId(d.owner_id));
      have_owner = true;
    } else if (key == "name") {
      JOULE_ASSIGN_OR_RETURN(d.name, TextField(key, field.value));
    } else if (key == "model") {
      JOULE_ASSIGN_OR_RETURN(d.model, TextField(key, field.value));
    } else if (key == "location") {
      JOULE_ASSIGN_OR_RETURN(d.location, TextField(key, field.value));
    } else if (key == "timezone") {
      if (!field.value.is_null()) {
        JOULE_ASSIGN_OR_RETURN(d.timezone, TimezoneField(field.value));
      }
    } else if (key == "installed_at") {
      JOULE_ASSIGN_OR_RETURN(d.installed_at_ns, InstalledAtField(field.value));
    } else if (key == "config") {
      JOULE_ASSIGN_OR_RETURN(d.config_json, ConfigField(field.value));
    } else {
      return Status::InvalidArgument(
          fmt::format("unknown field \"{}\" (allowed: device_id, owner_id, name, model, location, "
                      "timezone, installed_at, config)",
                      key.substr(0, 64)));
    }
  }
  if (!have_id) return Status::InvalidArgument("device_id is required");
  if (!have_owner) return Status::InvalidArgument("owner_id is required");
  return d;
}

// A device GET's object may be sent back, edited (GET → edit → PATCH), as a rule's may be
// PUT back: its read-only fields are ignored — created_at and updated_at, device_id and
// owner_id when unchanged (an owner key may send its own owner_id). Until session 36 the
// times were 400 "is read-only" and an owner key's unchanged owner_id 400 (found by a
// black-box test).
Result<store::DeviceUpdate> UpdateFromBody(const simdjson::dom::object& obj, const Caller& caller,
                                           const store::Device& current) {
  store::DeviceUpdate u;
  for (auto field : obj) {
    const std::string_view key = field.key;
    if (key == "owner_id") {
      JOULE_ASSIGN_OR_RETURN(std::string owner, StringField(key, field.value));
      if (owner == current.owner_id) continue;
      // Mass assignment: an owner key must not move a device to another owner (nor
      // "adopt" it); only the admin may change owner_id.
      if (!caller.admin()) {
        return Status::InvalidArgument("owner_id can only be changed with the admin token");
      }
      JOULE_RETURN_IF_ERROR(ValidateOwnerId(owner));
      u.owner_id = std::move(owner);
    } else if (key == "device_id") {
      JOULE_ASSIGN_OR_RETURN(std::string id, StringField(key, field.value));
      if (id != current.device_id) return Status::InvalidArgument("device_id cannot be changed");
    } else if (key == "name") {
      JOULE_ASSIGN_OR_RETURN(u.name, TextField(key, field.value));
    } else if (key == "model") {
      JOULE_ASSIGN_OR_RETURN(u.model, TextField(key, field.value));
    } else if (key == "location") {
      JOULE_ASSIGN_OR_RETURN(u.location, TextField(key, field.value));
    } else if (key == "timezone") {
      // null = UTC, as at registration.
      if (field.value.is_null()) {
        u.timezone = "UTC";
      } else {
        JOULE_ASSIGN_OR_RETURN(u.timezone, TimezoneField(field.value));
      }
    } else if (key == "installed_at") {
      JOULE_ASSIGN_OR_RETURN(u.installed_at_ns, InstalledAtField(field.value));
    } else if (key == "config") {
      JOULE_ASSIGN_OR_RETURN(u.config_json, ConfigField(field.value));
    } else if (key == "created_at" || key == "updated_at") {
      continue;  // read-only, ignored
    } else {
      // A GET answer sent back whole ({"device": {…}}): say what to send instead.
      return Status::InvalidArgument(fmt::format(
          "unknown field \"{}\" (allowed: name, model, location, timezone, installed_at, "
          "config{}){}",
          key.substr(0, 64), caller.admin() ? ", owner_id" : "",
          key == "device" ? "; send the \"device\" object of a GET answer, not the whole answer"
                          : ""));
    }
  }
  return u;
}

// Drops the fields the update sets to the value they have: a PATCH that changes nothing (a
// GET's device object sent back as it is; `"timezone": null` on a UTC device; a config with
// its keys in another order) writes nothing, and updated_at stays (found by a black-box
// test: it moved, while the audit log rightly recorded no change).
void DropUnchanged(store::DeviceUpdate& u, const store::Device& d) {
  if (u.owner_id && *u.owner_id == d.owner_id) u.owner_id.reset();
  if (u.name && *u.name == d.name) u.name.reset();
  if (u.model && *u.model == d.model) u.model.reset();
  if (u.location && *u.location == d.location) u.location.reset();
  if (u.timezone && *u.timezone == d.timezone) u.timezone.reset();
  if (u.installed_at_ns && *u.installed_at_ns == d.installed_at_ns) u.installed_at_ns.reset();
  // (No config reads as {}: the {} a GET showed, or null, changes nothing.)
  auto config = [](const std::string& c) { return c.empty() ? std::string_view("{}") : c; };
  if (u.config_json && SameDeviceConfig(config(*u.config_json), config(d.config_json))) {
    u.config_json.reset();
  }
}

bool EmptyUpdate(const store::DeviceUpdate& u) {
  return !u.owner_id && !u.name && !u.model && !u.location && !u.timezone && !u.installed_at_ns &&
         !u.config_json;
}

// Audit details: never tokens or secrets, only what changed and whose it is.
std::string OwnerDetails(const std::string& owner_id) {
  JsonWriter w;
  w.BeginObject();
  w.Key("owner_id");
  w.String(owner_id);
  w.EndObject();
  return w.Take();
}

// `fields`: the fields the update set whose value changed (docs/formats/audit.md, "the
// fields changed"): a GET body sent back with one field edited lists that field only. ""
// when none changed (nothing to record).
std::string UpdateDetails(const store::DeviceUpdate& u, const store::Device& before,
                          const store::Device& after) {
  std::vector<std::string_view> fields;
  if (u.owner_id && before.owner_id != after.owner_id) fields.push_back("owner_id");
  if (u.name && before.name != after.name) fields.push_back("name");
  if (u.model && before.model != after.model) fields.push_back("model");
  if (u.location && before.location != after.location) fields.push_back("location");
  if (u.timezone && before.timezone != after.timezone) fields.push_back("timezone");
  if (u.installed_at_ns && before.installed_at_ns != after.installed_at_ns) {
    fields.push_back("installed_at");
  }
  // (No config reads as {}: sending back the {} a GET showed changes nothing.)
  auto config = [](const store::Device& d) {
    return d.config_json.empty() ? std::string_view("{}") : std::string_view(d.config_json);
  };
  if (u.config_json && config(before) != config(after)) fields.push_back("config");
  if (fields.empty()) return "";
  JsonWriter w;
  w.BeginObject();
  w.Key("fields");
  w.BeginArray();
  for (std::string_view f : fields) w.String(f);
  w.EndArray();
  if (before.owner_id != after.owner_id) {
    w.Key("new_owner_id");
    w.String(after.owner_id);
  }
  w.EndObject();
  return w.Take();
}

std::string DeviceBody(const store::Device& d) {
  JsonWriter w;
  w.BeginObject();
  w.Key("device");
  WriteDeviceJson(w, d);
  w.EndObject();
  return w.Take();
}

class DeviceRoutes {
 public:
  explicit DeviceRoutes(ApiContext& ctx) : ctx_(ctx) {}

  void Create(net::HttpRequest& req, net::Responder responder) {
    const Caller caller = ctx_.auth->Authenticate(req);
    if (caller.kind == Caller::Kind::kNone) return responder.Send(Unauthorized(caller));
    if (!caller.admin()) {
      return responder.Send(Forbidden("only the admin token may register devices"));
    }
    if (!ctx_.metadata) return responder.Send(NoMetadata());
    if (auto refused = RefuseJsonBody(req, kMaxBodyBytes)) return responder.Send(*refused);
    Result<ParsedObject> body = ParseBodyObject(req);
    if (!body.ok()) return responder.Send(ErrorFromStatus(body.status()));
    Result<store::Device> device = DeviceFromBody(body->object);
    if (!device.ok()) return responder.Send(ErrorFromStatus(device.status()));
    std::string token;
    Result<store::Device> created = ctx_.metadata->CreateDevice(*device, &token);
    if (!created.ok()) return responder.Send(ErrorFromStatus(created.status()));
    RecordAudit(ctx_, req, caller, "device.registered", "device", created->device_id,
                OwnerDetails(created->owner_id));
    JsonWriter w;
    w.BeginObject();
    w.Key("device");
    WriteDeviceJson(w, *created);
    w.Key("token");  // shown once: only its hash is stored
    w.String(token);
    w.EndObject();
    net::HttpResponse r = net::HttpResponse::Json(201, w.Take());
    r.headers.emplace_back("Location", "/v1/devices/" + created->device_id);
    r.headers.emplace_back("Cache-Control", "no-store");
    responder.Send(std::move(r));
  }

  void List(net::HttpRequest& req, net::Responder responder) {
    const Caller caller = ctx_.auth->Authenticate(req);
    if (caller.kind == Caller::Kind::kNone) return responder.Send(Unauthorized(caller));
    if (caller.kind == Caller::Kind::kDevice) {
      return responder.Send(Forbidden("device tokens may only ingest; use an owner key"));
    }
    if (!ctx_.metadata) return responder.Send(NoMetadata());
    Result<size_t> limit = ParseLimit(req.Query("limit"), kDefaultListLimit, kMaxListLimit);
    if (!limit.ok()) return responder.Send(ErrorFromStatus(limit.status()));
    store::ListDevicesOptions options;
    options.limit = *limit;
    if (const std::string* cursor = req.Query("cursor"); cursor && !cursor->empty()) {
      // Any stored id can end a page, one written outside the id syntax too (below).
      if (cursor->size() > kMaxCursorBytes) {
        return responder.Send(BadRequest("cursor must be a next_cursor from a previous page"));
      }
      options.after = *cursor;
    }
    // ?owner_id= filters the admin's list; an owner key's list is its own devices, the
    // parameter ignored, as on /v1/rules and /v1/alerts (until session 36 another owner's
    // id gave an owner key an empty list here only; found by a black-box test).
    const std::string* owner =
        caller.kind == Caller::Kind::kOwner ? nullptr : req.Query("owner_id");
    if (owner) {
      Status st = ValidateOwnerId(*owner);
      if (!st.ok()) return responder.Send(ErrorFromStatus(st));
    }
    if (const std::string* model = req.Query("model"); model && !model->empty()) {
      Status st = ValidateDeviceText("model", *model);
      if (!st.ok()) return responder.Send(ErrorFromStatus(st));
      options.model = *model;
    }
    if (caller.kind == Caller::Kind::kOwner) {
      options.owner_id = caller.owner_id;
    } else if (owner) {
      options.owner_id = *owner;
    }
    Result<store::DevicePage> listed = ctx_.metadata->ListDevices(options);
    if (!listed.ok()) return responder.Send(ErrorFromStatus(listed.status()));
    store::DevicePage page = std::move(*listed);
    JsonWriter w;
    w.BeginObject();
    w.Key("devices");
    w.BeginArray();
    for (const store::Device& d : page.devices) {
      // A row written into the devices table by another service with an id outside the
      // id syntax (CONTRACT §1) cannot be read, changed or deleted through the API, nor
      // send data: it is not listed either, and the log says so (found by a black-box test:
      // listed, then 404 on GET and DELETE).
      if (!ingest::ValidDeviceId(d.device_id)) {
        WarnUnservableId(d.device_id);
        continue;
      }
      WriteDeviceJson(w, d);
    }
    w.EndArray();
    w.Key("next_cursor");
    if (page.next_cursor.empty()) {
      w.Null();
    } else {
      w.String(page.next_cursor);
    }
    w.EndObject();
    responder.Send(net::HttpResponse::Json(200, w.Take()));
  }

  void Get(net::HttpRequest& req, net::Responder responder) {
    const Caller caller = ctx_.auth->Authenticate(req);
    if (caller.kind == Caller::Kind::kNone) return responder.Send(Unauthorized(caller));
    Result<store::Device> device = Visible(caller, req.path_params["id"]);
    if (!device.ok()) return responder.Send(ErrorFromStatus(device.status()));
    responder.Send(net::HttpResponse::Json(200, DeviceBody(*device)));
  }

  void Patch(net::HttpRequest& req, net::Responder responder) {
    const Caller caller = ctx_.auth->Authenticate(req);
    if (caller.kind == Caller::Kind::kNone) return responder.Send(Unauthorized(caller));
    const std::string& id = req.path_params["id"];
    Result<store::Device> device = Manageable(caller, id);
    if (!device.ok()) return responder.Send(ErrorFromStatus(device.status()));
    if (auto refused = RefuseJsonBody(req, kMaxBodyBytes)) return responder.Send(*refused);
    Result<ParsedObject> body = ParseBodyObject(req);
    if (!body.ok()) return responder.Send(ErrorFromStatus(body.status()));
    Result<store::DeviceUpdate> update = UpdateFromBody(body->object, caller, *device);
    if (!update.ok()) return responder.Send(ErrorFromStatus(update.status()));
    DropUnchanged(*update, *device);
    if (EmptyUpdate(*update))
      return responder.Send(net::HttpResponse::Json(200, DeviceBody(*device)));
    Result<store::Device> updated = ctx_.metadata->UpdateDevice(id, *update);
    if (!updated.ok()) return responder.Send(ErrorFromStatus(updated.status()));
    if (std::string details = UpdateDetails(*update, *device, *updated); !details.empty()) {
      RecordAudit(ctx_, req, caller, "device.updated", "device", id, details);
    }
    responder.Send(net::HttpResponse::Json(200, DeviceBody(*updated)));
  }

  void Delete(net::HttpRequest& req, net::Responder responder) {
    const Caller caller = ctx_.auth->Authenticate(req);
    if (caller.kind == Caller::Kind::kNone) return responder.Send(Unauthorized(caller));
    const std::string& id = req.path_params["id"];
    Result<store::Device> device = Manageable(caller, id);
    if (!device.ok()) return responder.Send(ErrorFromStatus(device.status()));
    // Deletes the row and its tokens (revoked before this returns); history, the
    // archive and alerts are kept.
    Status st = ctx_.metadata->DeleteDevice(id);
    if (!st.ok()) return responder.Send(ErrorFromStatus(st));
    RecordAudit(ctx_, req, caller, "device.deleted", "device", id, OwnerDetails(device->owner_id));
    net::HttpResponse r;
    r.status = 204;
    r.content_type = {};
    responder.Send(std::move(r));
  }

  void RotateToken(net::HttpRequest& req, net::Responder responder) {
    const Caller caller = ctx_.auth->Authenticate(req);
    if (caller.kind == Caller::Kind::kNone) return responder.Send(Unauthorized(caller));
    const std::string& id = req.path_params["id"];
    Result<store::Device> device = Visible(caller, id);
    if (!device.ok()) return responder.Send(ErrorFromStatus(device.status()));
    if (!caller.admin()) {
      return responder.Send(Forbidden("only the admin token may rotate device tokens"));
    }
    // The old tokens are revoked in the same transaction: they fail from now on.
    Result<std::string> token = ctx_.metadata->RotateDeviceToken(id);
    if (!token.ok()) return responder.Send(ErrorFromStatus(token.status()));
    RecordAudit(ctx_, req, caller, "device.token_rotated", "device", id,
                OwnerDetails(device->owner_id));
    JsonWriter w;
    w.BeginObject();
    w.Key("device_id");
    w.String(id);
    w.Key("token");
    w.String(*token);
    w.EndObject();
    net::HttpResponse r = net::HttpResponse::Json(201, w.Take());
    r.headers.emplace_back("Cache-Control", "no-store");
    responder.Send(std::move(r));
  }

  // The owner-key routes' common start: the admin token, a metadata store and a valid
  // owner id; otherwise the refusal is sent and false returned.
  bool OwnerKeyRequest(net::HttpRequest& req, net::Responder& responder, std::string_view what,
                       Caller* caller) {
    *caller = ctx_.auth->Authenticate(req);
    if (caller->kind == Caller::Kind::kNone) {
      responder.Send(Unauthorized(*caller));
      return false;
    }
    if (!caller->admin()) {
      responder.Send(Forbidden(fmt::format("only the admin token may {} owner keys", what)));
      return false;
    }
    if (!ctx_.metadata) {
      responder.Send(NoMetadata());
      return false;
    }
    Status st = ValidateOwnerId(req.path_params["owner_id"]);
    if (!st.ok()) {
      responder.Send(ErrorFromStatus(st));
      return false;
    }
    return true;
  }

  void CreateOwnerKey(net::HttpRequest& req, net::Responder responder) {
    Caller caller;
    if (!OwnerKeyRequest(req, responder, "create", &caller)) return;
    const std::string& owner = req.path_params["owner_id"];
    Result<store::OwnerKey> key = ctx_.metadata->CreateOwnerKey(owner);
    if (!key.ok()) return responder.Send(ErrorFromStatus(key.status()));
    RecordAudit(ctx_, req, caller, "owner_key.created", "owner", owner,
                fmt::format(R"({{"key_id":"{}"}})", key->key_id));
    JsonWriter w;
    w.BeginObject();
    w.Key("owner_id");
    w.String(key->owner_id);
    w.Key("key_id");
    w.String(key->key_id);
    w.Key("key");  // shown once: only its hash is stored
    w.String(key->key);
    w.Key("created_at");
    w.String(FormatRfc3339Millis(key->created_at_ns));
    w.EndObject();
    net::HttpResponse r = net::HttpResponse::Json(201, w.Take());
    r.headers.emplace_back("Cache-Control", "no-store");
    responder.Send(std::move(r));
  }

  // GET /v1/owners/{owner_id}/keys (admin): the owner's keys by id (never the keys).
  void ListOwnerKeys(net::HttpRequest& req, net::Responder responder) {
    Caller caller;
    if (!OwnerKeyRequest(req, responder, "list", &caller)) return;
    const std::string& owner = req.path_params["owner_id"];
    Result<std::vector<store::OwnerKey>> keys = ctx_.metadata->ListOwnerKeys(owner);
    if (!keys.ok()) return responder.Send(ErrorFromStatus(keys.status()));
    JsonWriter w;
    w.BeginObject();
    w.Key("owner_id");
    w.String(owner);
    w.Key("keys");
    w.BeginArray();
    for (const store::OwnerKey& k : *keys) {
      w.BeginObject();
      w.Key("key_id");
      w.String(k.key_id);
      w.Key("created_at");
      w.String(FormatRfc3339Millis(k.created_at_ns));
      w.EndObject();
    }
    w.EndArray();
    w.EndObject();
    responder.Send(net::HttpResponse::Json(200, w.Take()));
  }

  // DELETE /v1/owners/{owner_id}/keys/{key_id} (admin): revokes the key at once (a leaked
  // key could otherwise never be withdrawn: found by a black-box test).
  void RevokeOwnerKey(net::HttpRequest& req, net::Responder responder) {
    Caller caller;
    if (!OwnerKeyRequest(req, responder, "revoke", &caller)) return;
    const std::string& owner = req.path_params["owner_id"];
    const std::string& key_id = req.path_params["key_id"];
    Result<std::vector<store::OwnerKey>> keys = ctx_.metadata->ListOwnerKeys(owner);
    if (!keys.ok()) return responder.Send(ErrorFromStatus(keys.status()));
    bool found = false;
    for (const store::OwnerKey& k : *keys) found |= k.key_id == key_id;
    if (!found) {
      return responder.Send(
          net::HttpResponse::Error(404, "not_found", "no such key of this owner"));
    }
    Status st = ctx_.metadata->RevokeOwnerKey(key_id);
    if (!st.ok()) return responder.Send(ErrorFromStatus(st));
    RecordAudit(ctx_, req, caller, "owner_key.revoked", "owner", owner,
                fmt::format(R"({{"key_id":"{}"}})", key_id));
    net::HttpResponse r;
    r.status = 204;
    r.content_type = {};
    responder.Send(std::move(r));
  }

 private:
  static net::HttpResponse NoMetadata() {
    return net::HttpResponse::Error(503, "unavailable", "no metadata store");
  }

  // The registered device, if `caller` may see it (admin, its owner; a device token: 403);
  // NotFound otherwise, whether or not it exists.
  Result<store::Device> Visible(const Caller& caller, const std::string& id) {
    if (!ctx_.metadata) return Status::Unavailable("no metadata store");
    bool registered = false;
    JOULE_ASSIGN_OR_RETURN(store::Device d,
                           ctx_.auth->AuthorizeDeviceRead(caller, id, &registered));
    if (!registered) return Status::NotFound("no such device");
    return d;
  }

  // Like Visible, and the caller may change it (admin or its owner).
  Result<store::Device> Manageable(const Caller& caller, const std::string& id) {
    JOULE_ASSIGN_OR_RETURN(store::Device d, Visible(caller, id));
    if (caller.kind == Caller::Kind::kDevice) {
      return Status::PermissionDenied("device tokens cannot change devices; use an owner key");
    }
    return d;
  }

  ApiContext& ctx_;
};

}  // namespace

void AddDeviceRoutes(net::Router& router, ApiContext& ctx) {
  auto routes = std::make_shared<DeviceRoutes>(ctx);
  router.Add("POST", "/v1/devices", MemberHandler(routes, &DeviceRoutes::Create),
             TokenRoute(ctx, kMaxBodyBytes));
  router.Add("GET", "/v1/devices", MemberHandler(routes, &DeviceRoutes::List), TokenRoute(ctx));
  router.Add("GET", "/v1/devices/{id}", MemberHandler(routes, &DeviceRoutes::Get), TokenRoute(ctx));
  router.Add("PATCH", "/v1/devices/{id}", MemberHandler(routes, &DeviceRoutes::Patch),
             TokenRoute(ctx, kMaxBodyBytes));
  router.Add("DELETE", "/v1/devices/{id}", MemberHandler(routes, &DeviceRoutes::Delete),
             TokenRoute(ctx));
  router.Add("POST", "/v1/devices/{id}/token", MemberHandler(routes, &DeviceRoutes::RotateToken),
             TokenRoute(ctx));
  router.Add("POST", "/v1/owners/{owner_id}/keys",
             MemberHandler(routes, &DeviceRoutes::CreateOwnerKey), TokenRoute(ctx));
  router.Add("GET", "/v1/owners/{owner_id}/keys",
             MemberHandler(routes, &DeviceRoutes::ListOwnerKeys), TokenRoute(ctx));
  router.Add("DELETE", "/v1/owners/{owner_id}/keys/{key_id}",
             MemberHandler(routes, &DeviceRoutes::RevokeOwnerKey), TokenRoute(ctx));
}

}  // namespace joule::api

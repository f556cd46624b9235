// Admin operations: replay of the raw archive inside the running server
// (docs/formats/archive.md, "Replay against a running server").
//
// - POST /v1/admin/replay {"from", "to", "device_id" | "owner_id", "dry_run"} → 202 with the
//   job (Location: /v1/admin/replay/{id}); 409 already_exists while another replay runs.
// - GET /v1/admin/replay/{id} → 200 with the job (state, progress, result or error).
// Admin token only: no token 401; an owner key or device token 403 forbidden (as every
// admin-only route, e.g. POST /v1/devices). 404 when the server runs without a replay
// service (archive disabled). A started replay is recorded in the audit log
// ("replay.started", docs/formats/audit.md) when it is accepted, before the job runs.
#include <fmt/format.h>
#include <simdjson.h>

#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "api/api_context.h"
#include "api/audit.h"
#include "api/error_response.h"
#include "api/json_body.h"
#include "api/query_params.h"
#include "api/replay_service.h"
#include "api/routes.h"
#include "api/token_route.h"
#include "common/json_writer.h"
#include "common/time_format.h"
#include "net/http_server.h"
#include "net/router.h"

namespace joule::api {
namespace {

constexpr size_t kMaxBodyBytes = 16 * 1024;

// A time as in the read API's query parameters: an RFC 3339 string (or one of epoch
// milliseconds), or a JSON integer of epoch milliseconds (docs/formats/archive.md, "The
// admin API"; found by a black-box test: integers were refused).
Result<int64_t> TimeField(std::string_view name, simdjson::dom::element value) {
  std::string_view s;
  int64_t ms = 0;
  uint64_t big = 0;
  if (value.get_string().get(s) == simdjson::SUCCESS) {
    return ParseTimeParam(std::string(name), std::string(s));
  }
  if (value.get_int64().get(ms) == simdjson::SUCCESS) return EpochMillisToNanos(ms);
  if (value.get_uint64().get(big) == simdjson::SUCCESS) return EpochMillisToNanos(INT64_MAX);
  return Status::InvalidArgument(fmt::format(
      "{} must be an RFC 3339 time (a string) or an integer of epoch milliseconds", name));
}

// REQUIRES: the body passed RefuseJsonBody.
Result<ReplayJobRequest> ParseReplayBody(const net::HttpRequest& req) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  simdjson::dom::object object;
  if (parser.parse(req.body.data(), req.body.size()).get(root) != simdjson::SUCCESS) {
    return Status::InvalidArgument("request body is not valid JSON");
  }
  if (root.get_object().get(object) != simdjson::SUCCESS) {
    return Status::InvalidArgument("request body must be a JSON object");
  }
  ReplayJobRequest out;
  std::set<std::string_view> seen;
  bool has_from = false, has_to = false;
  for (auto field : object) {
    const std::string_view key = field.key;
    if (!seen.insert(key).second) {
      return Status::InvalidArgument(
          fmt::format("field \"{}\" appears more than once", key.substr(0, 64)));
    }
    if (key == "dry_run") {
      if (field.value.get_bool().get(out.dry_run) != simdjson::SUCCESS) {
        return Status::InvalidArgument("dry_run must be a boolean");
      }
      continue;
    }
    // Replay recomputes the windows that overlap [from, to). Windows are whole
    // milliseconds, so [floor(from), ceil(to)) overlaps the same ones, and the job shows
    // its bounds to the millisecond exactly.
    if (key == "from") {
      JOULE_ASSIGN_OR_RETURN(const int64_t from, TimeField(key, field.value));
      out.from_ns = FloorToMillis(from);
      has_from = true;
      continue;
    }
    if (key == "to") {
      JOULE_ASSIGN_OR_RETURN(const int64_t to, TimeField(key, field.value));
      out.to_ns = CeilToMillis(to);
      has_to = true;
      continue;
    }
    if (key != "device_id" && key != "owner_id") {
      return UnknownField(key);
    }
    std::string_view s;
    if (field.value.get_string().get(s) != simdjson::SUCCESS) {
      return Status::InvalidArgument(fmt::format("{} must be a string", key));
    }
    (key == "device_id" ? out.device_id : out.owner_id) = std::string(s);
  }
  if (!has_from || !has_to) return Status::InvalidArgument("from and to are required");
  if (out.to_ns <= out.from_ns) return Status::InvalidArgument("to must be after from");
  if (!out.device_id.empty() && !out.owner_id.empty()) {
    return Status::InvalidArgument("give device_id or owner_id, not both");
  }
  return out;
}

}  // namespace

std::string ReplayRequestJson(const ReplayJobRequest& body) {
  JsonWriter details;
  details.BeginObject();
  details.Key("from");
  details.String(FormatRfc3339Millis(body.from_ns));
  details.Key("to");
  details.String(FormatRfc3339Millis(body.to_ns));
  if (!body.device_id.empty()) {
    details.Key("device_id");
    details.String(body.device_id);
  }
  if (!body.owner_id.empty()) {
    details.Key("owner_id");
    details.String(body.owner_id);
  }
  details.Key("dry_run");
  details.Bool(body.dry_run);
  details.EndObject();
  return details.str();
}

void AddReplayRoutes(net::Router& router, ApiContext& ctx) {
  // Authorization first: a non-admin learns nothing, not even whether replay is enabled.
  auto admin = [&ctx](const net::HttpRequest& req, net::Responder& r) -> std::optional<Caller> {
    const Caller caller = ctx.auth->Authenticate(req);
    if (caller.kind == Caller::Kind::kNone) {
      r.Send(Unauthorized(caller));
      return std::nullopt;
    }
    if (!caller.admin()) {
      r.Send(net::HttpResponse::Error(403, "forbidden", "only the admin token may run replays"));
      return std::nullopt;
    }
    if (!ctx.replay) {
      r.Send(net::HttpResponse::Error(404, "not_found",
                                      "replay is not available (archive.enabled = false)"));
      return std::nullopt;
    }
    return caller;
  };
  router.Add(
      "POST", "/v1/admin/replay",
      [&ctx, admin](net::HttpRequest& req, net::Responder r) {
        const std::optional<Caller> caller = admin(req, r);
        if (!caller) return;
        if (auto refused = RefuseJsonBody(req, kMaxBodyBytes)) return r.Send(*refused);
        Result<ReplayJobRequest> body = ParseReplayBody(req);
        if (!body.ok()) return r.Send(ErrorFromStatus(body.status()));
        std::string job_id;
        Result<std::string> job = ctx.replay->Start(*body, [&](std::string_view id) {
          job_id = std::string(id);
          RecordAudit(ctx, req, *caller, "replay.started", "replay", id, ReplayRequestJson(*body));
        });
        if (!job.ok()) return r.Send(ErrorFromStatus(job.status()));
        net::HttpResponse resp = net::HttpResponse::Json(202, *job);
        resp.headers.emplace_back("Location", fmt::format("/v1/admin/replay/{}", job_id));
        r.Send(std::move(resp));
      },
      TokenRoute(ctx, kMaxBodyBytes));
  router.Add(
      "GET", "/v1/admin/replay/{id}",
      [&ctx, admin](net::HttpRequest& req, net::Responder r) {
        if (!admin(req, r)) return;
        Result<std::string> job = ctx.replay->Get(req.path_params["id"]);
        if (!job.ok()) return r.Send(ErrorFromStatus(job.status()));
        r.Send(net::HttpResponse::Json(200, *job));
      },
      TokenRoute(ctx));
}

}  // namespace joule::api

// GET /v1/devices/{id}/health (CONTRACT §3): the stream's view of one device.
#include "api/api_context.h"
#include "api/device_json.h"
#include "api/error_response.h"
#include "api/routes.h"
#include "api/token_route.h"
#include "common/clock.h"
#include "common/json_writer.h"
#include "common/time_format.h"
#include "ingest/validation.h"
#include "net/http_server.h"
#include "net/router.h"

namespace joule::api {
namespace {

void HandleHealth(ApiContext& ctx, net::HttpRequest& req, net::Responder responder) {
  const Caller caller = ctx.auth->Authenticate(req);
  if (caller.kind == Caller::Kind::kNone) return responder.Send(Unauthorized(caller));
  const std::string& device_id = req.path_params["id"];
  bool registered = false;
  Result<store::Device> device = ctx.auth->AuthorizeDeviceRead(caller, device_id, &registered);
  if (!device.ok()) return responder.Send(ErrorFromStatus(device.status()));
  stream::WindowEngine::DeviceHealth h;
  const bool seen = ctx.health && ctx.health(device_id, &h);
  if (!seen && ctx.restoring && ctx.restoring()) {
    // Not "no such device", nor "nothing received yet": the server has just started and
    // its processors are restoring the devices' state (found on the session-23 review).
    return responder.Send(ErrorFromStatus(Status::Unavailable(
        "starting: the devices' state is being restored (GET /readyz says when it is ready)")));
  }
  if (!seen) {
    if (!registered) return responder.Send(DeviceNotFound());
    h = stream::WindowEngine::DeviceHealth();  // registered, nothing received yet
  }
  const int64_t now = ctx.clock->NowNanos();
  JsonWriter w;
  w.BeginObject();
  w.Key("device_id");
  w.String(device_id);
  w.Key("device");
  WriteDeviceJson(w, *device);
  // A device that has sent nothing yet has no times: null, not the epoch.
  auto time_or_null = [&](int64_t ns) { seen ? w.String(FormatRfc3339Millis(ns)) : w.Null(); };
  auto seconds_or_null = [&](int64_t ns) {
    seen ? w.Double(static_cast<double>(ns) / 1e9) : w.Null();
  };
  w.Key("last_seen");  // when ingest last accepted one of its events (received_at)
  time_or_null(h.last_seen_ns);
  w.Key("last_event_time");
  time_or_null(h.last_event_time_ns);
  w.Key("watermark");
  time_or_null(h.watermark_ns);
  // How far the device's watermark (and so its final results) trails wall-clock time.
  // Never negative: a time after now means the server's clock stepped back since (found by
  // a black-box test: silent_seconds −7164).
  w.Key("lag_seconds");
  seconds_or_null(std::max<int64_t>(now - h.watermark_ns, 0));
  w.Key("silent_seconds");
  seconds_or_null(std::max<int64_t>(now - h.last_seen_ns, 0));
  w.Key("clock_skew_seconds");  // median of recent (received_at − event time)
  seconds_or_null(h.clock_skew_ns);
  w.Key("events");
  w.Uint(h.events);
  w.Key("late_updates");
  w.Uint(h.late_updates);
  w.Key("late_dropped");
  w.Uint(h.late_dropped);
  w.Key("duplicates");
  w.Uint(h.duplicates);
  w.EndObject();
  responder.Send(net::HttpResponse::Json(200, w.Take()));
}

}  // namespace

void AddHealthRoutes(net::Router& router, ApiContext& ctx) {
  router.Add(
      "GET", "/v1/devices/{id}/health",
      [&ctx](net::HttpRequest& req, net::Responder r) { HandleHealth(ctx, req, std::move(r)); },
      TokenRoute(ctx));
}

}  // namespace joule::api

// GET /v1/stream?device_id= or ?owner_id= (CONTRACT §3): Server-Sent Events `window`,
// `reading` and `alert` for one device or all of an owner's devices. Admin and owner keys;
// device tokens get 403.
#include "api/api_context.h"
#include "api/error_response.h"
#include "api/live_hub.h"
#include "api/routes.h"
#include "ingest/validation.h"
#include "net/http_server.h"
#include "net/router.h"

namespace joule::api {
namespace {

void HandleStream(ApiContext& ctx, net::HttpRequest& req, net::Responder responder) {
  const Caller caller = ctx.auth->Authenticate(req);
  if (caller.kind == Caller::Kind::kNone) return responder.Send(Unauthorized(caller));
  // The stream carries alerts (rule names, thresholds, the owner): owner data, which a
  // device token may not read (as GET /v1/alerts; found by a black-box test).
  if (caller.kind == Caller::Kind::kDevice) {
    return responder.Send(net::HttpResponse::Error(
        403, "forbidden", "device tokens may only ingest; use an owner key"));
  }
  const std::string* device_id = req.Query("device_id");
  const std::string* owner_id = req.Query("owner_id");
  if ((device_id == nullptr) == (owner_id == nullptr)) {
    return responder.Send(
        ErrorFromStatus(Status::InvalidArgument("give exactly one of device_id or owner_id")));
  }
  if (device_id) {
    Result<store::Device> device = ctx.auth->AuthorizeDeviceRead(caller, *device_id);
    if (!device.ok()) return responder.Send(ErrorFromStatus(device.status()));
  } else if (!ingest::ValidDeviceId(*owner_id) || caller.kind == Caller::Kind::kDevice ||
             (caller.kind == Caller::Kind::kOwner && caller.owner_id != *owner_id)) {
    return responder.Send(net::HttpResponse::Error(404, "not_found", "no such owner"));
  }
  std::shared_ptr<net::SseStream> stream =
      responder.StartStream({{"Cache-Control", "no-cache"}, {"X-Accel-Buffering", "no"}});
  if (!stream) return;
  LiveHub* hub = ctx.live;
  uint64_t id = hub->Subscribe(device_id ? *device_id : "", owner_id ? *owner_id : "", stream);
  stream->SetOnClose([hub, id] { hub->Unsubscribe(id); });
}

}  // namespace

void AddStreamRoutes(net::Router& router, ApiContext& ctx) {
  router.Add("GET", "/v1/stream", [&ctx](net::HttpRequest& req, net::Responder r) {
    HandleStream(ctx, req, std::move(r));
  });
}

}  // namespace joule::api

// GET /v1/stream?device_id= or ?owner_id= (CONTRACT §3): Server-Sent Events `window`,
// `reading` and `alert` for one device or all of an owner's devices. Admin and owner keys;
// device tokens get 403. A device stream names a device the caller may read, as realtime
// decides (404 otherwise; the admin: one registered or with data), and ends when the
// device is deleted or moves away from an owner key's owner; an owner stream names the
// key's own owner (the admin: any owner id, with devices yet or not, as owner energy).
#include <fmt/format.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "api/api_context.h"
#include "api/device_known.h"
#include "api/error_response.h"
#include "api/live_hub.h"
#include "api/routes.h"
#include "api/token_route.h"
#include "ingest/validation.h"
#include "net/http_server.h"
#include "net/router.h"

namespace joule::api {
namespace {

// Open streams per owner key (limits.streams_per_key): one tenant must not hold every
// connection of the server with streams, which no timeout ends (found by a black-box test).
class StreamQuota {
 public:
  bool Take(const std::string& key, size_t limit) {
    std::lock_guard lock(mu_);
    size_t& n = open_[key];
    if (limit > 0 && n >= limit) {
      if (n == 0) open_.erase(key);
      return false;
    }
    ++n;
    return true;
  }
  void Give(const std::string& key) {
    std::lock_guard lock(mu_);
    auto it = open_.find(key);
    if (it != open_.end() && --it->second == 0) open_.erase(it);
  }

 private:
  std::mutex mu_;
  std::unordered_map<std::string, size_t> open_;
};

// `quota` is the server's (one per route table); streams keep it alive until they close.
void HandleStream(ApiContext& ctx, const std::shared_ptr<StreamQuota>& quota, net::HttpRequest& req,
                  net::Responder responder) {
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
  bool registered = false;
  if (device_id) {
    Result<store::Device> device = ctx.auth->AuthorizeDeviceRead(caller, *device_id, &registered);
    if (!device.ok()) return responder.Send(ErrorFromStatus(device.status()));
    // The admin reads any device, registered or not — but one Joule knows, as realtime:
    // `device_id=nope` was a 200 stream that never carried anything (found by a black-box
    // test; an owner key got 404).
    if (!registered) {
      Result<bool> known = DeviceKnown(ctx, *device_id);
      if (!known.ok()) return responder.Send(ErrorFromStatus(known.status()));
      if (!*known) return responder.Send(DeviceNotFound());
    }
  } else if (!ingest::ValidDeviceId(*owner_id) ||
             (caller.kind == Caller::Kind::kOwner && caller.owner_id != *owner_id)) {
    return responder.Send(net::HttpResponse::Error(404, "not_found", "no such owner"));
  }
  // HEAD: the answer a GET gets, without the stream (the server sends the head only).
  if (req.method == "HEAD") {
    responder.StartStream();
    return;
  }
  // Owner keys are counted (device tokens are refused above; the admin is trusted).
  const std::string quota_key =
      caller.kind == Caller::Kind::kOwner ? "owner:" + caller.owner_id : "";
  if (!quota_key.empty() && !quota->Take(quota_key, ctx.streams_per_key)) {
    net::HttpResponse r = net::HttpResponse::Error(
        429, "rate_limited",
        fmt::format("{} live streams are open for this key (limits.streams_per_key)",
                    ctx.streams_per_key));
    r.headers.emplace_back("Retry-After", "10");
    return responder.Send(std::move(r));
  }
  // The server writes the stream's head (Cache-Control: no-cache, X-Accel-Buffering: no).
  std::shared_ptr<net::SseStream> stream = responder.StartStream();
  if (!stream) {
    if (!quota_key.empty()) quota->Give(quota_key);
    return;
  }
  LiveHub* hub = ctx.live;
  // Checked again every second (LiveHub::Revalidate): a revoked key, or a device that moved
  // to another owner or was deleted, ends the stream (found by a black-box test: an open
  // stream outlived both). An unreachable metadata store keeps it (the cache's
  // stale-if-error rule).
  LiveHub::Allowed allowed;
  const Authenticator* auth = ctx.auth;
  if (caller.kind == Caller::Kind::kAdmin && device_id) {
    // The admin token is the config's (no revocation); its device stream ends when the
    // device, registered at the open or since, is deleted (found by a black-box test: only
    // owner keys' streams were checked, the admin's went on). One that was never
    // registered (auth.mode = "disabled") cannot be deleted and goes on.
    auto was_registered = std::make_shared<std::atomic<bool>>(registered);
    allowed = [auth, device = *device_id, was_registered] {
      Caller admin;
      admin.kind = Caller::Kind::kAdmin;
      bool now = false;
      Result<store::Device> d = auth->AuthorizeDeviceRead(admin, device, &now);
      if (!d.ok()) return true;  // the metadata store cannot tell: keep it
      if (now) was_registered->store(true);
      return now || !was_registered->load();
    };
  } else if (caller.kind == Caller::Kind::kOwner) {
    net::HttpRequest probe;  // the credentials only
    if (const std::string* a = req.Header("authorization")) {
      probe.headers.emplace_back("authorization", *a);
    }
    allowed = [auth, probe = std::move(probe), owner = caller.owner_id,
               device = device_id ? *device_id : std::string()] {
      const Caller now = auth->Authenticate(probe);
      if (now.kind == Caller::Kind::kNone) return now.store_unavailable;
      if (now.kind != Caller::Kind::kOwner || now.owner_id != owner) return false;
      if (device.empty()) return true;
      Result<store::Device> d = auth->AuthorizeDeviceRead(now, device);
      return d.ok() || d.status().code() == StatusCode::kUnavailable;
    };
  }
  uint64_t id = hub->Subscribe(device_id ? *device_id : "", owner_id ? *owner_id : "", stream,
                               std::move(allowed),
                               caller.kind == Caller::Kind::kOwner ? caller.owner_id : "");
  stream->SetOnClose([hub, id, quota, quota_key] {
    hub->Unsubscribe(id);
    if (!quota_key.empty()) quota->Give(quota_key);
  });
}

}  // namespace

void AddStreamRoutes(net::Router& router, ApiContext& ctx) {
  auto quota = std::make_shared<StreamQuota>();
  router.Add(
      "GET", "/v1/stream",
      [&ctx, quota](net::HttpRequest& req, net::Responder r) {
        HandleStream(ctx, quota, req, std::move(r));
      },
      TokenRoute(ctx));
}

}  // namespace joule::api

// /metrics (Prometheus text), /healthz (liveness), /readyz (readiness).
#include "api/api_context.h"
#include "api/routes.h"
#include "common/json_writer.h"
#include "common/time_format.h"
#include "net/http_server.h"
#include "net/router.h"

namespace joule::api {

void AddOperationsRoutes(net::Router& router, ApiContext& ctx) {
  router.Add("GET", "/metrics", [&ctx](net::HttpRequest&, net::Responder r) {
    net::HttpResponse resp;
    resp.status = 200;
    resp.content_type = "text/plain; version=0.0.4; charset=utf-8";
    resp.body = ctx.metrics->Render();
    r.Send(std::move(resp));
  });
  router.Add("GET", "/healthz", [](net::HttpRequest&, net::Responder r) {
    r.Send(net::HttpResponse::Json(200, R"({"status":"ok"})"));
  });
  // Ready once the processors have caught up with the log. A latest store (Redis) that is
  // down does not make Joule unready — ingest goes on and reads fall back to history — but
  // the answer says so: "status": "degraded" and the store's state.
  router.Add("GET", "/readyz", [&ctx](net::HttpRequest&, net::Responder r) {
    const bool ready = !ctx.ready || ctx.ready();
    JsonWriter w;
    w.BeginObject();
    w.Key("status");
    if (!ctx.latest_state) {
      w.String(ready ? "ready" : "starting");
    } else {
      const ApiContext::LatestState s = ctx.latest_state();
      w.String(!ready ? "starting" : s.up ? "ready" : "degraded");
      w.Key("latest");
      w.BeginObject();
      w.Key("backend");
      w.String(ctx.latest ? ctx.latest->backend() : "");
      w.Key("state");
      w.String(!s.up ? "down" : s.pending_devices > 0 ? "catching_up" : "up");
      if (!s.up) {
        w.Key("down_since");
        w.String(FormatRfc3339Millis(s.down_since_ns));
      }
      w.Key("pending_records");
      w.Uint(s.pending_records);
      w.Key("pending_devices");
      w.Uint(s.pending_devices);
      w.Key("outages");
      w.Uint(s.outages);
      if (!s.last_error.empty()) {
        w.Key("last_error");
        w.String(s.last_error);
      }
      w.EndObject();
    }
    w.EndObject();
    r.Send(net::HttpResponse::Json(ready ? 200 : 503, w.Take()));
  });
}

}  // namespace joule::api

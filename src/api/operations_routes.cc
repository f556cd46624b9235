// /metrics (Prometheus text), /healthz (liveness), /readyz (readiness).
#include "api/api_context.h"
#include "api/routes.h"
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
  router.Add("GET", "/readyz", [&ctx](net::HttpRequest&, net::Responder r) {
    if (ctx.ready && !ctx.ready()) {
      r.Send(net::HttpResponse::Json(503, R"({"status":"starting"})"));
    } else {
      r.Send(net::HttpResponse::Json(200, R"({"status":"ready"})"));
    }
  });
}

}  // namespace joule::api

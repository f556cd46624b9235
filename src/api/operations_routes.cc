// /metrics (Prometheus text), /healthz (liveness; and auth.mode), /readyz (readiness).
#include <algorithm>

#include "api/api_context.h"
#include "api/routes.h"
#include "common/json_writer.h"
#include "common/time_format.h"
#include "net/http_server.h"
#include "net/router.h"
#include "store/metadata_store.h"

namespace joule::api {

void AddOperationsRoutes(net::Router& router, ApiContext& ctx) {
  router.Add("GET", "/metrics", [&ctx](net::HttpRequest&, net::Responder r) {
    net::HttpResponse resp;
    resp.status = 200;
    resp.content_type = "text/plain; version=0.0.4; charset=utf-8";
    resp.body = ctx.metrics->Render();
    r.Send(std::move(resp));
  });
  // Public, so it also tells a client whether it needs a key ("auth": the auth.mode), which
  // an unauthenticated request could find out anyway: the dashboard asks here instead of
  // probing /v1/devices and getting a 401 on every fresh load.
  router.Add("GET", "/healthz", [&ctx](net::HttpRequest&, net::Responder r) {
    if (ctx.auth == nullptr) return r.Send(net::HttpResponse::Json(200, R"({"status":"ok"})"));
    r.Send(net::HttpResponse::Json(200, ctx.auth->disabled()
                                            ? R"({"status":"ok","auth":"disabled"})"
                                            : R"({"status":"ok","auth":"required"})"));
  });
  // Ready once the processors have caught up with the log (but for a partition that waits
  // for a device's timezone while the metadata store is down: docs/RELIABILITY.md). A latest store
  // (Redis) or a metadata database (PostgreSQL) that is down does not make Joule unready — ingest
  // goes on, reads fall back to history, the metadata cache keeps serving what it holds — but the
  // answer says so: "status": "degraded" and the store's state. So does a damaged log record met at
  // run time (docs/RELIABILITY.md, "Run-time corruption"), and a history store, archive or metadata
  // store that a full disk stopped writing (RELIABILITY.md #6; the metadata store's refusal is its
  // "state": "failing").
  router.Add("GET", "/readyz", [&ctx](net::HttpRequest&, net::Responder r) {
    const bool ready = !ctx.ready || ctx.ready();
    const bool latest_set = static_cast<bool>(ctx.latest_state);
    const ApiContext::LatestState s = latest_set ? ctx.latest_state() : ApiContext::LatestState{};
    const bool metadata_up = ctx.metadata == nullptr || ctx.metadata->reachable();
    std::vector<std::string> damage;
    if (ctx.log_damage) damage = ctx.log_damage();
    std::vector<ApiContext::WriterFault> faults;
    if (ctx.writer_faults) faults = ctx.writer_faults();
    const bool degraded = !s.up || !metadata_up || !damage.empty() || !faults.empty();
    JsonWriter w;
    w.BeginObject();
    w.Key("status");
    w.String(!ready ? "starting" : degraded ? "degraded" : "ready");
    if (latest_set) {
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
    if (ctx.metadata != nullptr) {
      w.Key("metadata");
      w.BeginObject();
      w.Key("backend");
      w.String(ctx.metadata->backend());
      const auto refusal = std::find_if(faults.begin(), faults.end(),
                                        [](const auto& f) { return f.writer == "metadata"; });
      w.Key("state");
      w.String(!metadata_up ? "down" : refusal != faults.end() ? "failing" : "up");
      if (metadata_up && refusal != faults.end()) {
        // Writes refused for a full disk (answered 503); reads go on.
        w.Key("since");
        w.String(FormatRfc3339Millis(refusal->since_ns));
        w.Key("error");
        w.String(refusal->error);
      }
      w.EndObject();
    }
    // A writer a failing disk stopped (docs/RELIABILITY.md #6): "failing" while it retries.
    auto fault_fields = [&w](const ApiContext::WriterFault& f) {
      w.Key("state");
      w.String("failing");
      w.Key("since");
      w.String(FormatRfc3339Millis(f.since_ns));
      w.Key("error");
      w.String(f.error);
      if (f.writer == "history") {
        w.Key("pending_records");
        w.Uint(f.pending_records);
      }
    };
    // "log": refused appends and damaged records, in one object.
    const auto log_fault =
        std::find_if(faults.begin(), faults.end(), [](const auto& f) { return f.writer == "log"; });
    if (!damage.empty() || log_fault != faults.end()) {
      w.Key("log");
      w.BeginObject();
      if (log_fault != faults.end()) fault_fields(*log_fault);
      if (!damage.empty()) {
        w.Key("damaged");
        w.BeginArray();
        for (const std::string& d : damage) w.Raw(d);
        w.EndArray();
      }
      w.EndObject();
    }
    for (const ApiContext::WriterFault& f : faults) {
      if (f.writer == "log" || f.writer == "metadata") continue;
      w.Key(f.writer);
      w.BeginObject();
      fault_fields(f);
      w.EndObject();
    }
    w.EndObject();
    r.Send(net::HttpResponse::Json(ready ? 200 : 503, w.Take()));
  });
}

}  // namespace joule::api

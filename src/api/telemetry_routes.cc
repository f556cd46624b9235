// POST /v1/telemetry (CONTRACT §1, HTTP ingest).
#include <fmt/format.h>

#include <algorithm>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>

#include "api/api_context.h"
#include "api/routes.h"
#include "common/json_writer.h"
#include "net/http_server.h"
#include "net/router.h"

namespace joule::api {
namespace {

class TelemetryRoute {
 public:
  explicit TelemetryRoute(ApiContext& ctx) : ctx_(ctx) {
    accepted_ =
        ctx.metrics->GetCounter("joule_events_accepted_total", "Events accepted and durable");
    for (const char* code :
         {"invalid_json", "invalid_device_id", "invalid_timestamp", "timestamp_out_of_range",
          "invalid_metrics", "invalid_meta", "invalid_event_id", "forbidden", "unknown_device",
          "too_many_events", "payload_too_large", "unsupported_media_type", "unavailable"}) {
      RejectCounter(code);
    }
  }

  void Handle(net::HttpRequest& req, net::Responder responder) {
    const Caller caller = ctx_.auth->Authenticate(req);
    if (caller.kind == Caller::Kind::kNone) {
      responder.Send(net::HttpResponse::Error(401, "unauthorized", "missing or unknown token"));
      return;
    }
    if (caller.kind == Caller::Kind::kOwner) {
      responder.Send(net::HttpResponse::Error(403, "forbidden",
                                              "owner keys cannot ingest; use the device's token"));
      return;
    }
    const std::string* ct = req.Header("content-type");
    ingest::BodyFormat format;
    if (!ct || !ingest::FormatFromContentType(*ct, &format)) {
      RejectCounter("unsupported_media_type")->Inc();
      responder.Send(net::HttpResponse::Error(
          415, "unsupported_media_type",
          "Content-Type must be application/json or application/x-ndjson"));
      return;
    }
    thread_local std::unique_ptr<ingest::TelemetryParser> parser;
    if (!parser) parser = std::make_unique<ingest::TelemetryParser>(ctx_.limits);
    const int64_t now = ctx_.clock->NowNanos();
    Result<ingest::ParsedBody> parsed = parser->Parse(req.body, format, now);
    if (!parsed.ok()) {
      const std::string& msg = parsed.status().message();
      std::string code = msg.substr(0, msg.find(':'));
      if (parsed.status().code() == StatusCode::kResourceExhausted) {
        if (code != "too_many_events") code = "payload_too_large";
        RejectCounter(code)->Inc();
        responder.Send(net::HttpResponse::Error(413, code, msg));
      } else {
        RejectCounter("invalid_json")->Inc();
        responder.Send(net::HttpResponse::Error(400, "invalid_json", msg));
      }
      return;
    }
    ingest::ParsedBody& body = *parsed;
    Authorize(caller, &body);
    for (const auto& e : body.errors) RejectCounter(e.code)->Inc();
    if (body.events.empty()) {
      bool all_forbidden = !body.errors.empty();
      for (const auto& e : body.errors) all_forbidden &= e.code == "forbidden";
      responder.Send(net::HttpResponse::Json(all_forbidden ? 403 : 400, ResultBody(body)));
      return;
    }
    std::string ok_body = ResultBody(body);
    const uint64_t n = body.events.size();
    Counter* accepted = accepted_;
    Counter* unavailable = RejectCounter("unavailable");
    auto shared_responder = std::make_shared<net::Responder>(std::move(responder));
    Status st = ctx_.appender->Append(body.events, [shared_responder, ok_body = std::move(ok_body),
                                                    n, accepted, unavailable](Status s) mutable {
      if (s.ok()) {
        accepted->Inc(n);
        shared_responder->Send(net::HttpResponse::Json(202, std::move(ok_body)));
      } else {
        unavailable->Inc(n);
        shared_responder->Send(Unavailable());
      }
    });
    if (!st.ok()) {
      unavailable->Inc(n);
      shared_responder->Send(Unavailable());
    }
  }

 private:
  // A device token may write only its own device; with authentication on, every event's
  // device must be registered. Failing events move from `events` to `errors` (kept in
  // input order).
  void Authorize(const Caller& caller, ingest::ParsedBody* body) {
    if (ctx_.auth->disabled()) return;
    std::vector<model::Event> kept;
    std::vector<size_t> kept_indices;
    std::vector<ingest::EventError> errors;
    std::map<std::string, bool, std::less<>> registered;  // per request, to spare lookups
    for (size_t i = 0; i < body->events.size(); ++i) {
      model::Event& e = body->events[i];
      const size_t index = body->event_indices[i];
      if (caller.kind == Caller::Kind::kDevice && e.device_id != caller.device_id) {
        errors.push_back(
            {index, "forbidden", "this token may only write device '" + caller.device_id + "'"});
        continue;
      }
      auto it = registered.find(e.device_id);
      if (it == registered.end()) {
        bool known = ctx_.metadata && ctx_.metadata->GetDevice(e.device_id).ok();
        it = registered.emplace(e.device_id, known).first;
      }
      if (!it->second) {
        errors.push_back({index, "unknown_device",
                          "device '" + e.device_id + "' is not registered (POST /v1/devices)"});
        continue;
      }
      kept.push_back(std::move(e));
      kept_indices.push_back(index);
    }
    // Every kept event was moved out of body->events: always move them back.
    std::vector<ingest::EventError> merged;
    std::merge(
        body->errors.begin(), body->errors.end(), errors.begin(), errors.end(),
        std::back_inserter(merged),
        [](const ingest::EventError& a, const ingest::EventError& b) { return a.index < b.index; });
    body->errors = std::move(merged);
    body->events = std::move(kept);
    body->event_indices = std::move(kept_indices);
  }

  static net::HttpResponse Unavailable() {
    net::HttpResponse r = net::HttpResponse::Error(
        503, "unavailable", "the log cannot take more right now; nothing was stored; retry");
    r.headers.emplace_back("Retry-After", "1");
    return r;
  }

  static std::string ResultBody(const ingest::ParsedBody& body) {
    JsonWriter w;
    w.BeginObject();
    w.Key("accepted");
    w.Uint(body.events.size());
    w.Key("rejected");
    w.Uint(body.errors.size());
    w.Key("errors");
    w.BeginArray();
    for (const auto& e : body.errors) {
      w.BeginObject();
      w.Key("index");
      w.Uint(e.index);
      w.Key("code");
      w.String(e.code);
      w.Key("message");
      w.String(e.message);
      w.EndObject();
    }
    w.EndArray();
    w.EndObject();
    return w.Take();
  }

  Counter* RejectCounter(const std::string& code) {
    std::lock_guard lock(mu_);
    auto it = rejected_.find(code);
    if (it != rejected_.end()) return it->second;
    Counter* c = ctx_.metrics->GetCounter("joule_events_rejected_total",
                                          "Events rejected, by error code", {{"code", code}});
    rejected_.emplace(code, c);
    return c;
  }

  ApiContext& ctx_;
  Counter* accepted_;
  std::mutex mu_;
  std::map<std::string, Counter*, std::less<>> rejected_;
};

}  // namespace

void AddTelemetryRoutes(net::Router& router, ApiContext& ctx) {
  auto route = std::make_shared<TelemetryRoute>(ctx);
  router.Add("POST", "/v1/telemetry", [route](net::HttpRequest& req, net::Responder r) {
    route->Handle(req, std::move(r));
  });
}

}  // namespace joule::api

// POST /v1/telemetry (CONTRACT §1, HTTP ingest).
#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "api/api_context.h"
#include "api/content_coding.h"
#include "api/error_response.h"
#include "api/routes.h"
#include "common/json_writer.h"
#include "ingest/error_codes.h"
#include "ingest/parse_scratch.h"
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
          "too_many_events", "payload_too_large", "unsupported_media_type", "unavailable",
          "unauthorized"}) {
      RejectCounter(code);
    }
    limited_requests_ = ctx.metrics->GetCounter(
        "joule_rate_limited_total", "Requests refused by a rate limit", {{"kind", "requests"}});
    limited_events_ = ctx.metrics->GetCounter(
        "joule_rate_limited_total", "Requests refused by a rate limit", {{"kind", "events"}});
  }

  // The route's head check: a request without a valid token is refused before its body is
  // read — 401 `unauthorized`, or 503 `unavailable` when the metadata store cannot check the
  // token — and counted in joule_events_rejected_total as one request. (An owner key's 403
  // comes from Handle, after the request rate limit.) Until session 32 these answers came
  // from the generic TokenRoute check and were counted nowhere, nor was the owner key's 403
  // (found by a black-box test).
  // A body in a content coding (gzip …) is refused here too, before it is read (415).
  void CountBodyTooLarge() { RejectCounter("payload_too_large")->Inc(); }

  std::optional<net::HttpResponse> CheckHead(const net::HttpRequest& head) {
    const Caller caller = ctx_.auth->Authenticate(head);
    if (caller.kind == Caller::Kind::kNone) return RefuseUnauthenticated(caller);
    if (caller.kind == Caller::Kind::kOwner) return std::nullopt;
    return RefuseCoding(head);
  }

  void Handle(net::HttpRequest& req, net::Responder responder) {
    // A request without a body reaches the handler without the head check.
    const Caller caller = ctx_.auth->Authenticate(req);
    if (caller.kind == Caller::Kind::kNone) {
      responder.Send(RefuseUnauthenticated(caller));
      return;
    }
    if (ctx_.request_limiter != nullptr && !ctx_.auth->disabled() && !caller.admin()) {
      thread_local std::string key;  // reused: no allocation per request
      const bool device = caller.kind == Caller::Kind::kDevice;
      key.assign(device ? "device:" : "owner:");
      key.append(device ? caller.device_id : caller.owner_id);
      int64_t retry_ns = 0;
      if (!ctx_.request_limiter->TryAcquire(key, 1, LimiterNow(), &retry_ns)) {
        limited_requests_->Inc();
        responder.Send(RateLimited("too many requests for this token", retry_ns));
        return;
      }
    }
    if (caller.kind == Caller::Kind::kOwner) {
      responder.Send(RefuseOwner());
      return;
    }
    if (auto refused = RefuseCoding(req)) {
      responder.Send(std::move(*refused));
      return;
    }
    // A body without a Content-Type is taken as JSON (one object or an array), as every
    // other JSON-body route takes it (json_body.h); NDJSON needs its type. Until session 36
    // it was 415 here only (found by a black-box test).
    const std::string* ct = req.Header("content-type");
    ingest::BodyFormat format = ingest::BodyFormat::kJson;
    if (ct != nullptr && !ingest::FormatFromContentType(*ct, &format)) {
      RejectCounter("unsupported_media_type")->Inc();
      responder.Send(net::HttpResponse::Error(
          415, "unsupported_media_type",
          "Content-Type must be application/json or application/x-ndjson"));
      return;
    }
    // The thread's parser and ParsedBody (ParseScratch): this handler does not suspend
    // between the parse and Append (which encodes the events), so the events are not
    // referenced after the next request's parse on this thread.
    thread_local ingest::ParseScratch scratch;
    ingest::ParseScratch::Lease lease(&scratch, ctx_.limits);
    const int64_t now = ctx_.clock->NowNanos();
    ingest::ParsedBody& body = lease.body();
    const Status parsed = lease.parser().ParseInto(req.body, format, now, {}, &body);
    if (!parsed.ok()) {
      const std::string& msg = parsed.message();
      const std::string code = ingest::BodyErrorCode(parsed);
      if (parsed.code() == StatusCode::kResourceExhausted) {
        RejectCounter(code)->Inc();
        responder.Send(net::HttpResponse::Error(413, code, msg));
      } else {
        RejectCounter("invalid_json")->Inc();
        responder.Send(net::HttpResponse::Json(400, UnparseableBody(msg)));
      }
      return;
    }
    if (Status authorized = Authorize(caller, &body); !authorized.ok()) {
      // A device the metadata store could not be asked about is not unknown: nothing is
      // stored and the client retries (until session 19 a registered device the cache did
      // not hold got "unknown_device" per event while PostgreSQL was down, a 400 the client
      // does not retry; found while checking the outage paths of a black-box report).
      for (const auto& e : body.errors) RejectCounter(e.code)->Inc();
      RejectCounter("unavailable")->Inc(body.events.size());
      responder.Send(ErrorFromStatus(authorized));
      return;
    }
    if (!AcquireEvents(body, responder)) return;
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
  net::HttpResponse RefuseUnauthenticated(const Caller& caller) {
    RejectCounter(caller.store_unavailable ? "unavailable" : "unauthorized")->Inc();
    return Unauthorized(caller);
  }

  net::HttpResponse RefuseOwner() {
    RejectCounter("forbidden")->Inc();
    return net::HttpResponse::Error(403, "forbidden",
                                    "owner keys cannot ingest; use the device's token");
  }

  // 415 for a body in a content coding (content_coding.h), counted: only identity is taken
  // (until session 32 a gzip body was parsed as it came, 400 invalid_json "not valid
  // UTF-8"; found by a black-box test).
  std::optional<net::HttpResponse> RefuseCoding(const net::HttpRequest& req) {
    std::optional<net::HttpResponse> refused = RefuseContentCoding(req);
    if (refused) RejectCounter("unsupported_media_type")->Inc();
    return refused;
  }

  int64_t LimiterNow() const {
    return (ctx_.limiter_clock != nullptr ? ctx_.limiter_clock : ctx_.clock)->NowNanos();
  }

  // Takes each device's events from its bucket; all or nothing: on a refusal the tokens
  // already taken for other devices of this request are not returned (they were offered).
  bool AcquireEvents(const ingest::ParsedBody& body, net::Responder& responder) {
    if (ctx_.event_limiter == nullptr || body.events.empty()) return true;
    // Events per device, in order of first appearance: runs of one device collapsed first
    // (a device token's body is one run), then repeats merged through an open-addressing
    // index. The thread's vectors are reused, so a request allocates nothing here once warm.
    thread_local std::vector<std::pair<std::string_view, uint64_t>> per_device;
    thread_local std::vector<uint32_t> slots;  // index into per_device + 1; 0 = empty
    per_device.clear();
    for (const model::Event& e : body.events) {
      if (!per_device.empty() && per_device.back().first == e.device_id) {
        ++per_device.back().second;
      } else {
        per_device.emplace_back(e.device_id, 1);
      }
    }
    if (per_device.size() > 1) {
      size_t cap = 16;
      while (cap < 2 * per_device.size()) cap *= 2;
      slots.assign(cap, 0);
      size_t out = 0;
      for (size_t i = 0; i < per_device.size(); ++i) {
        size_t h = std::hash<std::string_view>{}(per_device[i].first) & (cap - 1);
        while (slots[h] != 0 && per_device[slots[h] - 1].first != per_device[i].first) {
          h = (h + 1) & (cap - 1);
        }
        if (slots[h] != 0) {
          per_device[slots[h] - 1].second += per_device[i].second;
        } else {
          per_device[out] = per_device[i];
          slots[h] = static_cast<uint32_t>(++out);
        }
      }
      per_device.resize(out);
    }
    // More events of one device than its bucket holds can never be taken: 413, not a 429
    // that a client would retry for ever.
    for (const auto& [device_id, count] : per_device) {
      if (static_cast<double>(count) > ctx_.event_limiter->burst()) {
        RejectCounter("too_many_events")->Inc();
        responder.Send(net::HttpResponse::Error(
            413, "too_many_events",
            fmt::format("{} events for device '{}' in one request; its rate limit takes at "
                        "most {} at once (limits.device_events_per_second × 2 s): split the "
                        "request",
                        count, device_id, static_cast<uint64_t>(ctx_.event_limiter->burst()))));
        return false;
      }
    }
    const int64_t limiter_now = LimiterNow();
    for (const auto& [device_id, count] : per_device) {
      int64_t retry_ns = 0;
      if (!ctx_.event_limiter->TryAcquire(device_id, static_cast<double>(count), limiter_now,
                                          &retry_ns)) {
        limited_events_->Inc();
        responder.Send(
            RateLimited(fmt::format("too many events for device '{}'", device_id), retry_ns));
        return false;
      }
    }
    return true;
  }

  static net::HttpResponse RateLimited(const std::string& message, int64_t retry_ns) {
    net::HttpResponse r =
        net::HttpResponse::Error(429, "rate_limited", message + "; nothing was stored");
    const int64_t secs = std::max<int64_t>(1, (retry_ns + kNanosPerSecond - 1) / kNanosPerSecond);
    r.headers.emplace_back("Retry-After", std::to_string(secs));
    return r;
  }

  // A device token may write only its own device; with authentication on, every event's
  // device must be registered. Failing events move from `events` to `errors` (kept in
  // input order). Unavailable when the metadata store cannot tell whether a device is
  // registered (then `body` is left half sorted: the request is refused as a whole).
  Status Authorize(const Caller& caller, ingest::ParsedBody* body) {
    if (ctx_.auth->disabled()) return Status::Ok();
    // Whether each event's device is registered, asked once for the body's distinct
    // devices (DevicesRegistered: the metadata cache answers what it holds, without copying
    // records, and reads the rest with one query). Before, each device the cache did not
    // hold cost its own PostgreSQL round trip, on the I/O thread: an admin batch naming
    // 10,000 unregistered ids took 1.2-1.4 s against a local server (found by a black-box
    // test; src/api/README.md "HTTP ingest").
    // The thread's vectors are reused: nothing is allocated here once warm. `ids` views
    // the events' device ids, so every lookup is done before events move below.
    thread_local std::vector<std::string_view> ids;  // distinct, sorted when more than one
    thread_local std::vector<bool> registered;       // registered[k] for ids[k]
    thread_local std::vector<uint8_t> verdict;       // per event: kKeep, kForbidden, kUnknown
    constexpr uint8_t kKeep = 0, kForbidden = 1, kUnknown = 2;
    const auto forbidden = [&](const model::Event& e) {
      return caller.kind == Caller::Kind::kDevice && e.device_id != caller.device_id;
    };
    ids.clear();
    for (const model::Event& e : body->events) {
      // Runs of one device (a device token's body is one run) collapse here.
      if (!forbidden(e) && (ids.empty() || ids.back() != e.device_id)) ids.push_back(e.device_id);
    }
    if (ids.size() > 1) {
      std::sort(ids.begin(), ids.end());
      ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    }
    const Status known =
        ctx_.metadata ? ctx_.metadata->DevicesRegistered(ids, &registered) : Status::Ok();
    if (known.code() == StatusCode::kUnavailable) return known;
    // Without a metadata store, or when it failed otherwise, no device is registered.
    if (!ctx_.metadata || !known.ok()) registered.assign(ids.size(), false);
    verdict.resize(body->events.size());
    for (size_t i = 0; i < body->events.size(); ++i) {
      const model::Event& e = body->events[i];
      if (forbidden(e)) {
        verdict[i] = kForbidden;
        continue;
      }
      const size_t k = ids.size() == 1
                           ? 0
                           : static_cast<size_t>(std::lower_bound(ids.begin(), ids.end(),
                                                                  std::string_view(e.device_id)) -
                                                 ids.begin());
      verdict[i] = registered[k] ? kKeep : kUnknown;
    }
    // Kept events are compacted in place (swapped, so the reused ParsedBody keeps every
    // event's buffers); nothing is allocated when every event passes.
    std::vector<ingest::EventError> errors;
    size_t kept = 0;
    for (size_t i = 0; i < body->events.size(); ++i) {
      model::Event& e = body->events[i];
      const size_t index = body->event_indices[i];
      if (verdict[i] == kForbidden) {
        errors.push_back(
            {index, "forbidden", "this token may only write device '" + caller.device_id + "'"});
        continue;
      }
      if (verdict[i] == kUnknown) {
        errors.push_back({index, "unknown_device",
                          "device '" + e.device_id + "' is not registered (POST /v1/devices)"});
        continue;
      }
      if (kept != i) {
        std::swap(body->events[kept], e);
        body->event_indices[kept] = index;
      }
      ++kept;
    }
    if (errors.empty()) return Status::Ok();
    body->events.resize(kept);
    body->event_indices.resize(kept);
    std::vector<ingest::EventError> merged;
    merged.reserve(body->errors.size() + errors.size());
    std::merge(
        std::make_move_iterator(body->errors.begin()), std::make_move_iterator(body->errors.end()),
        std::make_move_iterator(errors.begin()), std::make_move_iterator(errors.end()),
        std::back_inserter(merged),
        [](const ingest::EventError& a, const ingest::EventError& b) { return a.index < b.index; });
    body->errors = std::move(merged);
    return Status::Ok();
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

  // CONTRACT §1: a 400 has the ingest result's shape (`accepted: 0`); an unparseable body
  // has no events to list, so its error is the API's error object (§3) next to it.
  static std::string UnparseableBody(std::string_view message) {
    JsonWriter w;
    w.BeginObject();
    w.Key("accepted");
    w.Uint(0);
    w.Key("rejected");
    w.Uint(0);
    w.Key("errors");
    w.BeginArray();
    w.EndArray();
    w.Key("error");
    w.BeginObject();
    w.Key("code");
    w.String("invalid_json");
    w.Key("message");
    w.String(message);
    w.EndObject();
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
  Counter* limited_requests_;
  Counter* limited_events_;
  std::mutex mu_;
  std::map<std::string, Counter*, std::less<>> rejected_;
};

}  // namespace

void AddTelemetryRoutes(net::Router& router, ApiContext& ctx) {
  auto route = std::make_shared<TelemetryRoute>(ctx);
  net::RouteOptions options;
  options.max_body_bytes = ctx.limits.max_body_bytes;
  options.head_check = [route](const net::HttpRequest& head) { return route->CheckHead(head); };
  // A body over the limit is answered 413 by the server before the handler sees it: counted
  // here as one rejected request (src/api/README.md "Counters"; until session 33 only MQTT's
  // oversized payloads were, found by a black-box test).
  options.on_body_too_large = [route] { route->CountBodyTooLarge(); };
  router.Add(
      "POST", "/v1/telemetry",
      [route](net::HttpRequest& req, net::Responder r) { route->Handle(req, std::move(r)); },
      std::move(options));
}

}  // namespace joule::api

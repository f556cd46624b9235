// Alerts API (CONTRACT §3, §4): GET /v1/alerts?device_id=&state=&rule_id=&from=&to=&limit=&cursor=,
// POST /v1/alerts/{id}/ack, POST /v1/alerts/{id}/snooze (body {"until": RFC 3339} in the
// future, or {"for": "1h"}; {"until": null} un-snoozes).
//
// The list is ordered by opened_at, newest first, and from/to select by opened_at (the
// store's index); a later change updates an alert in place (state, updated_at) without
// moving it — docs/openapi.yaml says so, and points pollers of changes to SSE/webhooks.
//
// Admin sees every alert; an owner key only its own (another owner's alert is 404; a
// device_id filter for another owner's device finds nothing); device tokens get 403.
// Each alert is the JSON delivered to webhooks and SSE with the current `state`, `acked`
// and `snoozed_until`, plus `delivery`: webhook deliveries pending, delivered and
// dead-lettered (`dead_letter: true` once any delivery gave up), attempts, last error.
#include <fmt/format.h>
#include <simdjson.h>

#include <cstdint>
#include <memory>
#include <string>

#include "alert/alert_engine.h"
#include "alert/rule.h"
#include "api/api_context.h"
#include "api/audit.h"
#include "api/error_response.h"
#include "api/json_body.h"
#include "api/member_handler.h"
#include "api/query_params.h"
#include "api/routes.h"
#include "api/token_route.h"
#include "common/json_writer.h"
#include "common/time_format.h"
#include "net/router.h"

namespace joule::api {
namespace {

constexpr size_t kMaxBodyBytes = 4 * 1024;  // {"acked": false}, {"until": "…"}

net::HttpResponse Forbidden(std::string_view message) {
  return net::HttpResponse::Error(403, "forbidden", message);
}

class AlertRoutes {
 public:
  explicit AlertRoutes(ApiContext& ctx) : ctx_(ctx) {}

  void List(net::HttpRequest& req, net::Responder responder) {
    Caller caller;
    if (auto err = Admit(req, &caller)) return responder.Send(std::move(*err));
    store::AlertFilter f;
    Result<size_t> limit = ParseLimit(req.Query("limit"), 100, 1000);
    if (!limit.ok()) return responder.Send(ErrorFromStatus(limit.status()));
    f.limit = *limit;
    if (const std::string* c = req.Query("cursor"); c && !c->empty()) {
      // "<opened_at_us>:<alert_id>", as the stores write it: the number plain digits.
      const size_t colon = c->find(':');
      if (colon == std::string::npos || colon + 1 == c->size() ||
          !ParseCursorNumber(std::string_view(*c).substr(0, colon), INT64_MAX).ok()) {
        return responder.Send(ErrorFromStatus(BadCursor()));
      }
      f.after = *c;
    }
    if (const std::string* d = req.Query("device_id"); d && !d->empty()) f.device_id = *d;
    if (const std::string* r = req.Query("rule_id"); r && !r->empty()) f.rule_id = *r;
    if (const std::string* s = req.Query("state"); s && !s->empty()) {
      f.state = store::ParseAlertState(*s);
      if (!f.state) {
        return responder.Send(ErrorFromStatus(
            Status::InvalidArgument("state must be one of: pending, firing, resolved")));
      }
    }
    WrittenTime written[2];  // from, to: compared as written too (both may clamp to 2170)
    bool given[2] = {false, false};
    for (const char* name : {"from", "to", "updated_since"}) {
      if (const std::string* t = req.Query(name); t && !t->empty()) {
        const std::string_view n(name);
        const int slot = n == "from" ? 0 : n == "to" ? 1 : -1;
        Result<int64_t> ns = ParseTimeParam(name, *t, slot >= 0 ? &written[slot] : nullptr);
        if (!ns.ok()) return responder.Send(ErrorFromStatus(ns.status()));
        if (slot >= 0) given[slot] = true;
        // Rounded up to the millisecond: the same alerts as by the times they show
        // (query_params.h).
        (n == "from" ? f.from_ns : n == "to" ? f.to_ns : f.updated_since_ns) = CeilToMillis(*ns);
      }
    }
    // As history, owner energy and audit answer (found by a black-box test: the alerts
    // list answered an empty 200).
    if (given[0] && given[1] && (f.from_ns > f.to_ns || written[0] > written[1])) {
      return responder.Send(ErrorFromStatus(Status::InvalidArgument("from must not be after to")));
    }
    if (caller.kind == Caller::Kind::kOwner) {
      f.owner_id = caller.owner_id;
    } else if (const std::string* o = req.Query("owner_id"); o && !o->empty()) {
      f.owner_id = *o;
    }
    Result<store::AlertPage> page = ctx_.metadata->ListAlerts(f);
    if (!page.ok()) return responder.Send(ErrorFromStatus(page.status()));
    std::string body = "{\"alerts\":[";
    for (size_t i = 0; i < page->alerts.size(); ++i) {
      if (i) body += ',';
      body += View(page->alerts[i]);
    }
    body += "],\"next_cursor\":";
    if (page->next_cursor.empty()) {
      body += "null";
    } else {
      JsonWriter::AppendEscaped(&body, page->next_cursor);
    }
    body += "}";
    responder.Send(net::HttpResponse::Json(200, std::move(body)));
  }

  void Ack(net::HttpRequest& req, net::Responder responder) {
    Caller caller;
    if (auto err = Admit(req, &caller)) return responder.Send(std::move(*err));
    const std::string id = *req.PathParam("id");
    if (Status st = CheckVisible(caller, id); !st.ok()) return responder.Send(ErrorFromStatus(st));
    if (auto refused = RefuseJsonBody(req, kMaxBodyBytes)) return responder.Send(*refused);
    bool acked = true;
    if (!req.body.empty()) {
      simdjson::dom::parser p;
      simdjson::dom::element e;
      simdjson::dom::object obj;
      if (p.parse(req.body).get(e) != simdjson::SUCCESS ||
          e.get_object().get(obj) != simdjson::SUCCESS) {
        return responder.Send(
            ErrorFromStatus(Status::InvalidArgument("body must be a JSON object")));
      }
      for (auto field : obj) {
        if (field.key != "acked") return responder.Send(ErrorFromStatus(UnknownField(field.key)));
        if (field.value.get_bool().get(acked) != simdjson::SUCCESS) {
          return responder.Send(
              ErrorFromStatus(Status::InvalidArgument("acked must be a boolean")));
        }
      }
    }
    Result<store::Alert> a = ctx_.metadata->SetAlertAcked(id, acked);
    if (!a.ok()) return responder.Send(ErrorFromStatus(a.status()));
    RecordAudit(ctx_, req, caller, acked ? "alert.acked" : "alert.unacked", "alert", id);
    if (ctx_.alerts) ctx_.alerts->FlagsChanged(*a);
    responder.Send(net::HttpResponse::Json(200, View(*a)));
  }

  void Snooze(net::HttpRequest& req, net::Responder responder) {
    Caller caller;
    if (auto err = Admit(req, &caller)) return responder.Send(std::move(*err));
    const std::string id = *req.PathParam("id");
    if (Status st = CheckVisible(caller, id); !st.ok()) return responder.Send(ErrorFromStatus(st));
    if (auto refused = RefuseJsonBody(req, kMaxBodyBytes)) return responder.Send(*refused);
    simdjson::dom::parser p;
    simdjson::dom::element e;
    auto bad = [&](std::string m) { responder.Send(ErrorFromStatus(Status::InvalidArgument(m))); };
    simdjson::dom::object obj;
    if (p.parse(req.body).get(e) != simdjson::SUCCESS ||
        e.get_object().get(obj) != simdjson::SUCCESS) {
      return bad("body must be a JSON object: {\"until\": \"<RFC 3339>\"} or {\"for\": \"1h\"}");
    }
    for (auto field : obj) {
      if (field.key != "until" && field.key != "for") {
        return responder.Send(ErrorFromStatus(UnknownField(field.key)));
      }
    }
    std::optional<int64_t> until;
    simdjson::dom::element u, d;
    bool has_until = e["until"].get(u) == simdjson::SUCCESS;
    bool has_for = e["for"].get(d) == simdjson::SUCCESS;
    if (has_until == has_for) return bad("give exactly one of \"until\" and \"for\"");
    // A snooze ends at most alert::kMaxAlertDurationNs (3650d) from now: further, now + for
    // overflowed int64 nanoseconds — a snooze for 100000d ended in 1716, with an immediate
    // reminder — and a time after 2262 was refused as "not an RFC 3339 time" (found by a
    // black-box test). To silence an alert for good, ack it.
    const int64_t now = ctx_.clock->NowNanos();
    if (has_until && !u.is_null()) {
      std::string_view s;
      int64_t seconds = 0, fraction = 0;
      if (u.get_string().get(s) != simdjson::SUCCESS ||
          !ParseRfc3339Seconds(s, &seconds, &fraction)) {
        return bad("until must be an RFC 3339 time (or null to un-snooze)");
      }
      // (A well-formed time outside int64 nanoseconds, 1677–2262: far in the past or future.)
      int64_t ns = seconds < 0 ? INT64_MIN : INT64_MAX;
      (void)ParseRfc3339(s, &ns);
      // A snooze that has already ended mutes nothing; accepting it sent an immediate
      // "snooze ended" reminder (found by a black-box test).
      if (ns <= now) return bad("until must be in the future (null un-snoozes)");
      if (ns - now > alert::kMaxAlertDurationNs) {
        return bad(
            "until must be at most 3650d (about ten years) from now; ack the alert to "
            "silence it for good");
      }
      until = ns;
    } else if (has_for) {
      std::string_view s;
      if (d.get_string().get(s) != simdjson::SUCCESS) {
        return bad("for must be a duration with a unit like \"30m\" or \"1h\"");
      }
      Result<int64_t> ns = alert::ParseAlertDuration("for", s);
      if (!ns.ok()) return bad(std::string(ns.status().message()));
      if (*ns <= 0) return bad("for must be a duration with a unit like \"30m\" or \"1h\"");
      until = now + *ns;
    }
    Result<store::Alert> a = ctx_.metadata->SnoozeAlert(id, until);
    if (!a.ok()) return responder.Send(ErrorFromStatus(a.status()));
    RecordAudit(ctx_, req, caller, until ? "alert.snoozed" : "alert.unsnoozed", "alert", id,
                until ? "{\"until\":\"" + FormatRfc3339Millis(*until) + "\"}" : std::string());
    if (ctx_.alerts) ctx_.alerts->FlagsChanged(*a);
    responder.Send(net::HttpResponse::Json(200, View(*a)));
  }

 private:
  std::optional<net::HttpResponse> Admit(const net::HttpRequest& req, Caller* caller) {
    *caller = ctx_.auth->Authenticate(req);
    if (caller->kind == Caller::Kind::kNone) return Unauthorized(*caller);
    if (caller->kind == Caller::Kind::kDevice) {
      return Forbidden("device tokens may only ingest; use an owner key");
    }
    if (!ctx_.metadata) return net::HttpResponse::Error(503, "unavailable", "no metadata store");
    return std::nullopt;
  }

  Status CheckVisible(const Caller& caller, const std::string& id) {
    Result<store::Alert> a = ctx_.metadata->GetAlert(id);
    if (!a.ok()) {
      return a.status().code() == StatusCode::kNotFound ? Status::NotFound("no such alert")
                                                        : a.status();
    }
    if (caller.kind == Caller::Kind::kOwner && a->owner_id != caller.owner_id) {
      return Status::NotFound("no such alert");
    }
    return Status::Ok();
  }

  // The stored JSON with the columns' current state and flags, plus delivery status.
  std::string View(const store::Alert& a) {
    JsonWriter w;
    w.BeginObject();
    simdjson::dom::parser p;
    simdjson::dom::object obj;
    if (p.parse(a.json).get_object().get(obj) == simdjson::SUCCESS) {
      for (auto field : obj) {
        std::string_view k = field.key;
        if (k == "state" || k == "acked" || k == "snoozed_until" || k == "delivery" ||
            k == "updated_at") {
          continue;
        }
        w.Key(k);
        w.Raw(simdjson::minify(field.value));
      }
    } else {
      w.Key("id");
      w.String(a.id);
    }
    w.Key("state");
    w.String(store::AlertStateName(a.state));
    w.Key("acked");
    w.Bool(a.acked);
    // A snooze that has ended is no snooze: null (found by a black-box test: the past time
    // stayed, as if the alert were still snoozed).
    w.Key("snoozed_until");
    if (a.snoozed_until_ns && *a.snoozed_until_ns > ctx_.clock->NowNanos())
      w.String(FormatRfc3339Millis(*a.snoozed_until_ns));
    else
      w.Null();
    w.Key("updated_at");
    w.String(FormatRfc3339Millis(a.updated_at_ns));
    std::optional<alert::DeliveryStatus> d;
    if (ctx_.alerts) d = ctx_.alerts->DeliveryOf(a.id);
    w.Key("delivery");
    w.BeginObject();
    w.Key("pending");
    w.Int(d ? d->pending : 0);
    w.Key("delivered");
    w.Int(d ? d->delivered : 0);
    w.Key("dead_letters");
    w.Int(d ? d->dead : 0);
    w.Key("dead_letter");
    w.Bool(d && d->dead > 0);
    w.Key("dropped");
    w.Int(d ? d->dropped : 0);
    w.Key("attempts");
    w.Int(d ? d->attempts : 0);
    w.Key("last_error");
    if (d && !d->last_error.empty())
      w.String(d->last_error);
    else
      w.Null();
    w.EndObject();
    w.EndObject();
    return w.Take();
  }

  ApiContext& ctx_;
};

}  // namespace

void AddAlertRoutes(net::Router& router, ApiContext& ctx) {
  auto routes = std::make_shared<AlertRoutes>(ctx);
  router.Add("GET", "/v1/alerts", MemberHandler(routes, &AlertRoutes::List), TokenRoute(ctx));
  router.Add("POST", "/v1/alerts/{id}/ack", MemberHandler(routes, &AlertRoutes::Ack),
             TokenRoute(ctx, kMaxBodyBytes));
  router.Add("POST", "/v1/alerts/{id}/snooze", MemberHandler(routes, &AlertRoutes::Snooze),
             TokenRoute(ctx, kMaxBodyBytes));
}

}  // namespace joule::api

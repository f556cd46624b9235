// Alert rules API (CONTRACT §3, §4): GET/POST /v1/rules, GET/PUT/DELETE /v1/rules/{id}.
//
// Who may do what:
// - admin: every rule. A rule's owner_id is the body's owner_id, else the owner of the
//   scoped device or the scoped owner_id; a model-scoped rule without one covers every
//   owner's devices of that model.
// - owner key: only its own rules. Scopes: its own devices (another owner's device, or
//   one that does not exist, is 404, like every route that takes a device id), its own
//   owner_id (another is 403), or a model — which then covers only its own devices.
//   Another owner's rule is 404. Rule ids are one namespace for every owner, so an owner
//   key cannot choose one on POST (400; the server assigns `rule_<random>`): a 409 for a
//   chosen id would reveal another owner's rule.
// - device token: 403 (tokens ingest).
// Bodies are validated by alert::ParseRule (400 with a message naming the field; the
// read-only created_at and updated_at are ignored, so a GET's body may be PUT back); webhook
// targets go through the SSRF guard (alerts.allow_private_targets). Secrets are never
// returned ("<redacted>"); a PUT that sends "<redacted>" back keeps the stored secret of
// the channel with the same url.
#include <fmt/format.h>
#include <sys/random.h>

#include <memory>
#include <string>

#include "alert/alert_engine.h"
#include "alert/rule.h"
#include "api/api_context.h"
#include "api/audit.h"
#include "api/error_response.h"
#include "api/json_body.h"
#include "api/member_handler.h"
#include "api/routes.h"
#include "api/token_route.h"
#include "common/json_writer.h"
#include "common/time_format.h"
#include "net/router.h"

namespace joule::api {
namespace {

constexpr size_t kMaxRuleBytes = 32 * 1024;
constexpr const char* kRedacted = "<redacted>";

net::HttpResponse Forbidden(std::string_view message) {
  return net::HttpResponse::Error(403, "forbidden", message);
}

std::string NewRuleId() {
  unsigned char buf[8];
  if (getrandom(buf, sizeof buf, 0) != static_cast<ssize_t>(sizeof buf)) std::abort();
  std::string s = "rule_";
  static const char* kHex = "0123456789abcdef";
  for (unsigned char b : buf) {
    s += kHex[b >> 4];
    s += kHex[b & 15];
  }
  return s;
}

// The API view of a stored rule: canonical JSON without secrets, plus its times.
std::string RuleView(const store::Rule& row) {
  alert::RuleParseOptions po;
  po.allow_private_targets = true;
  po.drop_duplicate_channels = true;  // rules stored before duplicates were refused
  po.clamp_durations = true;          // rules stored before long durations were refused
  Result<alert::Rule> r = alert::ParseRule(row.json, po);
  std::string json;
  if (r.ok()) {
    r->id = row.id;
    r->owner_id = row.owner_id;
    json = alert::RuleToJson(*r, false);
  } else {
    json = fmt::format("{{\"id\":\"{}\",\"error\":\"stored rule does not parse\"}}", row.id);
  }
  json.pop_back();  // '}'
  json +=
      fmt::format(",\"created_at\":\"{}\",\"updated_at\":\"{}\"}}",
                  FormatRfc3339Millis(row.created_at_ns), FormatRfc3339Millis(row.updated_at_ns));
  return json;
}

// The stored rule as RuleToJson(…, true) writes it ("" if it does not parse): a stored
// rule is compared with a replacement in this form (one stored by an earlier version may
// differ in form only).
std::string CanonicalJson(const store::Rule& row) {
  alert::RuleParseOptions po;
  po.allow_private_targets = true;
  po.drop_duplicate_channels = true;
  po.clamp_durations = true;
  Result<alert::Rule> r = alert::ParseRule(row.json, po);
  if (!r.ok()) return "";
  r->id = row.id;
  r->owner_id = row.owner_id;
  return alert::RuleToJson(*r, true);
}

// Audit details of a rule change: whose rule it is (never its channels' secrets).
std::string OwnerOf(const store::Rule& rule) {
  JsonWriter w;
  w.BeginObject();
  w.Key("owner_id");
  w.String(rule.owner_id);
  w.EndObject();
  return w.Take();
}

class RuleRoutes {
 public:
  explicit RuleRoutes(ApiContext& ctx) : ctx_(ctx) {}

  void Create(net::HttpRequest& req, net::Responder responder) {
    Caller caller;
    if (auto err = Admit(req, &caller)) return responder.Send(std::move(*err));
    if (auto refused = RefuseJsonBody(req, kMaxRuleBytes)) return responder.Send(*refused);
    Result<alert::Rule> rule = ParseBody(req, caller);
    if (!rule.ok()) return responder.Send(ErrorFromStatus(rule.status()));
    if (caller.kind == Caller::Kind::kOwner && ctx_.rules_per_owner > 0) {
      // Checked before the insert (two concurrent creations may pass it together).
      Result<std::vector<store::Rule>> held = ctx_.metadata->ListRules(caller.owner_id);
      if (!held.ok()) return responder.Send(ErrorFromStatus(held.status()));
      if (held->size() >= ctx_.rules_per_owner) {
        return responder.Send(net::HttpResponse::Error(
            409, "too_many_rules",
            fmt::format("this owner has {} rules, the most an owner key may create "
                        "(limits.rules_per_owner); delete one first",
                        held->size())));
      }
    }
    if (rule->id.empty()) rule->id = NewRuleId();
    store::Rule row{rule->id, rule->owner_id, alert::RuleToJson(*rule, true)};
    Result<store::Rule> created = ctx_.metadata->CreateRule(row);
    if (!created.ok()) return responder.Send(ErrorFromStatus(created.status()));
    RecordAudit(ctx_, req, caller, "rule.created", "rule", created->id, OwnerOf(*created));
    if (ctx_.alerts) ctx_.alerts->ReloadRules();
    net::HttpResponse r = net::HttpResponse::Json(201, RuleView(*created));
    r.headers.emplace_back("Location", "/v1/rules/" + created->id);
    responder.Send(std::move(r));
  }

  void List(net::HttpRequest& req, net::Responder responder) {
    Caller caller;
    if (auto err = Admit(req, &caller)) return responder.Send(std::move(*err));
    std::optional<std::string> owner;
    if (caller.kind == Caller::Kind::kOwner) {
      owner = caller.owner_id;
    } else if (const std::string* q = req.Query("owner_id"); q && !q->empty()) {
      owner = *q;
    }
    Result<std::vector<store::Rule>> rows = ctx_.metadata->ListRules(owner);
    if (!rows.ok()) return responder.Send(ErrorFromStatus(rows.status()));
    std::string body = "{\"rules\":[";
    for (size_t i = 0; i < rows->size(); ++i) {
      if (i) body += ',';
      body += RuleView((*rows)[i]);
    }
    body += "]}";
    responder.Send(net::HttpResponse::Json(200, std::move(body)));
  }

  void Get(net::HttpRequest& req, net::Responder responder) {
    Caller caller;
    if (auto err = Admit(req, &caller)) return responder.Send(std::move(*err));
    Result<store::Rule> row = Visible(caller, *req.PathParam("id"));
    if (!row.ok()) return responder.Send(ErrorFromStatus(row.status()));
    responder.Send(net::HttpResponse::Json(200, RuleView(*row)));
  }

  void Put(net::HttpRequest& req, net::Responder responder) {
    Caller caller;
    if (auto err = Admit(req, &caller)) return responder.Send(std::move(*err));
    const std::string id = *req.PathParam("id");
    Result<store::Rule> existing = Visible(caller, id);
    if (!existing.ok()) return responder.Send(ErrorFromStatus(existing.status()));
    if (auto refused = RefuseJsonBody(req, kMaxRuleBytes)) return responder.Send(*refused);
    Result<alert::Rule> rule = ParseBody(req, caller, &*existing);
    if (!rule.ok()) return responder.Send(ErrorFromStatus(rule.status()));
    if (!rule->id.empty() && rule->id != id) {
      return responder.Send(ErrorFromStatus(
          Status::InvalidArgument("id in the body must match the path (or be omitted)")));
    }
    rule->id = id;
    store::Rule row{id, rule->owner_id, alert::RuleToJson(*rule, true)};
    // A PUT that changes nothing (a GET's body sent back as it is) writes nothing: the
    // rule's updated_at stays, nothing is audited and the engine is not reloaded (found by a
    // black-box test: updated_at moved while the rule was the same).
    if (row.owner_id == existing->owner_id && row.json == CanonicalJson(*existing)) {
      return responder.Send(net::HttpResponse::Json(200, RuleView(*existing)));
    }
    Result<store::Rule> replaced = ctx_.metadata->ReplaceRule(row);
    if (!replaced.ok()) return responder.Send(ErrorFromStatus(replaced.status()));
    RecordAudit(ctx_, req, caller, "rule.updated", "rule", id, OwnerOf(*replaced));
    if (ctx_.alerts) ctx_.alerts->ReloadRules();
    responder.Send(net::HttpResponse::Json(200, RuleView(*replaced)));
  }

  void Delete(net::HttpRequest& req, net::Responder responder) {
    Caller caller;
    if (auto err = Admit(req, &caller)) return responder.Send(std::move(*err));
    const std::string id = *req.PathParam("id");
    Result<store::Rule> existing = Visible(caller, id);
    if (!existing.ok()) return responder.Send(ErrorFromStatus(existing.status()));
    Status st = ctx_.metadata->DeleteRule(id);
    if (!st.ok()) return responder.Send(ErrorFromStatus(st));
    RecordAudit(ctx_, req, caller, "rule.deleted", "rule", id, OwnerOf(*existing));
    if (ctx_.alerts) ctx_.alerts->ReloadRules();
    responder.Send(net::HttpResponse::Json(204, ""));
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

  Result<store::Rule> Visible(const Caller& caller, const std::string& id) {
    Result<store::Rule> row = ctx_.metadata->GetRule(id);
    if (!row.ok()) {
      if (row.status().code() == StatusCode::kNotFound) return Status::NotFound("no such rule");
      return row.status();
    }
    if (caller.kind == Caller::Kind::kOwner && row->owner_id != caller.owner_id) {
      return Status::NotFound("no such rule");
    }
    return row;
  }

  // REQUIRES: the body passed RefuseJsonBody.
  Result<alert::Rule> ParseBody(const net::HttpRequest& req, const Caller& caller,
                                const store::Rule* existing = nullptr) {
    alert::RuleParseOptions po;
    po.allow_private_targets = ctx_.alerts ? ctx_.alerts->allow_private_targets() : false;
    po.metric_kind = [this](std::string_view metric) { return ctx_.KindOf(metric); };
    JOULE_ASSIGN_OR_RETURN(alert::Rule rule, alert::ParseRule(req.body, po));
    po.metric_kind = nullptr;  // the stored rule below is read as it was made
    if (!existing) {
      // A new rule has no stored secret to keep: "<redacted>" (a rule copied from a GET) is
      // refused, as a PUT refuses it for a url it holds no secret for (found by a black-box
      // test: it was stored and the deliveries signed with that publicly known key).
      for (size_t index = 0; index < rule.channels.size(); ++index) {
        if (rule.channels[index].secret == kRedacted) {
          return Status::InvalidArgument(fmt::format(
              "channels[{}].secret is required: \"{}\" keeps a stored secret, and a new rule "
              "has none (a copy of a rule needs its own secret)",
              index, kRedacted));
        }
      }
    }
    if (existing) {
      // "<redacted>" sent back from a GET keeps the stored secret of that url.
      po.allow_private_targets = true;
      po.drop_duplicate_channels = true;
      po.clamp_durations = true;
      Result<alert::Rule> old = alert::ParseRule(existing->json, po);
      for (size_t index = 0; index < rule.channels.size(); ++index) {
        alert::Channel& c = rule.channels[index];
        if (c.secret != kRedacted) continue;
        bool found = false;
        for (size_t i = 0; old.ok() && i < old->channels.size() && !found; ++i) {
          if (old->channels[i].url == c.url) {
            c.secret = old->channels[i].secret;
            found = true;
          }
        }
        if (!found) {
          // Named by index, as ParseRule names channel fields (found by a black-box test:
          // "channels[].secret" did not say which channel).
          return Status::InvalidArgument(fmt::format(
              "channels[{}].secret is required: \"{}\" keeps the stored secret only of a "
              "channel with the same url",
              index, kRedacted));
        }
      }
    }
    if (caller.kind == Caller::Kind::kOwner) {
      // Rule ids are one namespace for every owner: a 409 for an id an owner key chose
      // would tell it that another owner holds that id (found by a black-box test). So an
      // owner key's rules get server-assigned ids, and a chosen id is refused before any
      // lookup — the same answer whether or not it exists. (A PUT's id is the path's.)
      if (!existing && !rule.id.empty()) {
        return Status::InvalidArgument(
            "id: an owner key cannot choose a rule id (ids are shared by all owners); omit it "
            "and the server assigns one");
      }
      if (!rule.owner_id.empty() && rule.owner_id != caller.owner_id) {
        return Status::PermissionDenied("an owner key manages only its own rules");
      }
      rule.owner_id = caller.owner_id;
      if (!rule.scope.owner_id.empty() && rule.scope.owner_id != caller.owner_id) {
        return Status::PermissionDenied("an owner key may scope rules only to its own owner_id");
      }
    }
    if (!rule.scope.device_id.empty()) {
      bool registered = false;
      Result<store::Device> d =
          ctx_.auth->AuthorizeDeviceRead(caller, rule.scope.device_id, &registered);
      if (!d.ok() || (caller.kind == Caller::Kind::kOwner && !registered)) {
        return Status::NotFound("no such device");
      }
      if (caller.admin() && rule.owner_id.empty()) rule.owner_id = d->owner_id;
    }
    if (caller.admin() && rule.owner_id.empty()) rule.owner_id = rule.scope.owner_id;
    return rule;
  }

  ApiContext& ctx_;
};

}  // namespace

void AddRuleRoutes(net::Router& router, ApiContext& ctx) {
  auto routes = std::make_shared<RuleRoutes>(ctx);
  router.Add("POST", "/v1/rules", MemberHandler(routes, &RuleRoutes::Create),
             TokenRoute(ctx, kMaxRuleBytes));
  router.Add("GET", "/v1/rules", MemberHandler(routes, &RuleRoutes::List), TokenRoute(ctx));
  router.Add("GET", "/v1/rules/{id}", MemberHandler(routes, &RuleRoutes::Get), TokenRoute(ctx));
  router.Add("PUT", "/v1/rules/{id}", MemberHandler(routes, &RuleRoutes::Put),
             TokenRoute(ctx, kMaxRuleBytes));
  router.Add("DELETE", "/v1/rules/{id}", MemberHandler(routes, &RuleRoutes::Delete),
             TokenRoute(ctx));
}

}  // namespace joule::api

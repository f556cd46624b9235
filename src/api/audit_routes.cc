// GET /v1/admin/audit?from=&to=&action=&actor=&target_id=&limit=&cursor= (admin only):
// the audit log's entries, oldest first, as {"entries": [...], "next_cursor"}.
#include <cstdint>
#include <string>

#include "api/api_context.h"
#include "api/audit.h"
#include "api/error_response.h"
#include "api/query_params.h"
#include "api/routes.h"
#include "api/token_route.h"
#include "common/json_writer.h"
#include "net/router.h"
#include "store/audit/audit_log.h"

namespace joule::api {
namespace {

constexpr size_t kDefaultLimit = 100;
constexpr size_t kMaxLimit = 1000;

Result<store::AuditQuery> QueryFrom(const net::HttpRequest& req) {
  store::AuditQuery q;
  // Rounded up to the millisecond: the same entries as by the times they show
  // (query_params.h).
  // Compared as written too: both may clamp to 2170 (WrittenTime).
  WrittenTime written_from, written_to;
  if (const std::string* v = req.Query("from")) {
    JOULE_ASSIGN_OR_RETURN(const int64_t from, ParseTimeParam("from", *v, &written_from));
    q.from_ns = CeilToMillis(from);
  }
  if (const std::string* v = req.Query("to")) {
    JOULE_ASSIGN_OR_RETURN(const int64_t to, ParseTimeParam("to", *v, &written_to));
    q.to_ns = CeilToMillis(to);
  }
  if (q.from_ns > q.to_ns || (req.Query("from") && req.Query("to") && written_from > written_to)) {
    return Status::InvalidArgument("from must not be after to");
  }
  if (const std::string* v = req.Query("action")) q.action = *v;
  if (const std::string* v = req.Query("actor")) q.actor = *v;
  if (const std::string* v = req.Query("target_id")) q.target_id = *v;
  JOULE_ASSIGN_OR_RETURN(q.limit, ParseLimit(req.Query("limit"), kDefaultLimit, kMaxLimit));
  if (q.limit == 0) return Status::InvalidArgument("limit must be at least 1");
  if (const std::string* v = req.Query("cursor"); v && !v->empty()) {
    JOULE_ASSIGN_OR_RETURN(q.after, ParseCursorNumber(*v, UINT64_MAX));
  }
  return q;
}

void HandleAudit(ApiContext& ctx, net::HttpRequest& req, net::Responder responder) {
  const Caller caller = ctx.auth->Authenticate(req);
  if (caller.kind == Caller::Kind::kNone) return responder.Send(Unauthorized(caller));
  if (!caller.admin()) {
    return responder.Send(
        ErrorFromStatus(Status::PermissionDenied("only the admin token may read the audit log")));
  }
  if (!ctx.audit) {
    return responder.Send(ErrorFromStatus(Status::Unavailable("no audit log")));
  }
  Result<store::AuditQuery> q = QueryFrom(req);
  if (!q.ok()) return responder.Send(ErrorFromStatus(q.status()));
  Result<store::AuditPage> page = ctx.audit->Query(*q);
  if (!page.ok()) return responder.Send(ErrorFromStatus(page.status()));
  JsonWriter w;
  w.BeginObject();
  w.Key("entries");
  w.BeginArray();
  for (const std::string& line : page->lines) w.Raw(line);
  w.EndArray();
  w.Key("next_cursor");
  if (page->next == 0) {
    w.Null();
  } else {
    w.String(std::to_string(page->next));
  }
  w.EndObject();
  responder.Send(net::HttpResponse::Json(200, w.Take()));
}

}  // namespace

void AddAuditRoutes(net::Router& router, ApiContext& ctx) {
  router.Add(
      "GET", "/v1/admin/audit",
      [&ctx](net::HttpRequest& req, net::Responder r) { HandleAudit(ctx, req, std::move(r)); },
      TokenRoute(ctx));
}

}  // namespace joule::api

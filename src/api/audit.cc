#include "api/audit.h"

#include <string>

#include "api/api_context.h"
#include "common/logging.h"
#include "common/metrics.h"
#include "net/http_message.h"
#include "store/audit/audit_log.h"

namespace joule::api {
namespace {

constexpr const char* kWriteErrors = "joule_audit_write_errors_total";
constexpr const char* kWriteErrorsHelp = "Audit log entries that could not be written";

std::string ActorOf(const ApiContext& ctx, const Caller& caller) {
  switch (caller.kind) {
    case Caller::Kind::kAdmin:
      return ctx.auth && ctx.auth->disabled() ? "anonymous (auth disabled)" : "admin";
    case Caller::Kind::kOwner:
      return "owner:" + caller.owner_id;
    case Caller::Kind::kDevice:
      return "device:" + caller.device_id;
    case Caller::Kind::kNone:
      break;
  }
  return "unknown";
}

}  // namespace

void RegisterAuditMetrics(MetricsRegistry* metrics) {
  if (metrics) metrics->GetCounter(kWriteErrors, kWriteErrorsHelp);
}

void RecordAudit(ApiContext& ctx, const net::HttpRequest& req, const Caller& caller,
                 std::string_view action, std::string_view target_kind, std::string_view target_id,
                 std::string details_json) {
  if (!ctx.audit) return;
  store::AuditEntry e;
  e.time_ns = ctx.clock ? ctx.clock->NowNanos() : 0;
  e.actor = ActorOf(ctx, caller);
  e.action.assign(action);
  e.target_kind.assign(target_kind);
  e.target_id.assign(target_id);
  e.remote_address = req.remote_address;
  e.details_json = std::move(details_json);
  const Status st = ctx.audit->Append(e);
  if (ctx.metrics) {
    if (st.ok()) {
      ctx.metrics
          ->GetCounter("joule_audit_entries_total", "Audit log entries written, by action",
                       {{"action", std::string(action)}})
          ->Inc();
    } else {
      ctx.metrics->GetCounter(kWriteErrors, kWriteErrorsHelp)->Inc();
    }
  }
  if (!st.ok()) {
    logging::Error("audit log write failed",
                   {{"action", std::string(action)}, {"error", st.ToString()}});
  }
}

}  // namespace joule::api

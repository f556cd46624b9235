// Records an administrative action in the audit log (store/audit/audit_log.h): who (the
// caller), what (action + target), when (the API clock), from where (peer address).
// Called by the routes after a change succeeded. A failed audit write is logged and
// counted (joule_audit_write_errors_total); the change itself has already happened.
#pragma once

#include <string>
#include <string_view>

namespace joule {
class MetricsRegistry;
}
namespace joule::net {
struct HttpRequest;
}

namespace joule::api {

struct ApiContext;
struct Caller;

// Creates joule_audit_write_errors_total at start, so that /metrics shows it as 0 (an
// alert on it sees 0, not "no data", until the first failure). Call once the audit log
// is open.
void RegisterAuditMetrics(MetricsRegistry* metrics);

void RecordAudit(ApiContext& ctx, const net::HttpRequest& req, const Caller& caller,
                 std::string_view action, std::string_view target_kind, std::string_view target_id,
                 std::string details_json = {});

}  // namespace joule::api

#include "api/token_route.h"

#include "api/api_context.h"
#include "api/auth.h"
#include "api/error_response.h"

namespace joule::api {

net::RouteOptions TokenRoute(const ApiContext& ctx, uint64_t max_body_bytes) {
  net::RouteOptions options;
  options.max_body_bytes = max_body_bytes;
  options.head_check = [&ctx](const net::HttpRequest& head) -> std::optional<net::HttpResponse> {
    const Caller caller = ctx.auth->Authenticate(head);
    if (caller.kind == Caller::Kind::kNone) return Unauthorized(caller);
    return std::nullopt;
  };
  return options;
}

}  // namespace joule::api

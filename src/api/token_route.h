// The net::RouteOptions of an API route that needs a token: its body limit, and a head
// check that answers a request without a valid token — the 401 (or the 503 when the
// metadata store cannot check it) the handler would give — before the server reads the
// body. So a client without a token cannot make the server read and hold a body on any
// API route (found by a black-box test: 4 MiB per connection before the 401). The
// handler still authenticates (a request without a body reaches it unchecked) and
// authorizes.
#pragma once

#include <cstdint>

#include "net/router.h"

namespace joule::api {

struct ApiContext;

// `ctx` must outlive the router. The token is checked as Authenticator::Authenticate
// does: the admin token, then the metadata cache, then (a cache miss) the metadata store.
net::RouteOptions TokenRoute(const ApiContext& ctx,
                             uint64_t max_body_bytes = net::RouteOptions::kSmallBodyBytes);

}  // namespace joule::api

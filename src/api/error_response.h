// The one mapping from Status to an HTTP error response
// ({"error": {"code", "message"}}, CONTRACT §3).
#pragma once

#include "common/status.h"
#include "net/http_message.h"

namespace joule::api {

struct Caller;

net::HttpResponse ErrorFromStatus(const Status& status);
net::HttpResponse Unauthorized();
// 401, or 503 unavailable + Retry-After when the caller's token could not be checked
// because the metadata store is unreachable (Caller::store_unavailable).
net::HttpResponse Unauthorized(const Caller& caller);
net::HttpResponse DeviceNotFound();

}  // namespace joule::api

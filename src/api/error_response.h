// The one mapping from Status to an HTTP error response
// ({"error": {"code", "message"}}, CONTRACT §3).
#pragma once

#include "common/status.h"
#include "net/http_message.h"

namespace joule::api {

net::HttpResponse ErrorFromStatus(const Status& status);
net::HttpResponse Unauthorized();
net::HttpResponse DeviceNotFound();

}  // namespace joule::api

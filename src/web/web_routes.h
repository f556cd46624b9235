// The dashboard's routes: GET "/" (index.html) and GET "/assets/{path*}" from the assets
// embedded into the binary (web/embedded_assets.h). The dashboard itself talks only to the
// public API (CONTRACT §3); these routes need no authentication (they carry no data).
//
// Caching: every response has a strong ETag (If-None-Match → 304). index.html is
// "no-cache" (revalidated each load, so a new binary's assets are picked up at once);
// /assets/* have content hashes in their names and are "immutable" for a year.
// Compression: a precompressed gzip copy is sent when the client accepts gzip.
#pragma once

#include <string_view>

#include "net/http_message.h"

namespace joule::net {
class Router;
}

namespace joule::web {

void AddWebRoutes(net::Router& router);

// The response for the embedded file at `path` ("/index.html", "/assets/x.js") given the
// request's headers (If-None-Match, Accept-Encoding): 200, 304, or 404 when unknown.
net::HttpResponse ServeEmbedded(std::string_view path, const net::HttpRequest& request);

}  // namespace joule::web

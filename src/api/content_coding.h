// Content codings of request bodies: Joule takes a body only as sent (`identity`, or no
// Content-Encoding). Every route that reads a body refuses any other coding (gzip,
// deflate, br, zstd, …) with 415 unsupported_media_type and `Accept-Encoding: identity`
// (RFC 9110 §15.5.16): POST /v1/telemetry from its head check and handler, the JSON routes
// through RefuseJsonBody (json_body.h). Before, a gzip body was parsed as sent and answered
// 400 (found by black-box tests: ingest in session 32, the other routes later).
#pragma once

#include <optional>
#include <string_view>

#include "net/http_message.h"

namespace joule::api {

// The first content coding the request names other than identity, or nullopt: the body is
// the bytes as sent. Content-Encoding is a comma-separated list, possibly over several
// header lines, compared case-insensitively (RFC 9110 §8.4). The view is into `req`.
std::optional<std::string_view> UnsupportedContentCoding(const net::HttpRequest& req);

// The 415 for a body in `coding`: unsupported_media_type, the message naming the coding
// (when it is a short plain token: it is the client's text) and identity, and
// `Accept-Encoding: identity`.
net::HttpResponse ContentCodingRefusal(std::string_view coding);

// ContentCodingRefusal of the request's UnsupportedContentCoding, or nullopt.
std::optional<net::HttpResponse> RefuseContentCoding(const net::HttpRequest& req);

}  // namespace joule::api

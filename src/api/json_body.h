// The checks every JSON request body of the API passes before it is parsed (devices,
// rules, replay, alert actions), with the statuses POST /v1/telemetry gives the same
// faults (found by a black-box test: these routes answered both with 400):
// - a Content-Encoding other than identity → 415 unsupported_media_type with
//   `Accept-Encoding: identity` (content_coding.h), with or without a body (before, a gzip
//   body was parsed as sent and answered 400; found by a black-box test).
// - a Content-Type other than application/json (charset, if given, UTF-8; the rules of
//   POST /v1/telemetry) → 415 unsupported_media_type. A body without a Content-Type is
//   taken as JSON, and an empty body is not checked (ack takes none).
// - a body over the route's limit → 413 payload_too_large, naming the limit.
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>

#include "common/status.h"
#include "net/http_message.h"

namespace joule::api {

// The refusal to send, or nullopt when the body may be parsed.
std::optional<net::HttpResponse> RefuseJsonBody(const net::HttpRequest& req, size_t max_bytes);

// The 400 for a body field the route does not know, worded as alert::ParseRule words it
// for rules (`unknown field "x"`, the name cut at 64 bytes): bodies are strict, so a typo
// (`{"ackd": false}`) is refused instead of taking the default.
Status UnknownField(std::string_view key);

}  // namespace joule::api

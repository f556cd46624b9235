#include "api/json_body.h"

#include <fmt/format.h>

#include <string>

#include "api/content_coding.h"
#include "ingest/telemetry_parser.h"

namespace joule::api {

std::optional<net::HttpResponse> RefuseJsonBody(const net::HttpRequest& req, size_t max_bytes) {
  if (auto refused = RefuseContentCoding(req)) return refused;
  if (req.body.empty()) return std::nullopt;
  if (const std::string* ct = req.Header("content-type")) {
    ingest::BodyFormat format;
    if (!ingest::FormatFromContentType(*ct, &format) || format != ingest::BodyFormat::kJson) {
      return net::HttpResponse::Error(415, "unsupported_media_type",
                                      "Content-Type must be application/json");
    }
  }
  if (req.body.size() > max_bytes) {
    return net::HttpResponse::Error(
        413, "payload_too_large", fmt::format("request body must be at most {} bytes", max_bytes));
  }
  return std::nullopt;
}

Status UnknownField(std::string_view key) {
  return Status::InvalidArgument(fmt::format("unknown field \"{}\"", key.substr(0, 64)));
}

}  // namespace joule::api

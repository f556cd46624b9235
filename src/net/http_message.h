// HttpRequest and HttpResponse: the plain data that handlers see. No Asio or Beast here,
// so every file that writes a route can include this cheaply.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace joule::net {

// Header or query pairs, in the order received.
using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

struct HttpRequest {
  std::string method;   // "GET", "POST", ... exactly as sent
  std::string path;     // percent-decoded path, without the query
  std::string target;   // raw request target, e.g. "/v1/devices/plug%2D42?windows=60"
  HttpHeaders query;    // percent-decoded ('+' is a space), in order
  HttpHeaders headers;  // names lower-cased, values as sent
  std::string body;
  std::map<std::string, std::string> path_params;  // filled by the Router, e.g. {"id": "plug-42"}
  // The matched pattern, e.g. "/v1/devices/{id}" (the Router's own copy: valid while the
  // Router lives); empty if none matched.
  std::string_view route;
  std::string remote_address;  // peer IP address, without the port

  // The first header with this (lower-case) name, or nullptr.
  const std::string* Header(std::string_view lower_name) const;
  // The first query parameter with this name, or nullptr.
  const std::string* Query(std::string_view name) const;
  // The path parameter captured by the route, or nullptr.
  const std::string* PathParam(std::string_view name) const;
};

struct HttpResponse {
  int status = 200;
  // A literal or other text of static storage duration: it is written after the handler
  // returned. (Not a std::string: "application/json" is one byte over the short-string
  // buffer, so every response allocated for it.) Empty: no Content-Type.
  std::string_view content_type = "application/json";
  std::string body;
  HttpHeaders headers;  // extra headers (Retry-After, Location, ...)
  // When set, sent after `body` as the rest of the body: bytes shared with a cache, written
  // without a copy (the server keeps this reference until they are sent).
  std::shared_ptr<const std::string> shared_body;

  size_t body_size() const { return body.size() + (shared_body ? shared_body->size() : 0); }

  static HttpResponse Json(int status, std::string body);
  static HttpResponse Text(int status, std::string body,
                           std::string_view content_type = "text/plain; charset=utf-8");
  // {"error":{"code":<code>,"message":<message>}}
  static HttpResponse Error(int status, std::string_view code, std::string_view message);
};

}  // namespace joule::net

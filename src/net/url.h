// Decoding of request targets (RFC 3986 percent-encoding, HTML form queries) and of
// "host:port" listen addresses. Pure functions, thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"
#include "net/http_message.h"

namespace joule::net {

// Decodes %XX escapes (and '+' as a space when `plus_is_space`, as in query strings).
// Returns false on a malformed escape ("%4", "%zz"); *out is then unspecified.
bool PercentDecode(std::string_view in, bool plus_is_space, std::string* out);

// Splits "a=1&b=x%20y&c" into decoded pairs {"a","1"}, {"b","x y"}, {"c",""}; empty
// segments are skipped. Returns false if any escape is malformed.
bool ParseQuery(std::string_view query, HttpHeaders* out);

// The origin form (path and query) of a request target: `target` itself when it starts
// with '/'; for the absolute form ("http://host:port/path?q", RFC 9112 §3.2.2, what a
// client talking to a proxy sends) the part after the authority ("/" when it is empty),
// and `*authority` (if given) the host and port. False for anything else ("*", "host:1").
bool OriginForm(std::string_view target, std::string* origin, std::string* authority = nullptr);

struct HostPort {
  std::string host;  // without brackets for IPv6
  uint16_t port = 0;
};
// "127.0.0.1:8080", "[::1]:0", ":8080" (host empty = all interfaces).
Result<HostPort> ParseHostPort(std::string_view host_port);

}  // namespace joule::net

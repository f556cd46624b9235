// The Date header field of every response: RFC 9110 §6.6.1 — an origin server with a clock
// MUST send one in its 2xx, 3xx and 4xx answers — in the IMF-fixdate form,
// "Date: Sun, 06 Nov 1994 08:49:37 GMT" (found by a black-box test: no response had one).
//
// The realtime API answers in tens of microseconds, so the line is formatted once per
// second per thread and kept: a response costs a coarse clock read (vDSO, no syscall) and
// a 37-byte append. No locale is involved (day and month names are fixed English).
#pragma once

#include <cstdint>
#include <string_view>

namespace joule::net {

// "Date: <IMF-fixdate of the current second>\r\n". Thread-safe: each thread keeps its own
// line; the view is valid until the same thread's next call.
std::string_view DateHeaderLine();

// The IMF-fixdate of `unix_seconds` (29 characters), e.g. "Sun, 06 Nov 1994 08:49:37 GMT".
// REQUIRES: out has room for 29 characters. Years 1970–9999.
void FormatImfFixdate(int64_t unix_seconds, char* out);

}  // namespace joule::net

// Blocking TCP client sockets for the CLI's clients (HttpClient, MqttPublisher): connect to
// host:port (every address getaddrinfo gives, in order) and send a whole buffer.
#pragma once

#include <string>
#include <string_view>

namespace joule::app {

// A connected socket with TCP_NODELAY (and, when io_timeout_s > 0, send and receive
// timeouts of that many seconds), or -1 with *error set.
int ConnectTcp(const std::string& host, const std::string& port, int io_timeout_s,
               std::string* error);

// Sends all of `bytes` (no SIGPIPE). false with *error set when the peer closed or failed.
bool SendAllBytes(int fd, std::string_view bytes, std::string* error);

}  // namespace joule::app

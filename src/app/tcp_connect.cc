#include "app/tcp_connect.h"

#include <fmt/format.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace joule::app {

int ConnectTcp(const std::string& host, const std::string& port, int io_timeout_s,
               std::string* error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res); rc != 0) {
    *error = fmt::format("cannot resolve {}: {}", host, gai_strerror(rc));
    return -1;
  }
  *error = "no address";
  int connected = -1;
  for (addrinfo* a = res; a; a = a->ai_next) {
    int fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd < 0) continue;
    if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      if (io_timeout_s > 0) {
        timeval tv{io_timeout_s, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
      }
      connected = fd;
      break;
    }
    *error = std::strerror(errno);
    close(fd);
  }
  freeaddrinfo(res);
  return connected;
}

bool SendAllBytes(int fd, std::string_view bytes, std::string* error) {
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = send(fd, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n <= 0) {
      *error = n < 0 ? std::strerror(errno) : "closed";
      return false;
    }
    off += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace joule::app

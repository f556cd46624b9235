#include "alert/http_client.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>

#include "alert/target_guard.h"

namespace joule::alert {
namespace {

int64_t MonoNow() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int RemainingMs(int64_t deadline) {
  int64_t left = deadline - MonoNow();
  if (left <= 0) return 0;
  return static_cast<int>(std::max<int64_t>(1, left / 1'000'000));
}

bool WaitFd(int fd, short events, int64_t deadline) {
  while (true) {
    int ms = RemainingMs(deadline);
    if (ms <= 0) return false;
    pollfd p{fd, events, 0};
    int r = ::poll(&p, 1, ms);
    if (r > 0) return true;
    if (r == 0) return false;
    if (errno != EINTR) return false;
  }
}

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

std::string OpenSslError() {
  unsigned long e = ERR_get_error();
  char msg[256] = "unknown error";
  if (e) ERR_error_string_n(e, msg, sizeof msg);
  ERR_clear_error();
  return msg;
}

// One client context per CA file ("" = system trust store only); never freed.
Result<SSL_CTX*> ClientContext(const std::string& ca_file) {
  static std::mutex mu;
  static std::map<std::string, SSL_CTX*> contexts;
  std::lock_guard lock(mu);
  auto it = contexts.find(ca_file);
  if (it != contexts.end()) return it->second;
  SSL_CTX* c = SSL_CTX_new(TLS_client_method());
  if (!c) return Status::Internal("SSL_CTX_new: " + OpenSslError());
  SSL_CTX_set_default_verify_paths(c);
  if (!ca_file.empty() && SSL_CTX_load_verify_locations(c, ca_file.c_str(), nullptr) != 1) {
    std::string err = OpenSslError();
    SSL_CTX_free(c);
    return Status::InvalidArgument(
        fmt::format("alerts.webhook_ca_file {}: cannot load PEM certificates: {}", ca_file, err));
  }
  SSL_CTX_set_verify(c, SSL_VERIFY_PEER, nullptr);
  SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
  contexts.emplace(ca_file, c);
  return c;
}

bool IsIpLiteral(const std::string& host) {
  in6_addr a6;
  in_addr a4;
  return inet_pton(AF_INET, host.c_str(), &a4) == 1 || inet_pton(AF_INET6, host.c_str(), &a6) == 1;
}

// A byte stream over a non-blocking socket, optionally TLS, with a deadline.
class Conn {
 public:
  Conn(int fd, int64_t deadline) : fd_(fd), deadline_(deadline) {}
  ~Conn() {
    if (ssl_) SSL_free(ssl_);
  }
  Status StartTls(SSL_CTX* ctx, const std::string& host) {
    ssl_ = SSL_new(ctx);
    SSL_set_fd(ssl_, fd_);
    // SNI carries host names only (RFC 6066); an IP literal is still verified against
    // the certificate's IP SANs by SSL_set1_host.
    if (!IsIpLiteral(host)) SSL_set_tlsext_host_name(ssl_, host.c_str());
    SSL_set1_host(ssl_, host.c_str());
    while (true) {
      int r = SSL_connect(ssl_);
      if (r == 1) return Status::Ok();
      JOULE_RETURN_IF_ERROR(WaitSsl(r, "TLS handshake"));
    }
  }
  Status Write(const std::string& data) {
    size_t off = 0;
    while (off < data.size()) {
      if (ssl_) {
        int r = SSL_write(ssl_, data.data() + off, static_cast<int>(data.size() - off));
        if (r > 0) {
          off += static_cast<size_t>(r);
          continue;
        }
        JOULE_RETURN_IF_ERROR(WaitSsl(r, "write"));
      } else {
        ssize_t n = ::send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL);
        if (n > 0) {
          off += static_cast<size_t>(n);
        } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
          if (!WaitFd(fd_, POLLOUT, deadline_)) return Status::Unavailable("timeout writing");
        } else {
          return Status::Unavailable(fmt::format("write: {}", std::strerror(errno)));
        }
      }
    }
    return Status::Ok();
  }
  // Appends what is available; false at end of stream.
  Result<bool> Read(std::string* out) {
    char buf[8192];
    while (true) {
      if (ssl_) {
        int r = SSL_read(ssl_, buf, sizeof buf);
        if (r > 0) {
          out->append(buf, static_cast<size_t>(r));
          return true;
        }
        int err = SSL_get_error(ssl_, r);
        if (err == SSL_ERROR_ZERO_RETURN || (err == SSL_ERROR_SYSCALL && r == 0)) return false;
        JOULE_RETURN_IF_ERROR(WaitSsl(r, "read"));
      } else {
        ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
        if (n > 0) {
          out->append(buf, static_cast<size_t>(n));
          return true;
        }
        if (n == 0) return false;
        if (errno == EAGAIN || errno == EINTR) {
          if (!WaitFd(fd_, POLLIN, deadline_)) return Status::Unavailable("timeout reading");
          continue;
        }
        return Status::Unavailable(fmt::format("read: {}", std::strerror(errno)));
      }
    }
  }

 private:
  Status WaitSsl(int r, const char* what) {
    int err = SSL_get_error(ssl_, r);
    short ev = err == SSL_ERROR_WANT_READ ? POLLIN : err == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
    if (ev == 0) {
      std::string msg = OpenSslError();
      long verify = SSL_get_verify_result(ssl_);
      if (verify != X509_V_OK) {
        msg = fmt::format("certificate verify failed: {}", X509_verify_cert_error_string(verify));
      }
      return Status::Unavailable(fmt::format("{}: {}", what, msg));
    }
    if (!WaitFd(fd_, ev, deadline_)) return Status::Unavailable(fmt::format("timeout: {}", what));
    return Status::Ok();
  }

  int fd_;
  int64_t deadline_;
  SSL* ssl_ = nullptr;
};

}  // namespace

Result<HttpPostResult> HttpPost(const std::string& url,
                                const std::vector<std::pair<std::string, std::string>>& headers,
                                const std::string& body, int64_t timeout_ns,
                                bool allow_private_targets, const std::string& ca_file) {
  const int64_t deadline = MonoNow() + timeout_ns;
  JOULE_ASSIGN_OR_RETURN(WebhookUrl u, ParseWebhookUrl(url));
  SSL_CTX* tls = nullptr;
  if (u.tls) {
    JOULE_ASSIGN_OR_RETURN(tls, ClientContext(ca_file));
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int gai = ::getaddrinfo(u.host.c_str(), std::to_string(u.port).c_str(), &hints, &res);
  if (gai != 0)
    return Status::Unavailable(fmt::format("resolve {}: {}", u.host, gai_strerror(gai)));
  std::unique_ptr<addrinfo, void (*)(addrinfo*)> guard(res, freeaddrinfo);
  Fd sock;
  std::string last_error = "no address";
  bool refused_any = false;
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    if (!allow_private_targets && IsNonPublicAddress(ai->ai_addr)) {
      refused_any = true;
      continue;
    }
    int fd =
        ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) continue;
    int r = ::connect(fd, ai->ai_addr, ai->ai_addrlen);
    if (r != 0 && errno == EINPROGRESS) {
      if (WaitFd(fd, POLLOUT, deadline)) {
        int err = 0;
        socklen_t len = sizeof err;
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        r = err == 0 ? 0 : -1;
        errno = err;
        if (err) last_error = std::strerror(err);
      } else {
        last_error = "connect timeout";
        r = -1;
      }
    } else if (r != 0) {
      last_error = std::strerror(errno);
    }
    if (r == 0) {
      sock.fd = fd;
      break;
    }
    ::close(fd);
  }
  if (sock.fd < 0) {
    if (refused_any && last_error == "no address") {
      return Status::PermissionDenied(fmt::format(
          "{} resolves to a loopback, private or link-local address (alerts.allow_private_targets "
          "is false)",
          u.host));
    }
    return Status::Unavailable(fmt::format("connect {}:{}: {}", u.host, u.port, last_error));
  }
  Conn conn(sock.fd, deadline);
  if (u.tls) JOULE_RETURN_IF_ERROR(conn.StartTls(tls, u.host));
  std::string host_header = u.host.find(':') != std::string::npos ? "[" + u.host + "]" : u.host;
  if ((u.tls && u.port != 443) || (!u.tls && u.port != 80))
    host_header += fmt::format(":{}", u.port);
  std::string req = fmt::format(
      "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: joule-webhooks/1\r\nContent-Type: "
      "application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
      u.target, host_header, body.size());
  for (const auto& [k, v] : headers) req += k + ": " + v + "\r\n";
  req += "\r\n";
  req += body;
  JOULE_RETURN_IF_ERROR(conn.Write(req));
  std::string resp;
  size_t header_end = std::string::npos;
  while (header_end == std::string::npos) {
    JOULE_ASSIGN_OR_RETURN(bool more, conn.Read(&resp));
    header_end = resp.find("\r\n\r\n");
    if (!more || resp.size() > 64 * 1024) break;
  }
  if (resp.rfind("HTTP/1.", 0) != 0 || resp.size() < 12) {
    return Status::Unavailable("no HTTP response");
  }
  HttpPostResult out;
  out.status = std::atoi(resp.c_str() + 9);
  if (header_end != std::string::npos) out.body = resp.substr(header_end + 4, 1024);
  return out;
}

Status CheckWebhookCaFile(const std::string& ca_file) {
  if (ca_file.empty()) return Status::Ok();
  return ClientContext(ca_file).status();
}

}  // namespace joule::alert

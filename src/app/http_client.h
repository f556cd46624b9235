// HttpClient: a minimal blocking HTTP/1.1 client with keep-alive (Content-Length bodies
// only), enough for the simulator and `joule replay --server`; over TLS when given a
// ClientTlsTrust (client_tls.h: `joule replay` and a server with TLS on). Not thread-safe.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "app/client_tls.h"

namespace joule::app {

class HttpClient {
 public:
  // `tls` set: every connection is TLS, its peer checked as ClientTlsTrust says.
  HttpClient(std::string host, std::string port, std::optional<ClientTlsTrust> tls = {});
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Returns the status code, or -1 on a connection error (one reconnect is tried).
  // `token` (may be empty) goes in "Authorization: Bearer"; `response_body` may be null.
  int Request(const std::string& method, const std::string& path, const std::string& content_type,
              const std::string& body, const std::string& token, std::string* response_body);
  int Post(const std::string& path, const std::string& content_type, const std::string& body,
           const std::string& token, std::string* response_body) {
    return Request("POST", path, content_type, body, token, response_body);
  }
  int Get(const std::string& path, const std::string& token, std::string* response_body) {
    return Request("GET", path, "", "", token, response_body);
  }
  // Why the last request returned -1 (e.g. "Connection refused", or why the server's TLS
  // certificate is not trusted).
  const std::string& last_error() const { return last_error_; }

 private:
  bool Connect();
  void Close();
  bool Fill();
  int ReadResponse(std::string* body);

  std::string host_, port_;
  std::optional<ClientTlsTrust> tls_trust_;
  int fd_ = -1;
  std::unique_ptr<ClientTls> tls_;  // this connection's session, with tls_trust_
  std::string buffer_;
  std::string last_error_;
};

}  // namespace joule::app

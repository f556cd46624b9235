// HttpClient: a minimal blocking HTTP/1.1 client with keep-alive (Content-Length bodies
// only), enough for the simulator and `joule replay --server`. Not thread-safe.
#pragma once

#include <string>

namespace joule::app {

class HttpClient {
 public:
  HttpClient(std::string host, std::string port);
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
  // Why the last request returned -1 (e.g. "Connection refused").
  const std::string& last_error() const { return last_error_; }

 private:
  bool Connect();
  void Close();
  bool Fill();
  int ReadResponse(std::string* body);

  std::string host_, port_;
  int fd_ = -1;
  std::string buffer_;
  std::string last_error_;
};

}  // namespace joule::app

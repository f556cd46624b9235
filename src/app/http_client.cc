#include "app/http_client.h"

#include <fmt/format.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "app/tcp_connect.h"

namespace joule::app {

HttpClient::HttpClient(std::string host, std::string port, std::optional<ClientTlsTrust> tls)
    : host_(std::move(host)), port_(std::move(port)), tls_trust_(std::move(tls)) {}

HttpClient::~HttpClient() { Close(); }

int HttpClient::Request(const std::string& method, const std::string& path,
                        const std::string& content_type, const std::string& body,
                        const std::string& token, std::string* response_body) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (fd_ < 0 && !Connect()) return -1;
    std::string req = fmt::format("{} {} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n", method,
                                  path, host_, body.size());
    if (!content_type.empty()) req += fmt::format("Content-Type: {}\r\n", content_type);
    if (!token.empty()) req += fmt::format("Authorization: Bearer {}\r\n", token);
    req += "\r\n";
    req += body;
    if (std::string error; !(tls_ ? tls_->Send(req, &error) : SendAllBytes(fd_, req, &error))) {
      last_error_ = "send failed: " + error;
      Close();
      continue;
    }
    int status = ReadResponse(response_body);
    if (status < 0) {
      last_error_ = "the connection closed before a response";
      Close();
      continue;
    }
    return status;
  }
  return -1;
}

bool HttpClient::Connect() {
  fd_ = ConnectTcp(host_, port_, /*io_timeout_s=*/0, &last_error_);
  buffer_.clear();
  if (fd_ < 0 || !tls_trust_) return fd_ >= 0;
  Result<std::unique_ptr<ClientTls>> tls = ClientTls::Connect(fd_, host_, *tls_trust_);
  if (!tls.ok()) {
    last_error_ = tls.status().message();
    Close();
    return false;
  }
  tls_ = std::move(*tls);
  return true;
}

void HttpClient::Close() {
  tls_.reset();
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

bool HttpClient::Fill() {
  char buf[16384];
  if (tls_) {
    const size_t n = tls_->Receive(buf, sizeof buf);
    if (n == 0) return false;
    buffer_.append(buf, n);
    return true;
  }
  ssize_t n = recv(fd_, buf, sizeof buf, 0);
  if (n <= 0) return false;
  buffer_.append(buf, static_cast<size_t>(n));
  return true;
}

int HttpClient::ReadResponse(std::string* body) {
  size_t header_end;
  while ((header_end = buffer_.find("\r\n\r\n")) == std::string::npos) {
    if (!Fill()) return -1;
  }
  std::string headers = buffer_.substr(0, header_end);
  int status = -1;
  if (headers.size() > 12) status = std::atoi(headers.c_str() + 9);
  size_t length = 0;
  for (size_t pos = 0; pos < headers.size();) {
    size_t eol = headers.find("\r\n", pos);
    if (eol == std::string::npos) eol = headers.size();
    std::string line = headers.substr(pos, eol - pos);
    for (auto& ch : line) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    if (line.rfind("content-length:", 0) == 0) {
      length = std::strtoull(line.c_str() + 15, nullptr, 10);
    }
    pos = eol + 2;
  }
  while (buffer_.size() < header_end + 4 + length) {
    if (!Fill()) return -1;
  }
  if (body) *body = buffer_.substr(header_end + 4, length);
  buffer_.erase(0, header_end + 4 + length);
  return status;
}

}  // namespace joule::app

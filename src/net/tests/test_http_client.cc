#include "net/tests/test_http_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

namespace joule::net::testing {

namespace {

std::string Lower(std::string s) {
  for (char& c : s) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return s;
}

int MillisUntil(std::chrono::steady_clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  return left.count() < 0 ? 0 : static_cast<int>(left.count());
}

}  // namespace

const std::string* ParsedResponse::Header(std::string_view lower_name) const {
  for (const auto& [name, value] : headers) {
    if (name == lower_name) return &value;
  }
  return nullptr;
}

std::unique_ptr<TestHttpClient> TestHttpClient::Connect(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return nullptr;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return nullptr;
  }
  return std::unique_ptr<TestHttpClient>(new TestHttpClient(fd));
}

TestHttpClient::~TestHttpClient() { Close(); }

void TestHttpClient::Close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool TestHttpClient::Send(std::string_view data) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!data.empty()) {
    pollfd p{fd_, POLLOUT, 0};
    if (::poll(&p, 1, MillisUntil(deadline)) <= 0) return false;
    ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

int TestHttpClient::Fill(std::chrono::steady_clock::time_point deadline) {
  while (true) {
    pollfd p{fd_, POLLIN, 0};
    int r = ::poll(&p, 1, MillisUntil(deadline));
    if (r == 0) return -1;
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    char buf[16384];
    ssize_t n = ::recv(fd_, buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0) {
      buffer_.append(buf, static_cast<size_t>(n));
      return 1;
    }
    if (n == 0) return 0;
    if (errno == EAGAIN || errno == EINTR) continue;
    return -1;
  }
}

std::optional<std::string> TestHttpClient::ReadUntil(std::string_view needle,
                                                     std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    size_t at = buffer_.find(needle);
    if (at != std::string::npos) {
      std::string out = buffer_.substr(0, at + needle.size());
      buffer_.erase(0, at + needle.size());
      return out;
    }
    if (Fill(deadline) <= 0) return std::nullopt;
  }
}

std::optional<ParsedResponse> TestHttpClient::ReadResponse(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::optional<std::string> head = ReadUntil("\r\n\r\n", timeout);
  if (!head) return std::nullopt;
  ParsedResponse r;
  // "HTTP/1.1 200 OK\r\n"
  size_t line_end = head->find("\r\n");
  std::string status_line = head->substr(0, line_end);
  if (status_line.rfind("HTTP/1.", 0) != 0 || status_line.size() < 12) return std::nullopt;
  r.status = std::atoi(status_line.c_str() + 9);
  size_t pos = line_end + 2;
  while (pos < head->size()) {
    size_t end = head->find("\r\n", pos);
    if (end == pos) break;
    std::string line = head->substr(pos, end - pos);
    size_t colon = line.find(':');
    if (colon != std::string::npos) {
      size_t v = line.find_first_not_of(' ', colon + 1);
      r.headers.emplace_back(Lower(line.substr(0, colon)),
                             v == std::string::npos ? "" : line.substr(v));
    }
    pos = end + 2;
  }
  if (r.status >= 100 && r.status < 200) return r;  // interim response: no body
  if (const std::string* cl = r.Header("content-length")) {
    size_t want = std::strtoull(cl->c_str(), nullptr, 10);
    while (buffer_.size() < want) {
      if (Fill(deadline) <= 0) return std::nullopt;
    }
    r.body = buffer_.substr(0, want);
    buffer_.erase(0, want);
    return r;
  }
  while (true) {
    int f = Fill(deadline);
    if (f == 0) break;
    if (f < 0) return std::nullopt;
  }
  r.body = std::move(buffer_);
  buffer_.clear();
  return r;
}

bool TestHttpClient::WaitForClose(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    pollfd p{fd_, POLLIN, 0};
    int r = ::poll(&p, 1, MillisUntil(deadline));
    if (r == 0) return false;
    if (r < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    char buf[16384];
    ssize_t n = ::recv(fd_, buf, sizeof(buf), MSG_DONTWAIT);
    if (n == 0) return true;
    if (n < 0 && errno != EAGAIN && errno != EINTR) return true;  // reset
  }
}

std::optional<ParsedResponse> Fetch(uint16_t port, std::string_view request) {
  auto client = TestHttpClient::Connect(port);
  if (!client || !client->Send(request)) return std::nullopt;
  return client->ReadResponse();
}

}  // namespace joule::net::testing

// A small blocking HTTP client on raw POSIX sockets, for tests of the server: it can send
// anything (malformed or partial requests) and read exactly what comes back. Every read
// has a deadline, so a broken server fails a test instead of hanging it.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace joule::net::testing {

struct ParsedResponse {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;
  const std::string* Header(std::string_view lower_name) const;
};

class TestHttpClient {
 public:
  // Connects to 127.0.0.1:port; nullptr if the connection is refused.
  static std::unique_ptr<TestHttpClient> Connect(uint16_t port);
  ~TestHttpClient();

  // False if the peer reset the connection or the send timed out.
  bool Send(std::string_view data);
  // Reads one response (status line, headers, and a Content-Length body; without one, the
  // body runs to EOF). nullopt on timeout, error, or EOF before a complete response.
  std::optional<ParsedResponse> ReadResponse(
      std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // Reads until `needle` has arrived; returns everything up to and including it, or
  // nullopt on timeout/EOF. Bytes after it stay buffered for the next read.
  std::optional<std::string> ReadUntil(std::string_view needle,
                                       std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // True once the server closed the connection (EOF or reset) within `timeout`; data
  // arriving meanwhile is discarded.
  bool WaitForClose(std::chrono::milliseconds timeout = std::chrono::seconds(5));
  void Close();

 private:
  explicit TestHttpClient(int fd) : fd_(fd) {}
  // Appends what arrives before the deadline to buffer_; 1 = data, 0 = EOF, -1 = error/timeout.
  int Fill(std::chrono::steady_clock::time_point deadline);

  int fd_;
  std::string buffer_;
};

// Connects, sends `request`, reads one response.
std::optional<ParsedResponse> Fetch(uint16_t port, std::string_view request);

}  // namespace joule::net::testing

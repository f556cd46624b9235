#include "app/simulator.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <random>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/json_writer.h"
#include "common/time_format.h"

namespace joule::app {
namespace {

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop.store(true); }

// A minimal blocking HTTP/1.1 client with keep-alive, enough for the simulator.
class BlockingHttpClient {
 public:
  BlockingHttpClient(std::string host, std::string port) : host_(host), port_(port) {}
  ~BlockingHttpClient() { Close(); }

  // Returns the status code, or -1 on a connection error.
  int Post(const std::string& path, const std::string& content_type, const std::string& body,
           const std::string& token, std::string* response_body) {
    for (int attempt = 0; attempt < 2; ++attempt) {
      if (fd_ < 0 && !Connect()) return -1;
      std::string req = fmt::format(
          "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n", path,
          host_, content_type, body.size());
      if (!token.empty()) req += fmt::format("Authorization: Bearer {}\r\n", token);
      req += "\r\n";
      req += body;
      if (!SendAll(req)) {
        Close();
        continue;
      }
      int status = ReadResponse(response_body);
      if (status < 0) {
        Close();
        continue;
      }
      return status;
    }
    return -1;
  }

 private:
  bool Connect() {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    if (getaddrinfo(host_.c_str(), port_.c_str(), &hints, &res) != 0) return false;
    for (addrinfo* a = res; a; a = a->ai_next) {
      int fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
      if (fd < 0) continue;
      if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fd_ = fd;
        break;
      }
      close(fd);
    }
    freeaddrinfo(res);
    buffer_.clear();
    return fd_ >= 0;
  }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }
  bool SendAll(const std::string& s) {
    size_t off = 0;
    while (off < s.size()) {
      ssize_t n = send(fd_, s.data() + off, s.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }
  bool Fill() {
    char buf[16384];
    ssize_t n = recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) return false;
    buffer_.append(buf, static_cast<size_t>(n));
    return true;
  }
  int ReadResponse(std::string* body) {
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
      if (line.rfind("content-length:", 0) == 0) length = std::strtoull(line.c_str() + 15, nullptr, 10);
      pos = eol + 2;
    }
    while (buffer_.size() < header_end + 4 + length) {
      if (!Fill()) return -1;
    }
    if (body) *body = buffer_.substr(header_end + 4, length);
    buffer_.erase(0, header_end + 4 + length);
    return status;
  }

  std::string host_, port_;
  int fd_ = -1;
  std::string buffer_;
};

struct SimDevice {
  std::string id;
  double base_w;
  double amplitude_w;
  double period_s;
  double phase;
  double energy_wh;
  int64_t last_ns = 0;
  double last_power = 0;
};

}  // namespace

int RunSimulator(const SimulatorOptions& o) {
  std::string rest = o.url;
  if (rest.rfind("http://", 0) == 0) rest = rest.substr(7);
  size_t slash = rest.find('/');
  if (slash != std::string::npos) rest = rest.substr(0, slash);
  size_t colon = rest.rfind(':');
  std::string host = colon == std::string::npos ? rest : rest.substr(0, colon);
  std::string port = colon == std::string::npos ? "80" : rest.substr(colon + 1);
  BlockingHttpClient client(host, port);

  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  std::mt19937_64 rng(o.seed);
  std::uniform_real_distribution<double> uni(0, 1);
  std::normal_distribution<double> noise(0, 1);
  std::vector<SimDevice> devices;
  for (int i = 0; i < o.devices; ++i) {
    SimDevice d;
    d.id = fmt::format("{}-{:04d}", o.device_prefix, i);
    d.base_w = 20 + 400 * uni(rng);
    d.amplitude_w = d.base_w * (0.2 + 0.6 * uni(rng));
    d.period_s = 60 + 600 * uni(rng);
    d.phase = 6.283 * uni(rng);
    d.energy_wh = 1000 + 50000 * uni(rng);
    devices.push_back(d);
  }

  const Clock* clock = SystemClock::Default();
  const int64_t start = clock->NowNanos();
  const int64_t tick_ns = static_cast<int64_t>(1e9 / o.rate_hz);
  uint64_t sent = 0, accepted = 0, failed = 0;
  int64_t next = start;
  int64_t last_report = start;
  while (!g_stop.load()) {
    int64_t now = clock->NowNanos();
    if (o.duration_ns > 0 && now - start >= o.duration_ns) break;
    if (now < next) {
      std::this_thread::sleep_for(std::chrono::nanoseconds(std::min<int64_t>(next - now, 100'000'000)));
      continue;
    }
    next += tick_ns;
    JsonWriter w;
    int in_batch = 0;
    w.BeginArray();
    auto flush = [&] {
      if (in_batch == 0) return;
      w.EndArray();
      std::string response;
      int status = client.Post("/v1/telemetry", "application/json", w.str(), o.token, &response);
      sent += in_batch;
      if (status == 202) {
        accepted += in_batch;
      } else {
        failed += in_batch;
        if (failed == static_cast<uint64_t>(in_batch)) {
          fmt::print(stderr, "simulate: server answered {}: {}\n", status, response);
        }
      }
      w = JsonWriter();
      w.BeginArray();
      in_batch = 0;
    };
    for (auto& d : devices) {
      double t = static_cast<double>(now) / 1e9;
      double p = std::max(0.0, d.base_w + d.amplitude_w * std::sin(6.283 * t / d.period_s + d.phase) +
                                   0.02 * d.base_w * noise(rng));
      if (d.last_ns > 0) d.energy_wh += (p + d.last_power) / 2 * (now - d.last_ns) / 3.6e12;
      d.last_ns = now;
      d.last_power = p;
      w.BeginObject();
      w.Key("device_id");
      w.String(d.id);
      w.Key("timestamp");
      w.String(FormatRfc3339Millis(now));
      w.Key("metrics");
      w.BeginObject();
      w.Key("power_w");
      w.Double(std::round(p * 100) / 100);
      w.Key("voltage_v");
      w.Double(std::round((230 + 2 * noise(rng)) * 10) / 10);
      w.Key("energy_wh");
      w.Double(std::round(d.energy_wh * 1000) / 1000);
      w.EndObject();
      w.EndObject();
      if (++in_batch >= o.batch) flush();
    }
    flush();
    if (now - last_report >= 10 * kNanosPerSecond) {
      fmt::print(stderr, "simulate: {} events sent, {} accepted, {} failed\n", sent, accepted,
                 failed);
      last_report = now;
    }
  }
  fmt::print(stderr, "simulate: done: {} events sent, {} accepted, {} failed\n", sent, accepted,
             failed);
  return failed == 0 || accepted > 0 ? 0 : 1;
}

}  // namespace joule::app

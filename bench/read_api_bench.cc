// End-to-end read latency through HTTP (issue 4): a real HttpServer with the history and
// realtime routes over a RocksDB history store holding 24 h of 1m records for one device
// (4 metrics), queried by a keep-alive client on loopback. Reports p50/p99 per request.
//   build/ci/bench/read_api_bench  (docs/benchmarks/HISTORY.md: how it was run and what limits it)
#include <arpa/inet.h>
#include <benchmark/benchmark.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "api/api_context.h"
#include "api/auth.h"
#include "api/record_json_cache.h"
#include "api/routes.h"
#include "common/clock.h"
#include "common/metrics.h"
#include "common/time_format.h"
#include "net/http_server.h"
#include "net/router.h"
#include "store/memory/memory_latest_store.h"
#include "store/rocksdb/rocksdb_history_store.h"

namespace joule {
namespace {

constexpr char kDevice[] = "bench-plug-1";

model::AggregateRecord MakeRecord(int64_t start_ns) {
  model::AggregateRecord r;
  r.device_id = kDevice;
  r.window_start_ns = start_ns;
  r.window_end_ns = start_ns + kNanosPerMinute;
  r.final = true;
  r.version = 3;
  r.count = 60;
  const char* names[] = {"current_a", "energy_wh", "power_w", "voltage_v"};
  for (int i = 0; i < 4; ++i) {
    model::MetricAggregate m;
    m.name = names[i];
    m.kind = model::DefaultMetricKind(m.name);
    m.count = 60;
    m.min = 100.0 + i + static_cast<double>(start_ns % 7);
    m.max = m.min + 50.25;
    m.sum = (m.min + m.max) * 30;
    m.first = m.min + 1.5;
    m.last = m.max - 2.25;
    if (m.kind == model::MetricKind::kPower) {
      m.energy_wh = 2.123456789;
      m.covered_ns = kNanosPerMinute;
    }
    if (m.kind == model::MetricKind::kCounter) m.delta = 2.0987654321;
    r.metrics.push_back(m);
  }
  return r;
}

// One HTTP server with the read routes over one API context.
struct Endpoint {
  api::ApiContext ctx;
  net::Router router;
  std::unique_ptr<net::HttpServer> server;
};

class Fixture {
 public:
  Fixture() {
    char tmpl[] = "/tmp/joule-read-bench-XXXXXX";
    dir_ = mkdtemp(tmpl);
    store::RocksDbHistoryOptions ho;
    ho.path = dir_ + "/history";
    ho.retention = store::HistoryRetention::Forever();
    auto opened = store::RocksDbHistoryStore::Open(ho, &metrics_);
    if (!opened.ok()) std::abort();
    history_ = std::move(opened).value();
    now_ = SystemClock::Default()->NowNanos();
    day_end_ = now_ / kNanosPerMinute * kNanosPerMinute;
    std::vector<model::AggregateRecord> batch;
    for (int i = 0; i < 1440; ++i)
      batch.push_back(MakeRecord(day_end_ - (1440 - i) * kNanosPerMinute));
    json_cache_.Attach(history_.get());  // as `joule serve` wires it
    if (!history_->Put(batch).ok()) std::abort();
    // Steady state of a server with many devices: a day of a device's records is in SST
    // files (the memtable holds the last minutes of all devices), not in the memtable.
    // JOULE_BENCH_MEMTABLE=1 keeps them in the memtable instead.
    const char* memtable = getenv("JOULE_BENCH_MEMTABLE");
    if (memtable != nullptr && std::string(memtable) == "1") {
      if (!history_->Flush().ok()) std::abort();
    } else if (!history_->CompactAll().ok()) {
      std::abort();
    }

    auth_ = std::make_unique<api::Authenticator>("disabled", "", nullptr);
    Start(cached_, &json_cache_);  // as `joule serve` wires it (64 MiB default)
    Start(uncached_, nullptr);     // history.json_cache_bytes = 0: every record encoded
    io_thread_ = std::thread([this] { io_.run(); });
  }
  ~Fixture() {
    io_.stop();
    io_thread_.join();
    cached_.server.reset();
    uncached_.server.reset();
    history_.reset();
    std::filesystem::remove_all(dir_);
  }
  uint16_t port(bool cache = true) const { return (cache ? cached_ : uncached_).server->port(); }
  int64_t day_end() const { return day_end_; }

 private:
  void Start(Endpoint& e, api::RecordJsonCache* cache) {
    e.ctx.clock = SystemClock::Default();
    e.ctx.metrics = &metrics_;
    e.ctx.auth = auth_.get();
    e.ctx.latest = &latest_;
    e.ctx.history = history_.get();
    e.ctx.history_json_cache = cache;
    api::AddRealtimeRoutes(e.router, e.ctx);
    api::AddHistoryRoutes(e.router, e.ctx);
    net::HttpServerOptions so;
    so.listen = "127.0.0.1:0";
    e.server = std::make_unique<net::HttpServer>(io_, so, e.router, &metrics_);
    if (!e.server->Start().ok()) std::abort();
  }

  std::string dir_;
  MetricsRegistry metrics_;
  std::unique_ptr<store::RocksDbHistoryStore> history_;
  store::MemoryLatestStore latest_;
  std::unique_ptr<api::Authenticator> auth_;
  api::RecordJsonCache json_cache_{64 << 20, &metrics_};
  boost::asio::io_context io_;
  Endpoint cached_, uncached_;
  std::thread io_thread_;
  int64_t now_ = 0, day_end_ = 0;
};

Fixture& Shared() {
  static Fixture* f = new Fixture();  // lives until exit, like the server it stands for
  return *f;
}

// A keep-alive HTTP/1.1 GET client that reads the response into one reused buffer (one
// copy out of the kernel, as a browser or curl would); returns the body size (0 on failure).
class Client {
 public:
  explicit Client(uint16_t port) : buf_(4 << 20) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) std::abort();
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  ~Client() { close(fd_); }
  // `extra_headers`: "Name: value\r\n" lines.
  size_t Get(const std::string& target, const std::string& extra_headers = "") {
    std::string req = "GET " + target + " HTTP/1.1\r\nHost: bench\r\n" + extra_headers + "\r\n";
    if (send(fd_, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
      return 0;
    }
    size_t used = 0;
    std::string_view head;
    size_t header_end;
    while (true) {
      if (!Fill(&used)) return 0;
      head = std::string_view(buf_.data(), used);
      if ((header_end = head.find("\r\n\r\n")) != std::string_view::npos) break;
    }
    size_t cl = head.find("Content-Length: ");
    if (cl == std::string_view::npos || cl > header_end) cl = head.find("content-length: ");
    if (cl == std::string_view::npos || cl > header_end) return 0;
    const size_t length = std::strtoull(buf_.data() + cl + 16, nullptr, 10);
    const size_t total = header_end + 4 + length;
    if (total > buf_.size()) buf_.resize(total);
    while (used < total) {
      if (!Fill(&used)) return 0;
    }
    body_ = std::string_view(buf_.data() + header_end + 4, length);
    return used == total ? length : 0;  // one request in flight: nothing may follow
  }
  std::string_view body() const { return body_; }

 private:
  bool Fill(size_t* used) {
    if (*used == buf_.size()) buf_.resize(buf_.size() * 2);
    ssize_t n = recv(fd_, buf_.data() + *used, buf_.size() - *used, 0);
    if (n <= 0) return false;
    *used += static_cast<size_t>(n);
    return true;
  }
  int fd_;
  std::vector<char> buf_;
  std::string_view body_;
};

double UserSeconds(int who) {
  rusage ru{};
  getrusage(who, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec) + static_cast<double>(ru.ru_utime.tv_usec) / 1e6;
}

double CpuSeconds(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

// Decompresses every zstd frame of `in` into `out` (reused); the decompressed size.
size_t Unzstd(ZSTD_DCtx* d, std::string_view in, std::string* out) {
  ZSTD_DCtx_reset(d, ZSTD_reset_session_only);
  ZSTD_inBuffer src{in.data(), in.size(), 0};
  size_t used = 0;
  while (src.pos < src.size) {
    if (out->size() - used < (1 << 20)) out->resize(out->size() + (2 << 20));
    ZSTD_outBuffer dst{out->data() + used, out->size() - used, 0};
    if (ZSTD_isError(ZSTD_decompressStream(d, &dst, &src))) return 0;
    used += dst.pos;
  }
  return used;
}

// zstd: asks for Content-Encoding zstd and decompresses each body (end to end, as a
// client would); body_bytes is then the decompressed size, wire_bytes what was sent.
void RunLatency(benchmark::State& state, const std::string& target, bool cache = true,
                bool zstd = false) {
  Fixture& f = Shared();
  Client client(f.port(cache));
  std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> dctx(ZSTD_createDCtx(), &ZSTD_freeDCtx);
  std::string plain;
  size_t wire = 0;
  std::vector<double> us;
  size_t bytes = 0;
  // Server CPU: the process's CPU time less this (client) thread's, i.e. the I/O thread
  // plus RocksDB's background threads; not skewed by other processes sharing the cores.
  // server_user_us is its user-space part (the kernel's loopback TCP work excluded).
  const double process0 = CpuSeconds(CLOCK_PROCESS_CPUTIME_ID);
  const double client0 = CpuSeconds(CLOCK_THREAD_CPUTIME_ID);
  const double user0 = UserSeconds(RUSAGE_SELF) - UserSeconds(RUSAGE_THREAD);
  for (auto _ : state) {
    auto t0 = std::chrono::steady_clock::now();
    size_t n = client.Get(target, zstd ? "Accept-Encoding: zstd\r\n" : "");
    wire += n;
    if (zstd && n > 0) n = Unzstd(dctx.get(), client.body(), &plain);
    auto t1 = std::chrono::steady_clock::now();
    if (n == 0) {
      state.SkipWithError("request failed");
      break;
    }
    bytes += n;
    us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  if (us.empty()) return;
  const double server_s = (CpuSeconds(CLOCK_PROCESS_CPUTIME_ID) - process0) -
                          (CpuSeconds(CLOCK_THREAD_CPUTIME_ID) - client0);
  const double server_user_s = UserSeconds(RUSAGE_SELF) - UserSeconds(RUSAGE_THREAD) - user0;
  std::sort(us.begin(), us.end());
  state.counters["p50_ms"] = us[us.size() / 2] / 1000;
  state.counters["p99_ms"] = us[std::min(us.size() - 1, us.size() * 99 / 100)] / 1000;
  state.counters["body_bytes"] = static_cast<double>(bytes / us.size());
  state.counters["wire_bytes"] = static_cast<double>(wire / us.size());
  state.counters["server_cpu_us"] = server_s * 1e6 / static_cast<double>(us.size());
  state.counters["server_user_us"] = server_user_s * 1e6 / static_cast<double>(us.size());
}

void BM_History24hOf1m(benchmark::State& state) {
  Fixture& f = Shared();
  std::string target =
      std::string("/v1/devices/") + kDevice +
      "/metrics/history?resolution=1m&from=" + FormatRfc3339Millis(f.day_end() - kNanosPerDay) +
      "&to=" + FormatRfc3339Millis(f.day_end());
  RunLatency(state, target);
}
BENCHMARK(BM_History24hOf1m)->Unit(benchmark::kMillisecond)->UseRealTime();

// The same asking for zstd (Accept-Encoding: zstd), decompressed by the client.
void BM_History24hOf1mZstd(benchmark::State& state) {
  Fixture& f = Shared();
  std::string target =
      std::string("/v1/devices/") + kDevice +
      "/metrics/history?resolution=1m&from=" + FormatRfc3339Millis(f.day_end() - kNanosPerDay) +
      "&to=" + FormatRfc3339Millis(f.day_end());
  RunLatency(state, target, true, true);
}
BENCHMARK(BM_History24hOf1mZstd)->Unit(benchmark::kMillisecond)->UseRealTime();

// The same with the JSON cache off: every record decoded and encoded (the first read of a
// record, or history.json_cache_bytes = 0).
void BM_History24hOf1mUncached(benchmark::State& state) {
  Fixture& f = Shared();
  std::string target =
      std::string("/v1/devices/") + kDevice +
      "/metrics/history?resolution=1m&from=" + FormatRfc3339Millis(f.day_end() - kNanosPerDay) +
      "&to=" + FormatRfc3339Millis(f.day_end());
  RunLatency(state, target, false);
}
BENCHMARK(BM_History24hOf1mUncached)->Unit(benchmark::kMillisecond)->UseRealTime();

// metrics=power_w (one of the four metrics): kept per request parameters; the "Encoded"
// variant goes to the endpoint without a cache (every request encoded, as before).
void RunOneMetric(benchmark::State& state, bool cache) {
  Fixture& f = Shared();
  std::string target = std::string("/v1/devices/") + kDevice +
                       "/metrics/history?resolution=1m&metrics=power_w&from=" +
                       FormatRfc3339Millis(f.day_end() - kNanosPerDay) +
                       "&to=" + FormatRfc3339Millis(f.day_end());
  RunLatency(state, target, cache);
}
void BM_History24hOneMetric(benchmark::State& state) { RunOneMetric(state, true); }
BENCHMARK(BM_History24hOneMetric)->Unit(benchmark::kMillisecond)->UseRealTime();
void BM_History24hOneMetricEncoded(benchmark::State& state) { RunOneMetric(state, false); }
BENCHMARK(BM_History24hOneMetricEncoded)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_History24hCsv(benchmark::State& state) {
  Fixture& f = Shared();
  std::string target =
      std::string("/v1/devices/") + kDevice + "/metrics/history?resolution=1m&format=csv&from=" +
      FormatRfc3339Millis(f.day_end() - kNanosPerDay) + "&to=" + FormatRfc3339Millis(f.day_end());
  RunLatency(state, target);
}
BENCHMARK(BM_History24hCsv)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_RealtimeFromHistory60(benchmark::State& state) {
  RunLatency(state, std::string("/v1/devices/") + kDevice + "/metrics/realtime?windows=60");
}
BENCHMARK(BM_RealtimeFromHistory60)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace joule

namespace joule {
namespace {

// The floor: the same client against a bare blocking server thread that answers every
// request with a prebuilt response of the size of the 24 h JSON body (no HTTP parsing, no
// store, no encoding): what moving that many bytes through loopback TCP costs right now.
class RawServer {
 public:
  explicit RawServer(size_t body_bytes) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        listen(listen_fd_, 1) != 0 ||
        getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      std::abort();
    }
    port_ = ntohs(a.sin_port);
    response_ = "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body_bytes) + "\r\n\r\n";
    response_.append(body_bytes, 'x');
    thread_ = std::thread([this] { Serve(); });
  }
  ~RawServer() {
    shutdown(listen_fd_, SHUT_RDWR);
    close(listen_fd_);
    thread_.join();
  }
  uint16_t port() const { return port_; }

 private:
  void Serve() {
    const int fd = accept(listen_fd_, nullptr, nullptr);
    if (fd < 0) return;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::string in;
    char buf[4096];
    while (true) {
      ssize_t n = recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      in.append(buf, static_cast<size_t>(n));
      size_t end;
      while ((end = in.find("\r\n\r\n")) != std::string::npos) {
        in.erase(0, end + 4);
        size_t off = 0;
        while (off < response_.size()) {
          ssize_t w = send(fd, response_.data() + off, response_.size() - off, MSG_NOSIGNAL);
          if (w <= 0) break;
          off += static_cast<size_t>(w);
        }
      }
    }
    close(fd);
  }
  int listen_fd_;
  uint16_t port_ = 0;
  std::string response_;
  std::thread thread_;
};

void BM_LoopbackFloor1MB(benchmark::State& state) {
  RawServer raw(1084520);  // the 24 h of 1m JSON body
  Client client(raw.port());
  std::vector<double> us;
  for (auto _ : state) {
    auto t0 = std::chrono::steady_clock::now();
    if (client.Get("/floor") == 0) {
      state.SkipWithError("request failed");
      break;
    }
    us.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  if (us.empty()) return;
  std::sort(us.begin(), us.end());
  state.counters["p50_ms"] = us[us.size() / 2] / 1000;
  state.counters["p99_ms"] = us[std::min(us.size() - 1, us.size() * 99 / 100)] / 1000;
}
BENCHMARK(BM_LoopbackFloor1MB)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace joule

BENCHMARK_MAIN();

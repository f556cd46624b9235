// The only translation unit of joule_net that includes Asio and Beast: connections,
// the acceptor, SSE streams and graceful shutdown live here.
//
// Each Connection runs on its own strand. Its state machine:
//   kReading --request--> kHandling --Responder::Send--> kWriting --keep-alive--> kReading
//                                    \--StartStream--> kStreaming
//   any state --error / close--> kLingering (error responses: drain input, then close)
//                                 --> kClosed
// Everything outside the strand (Responders, SseStreams, the server) talks to a
// connection only by posting to its strand.
#include "net/http_server.h"

#include <linux/sockios.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/bind_handler.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/read_size.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/http/string_body.hpp>
#include <chrono>
#include <mutex>
#include <optional>
#include <tuple>
#include <unordered_map>
#include <utility>

#include "common/logging.h"
#include "net/accept_loop.h"
#include "net/http_date.h"
#include "net/tls_stream.h"
#include "net/url.h"

namespace joule::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using error_code = beast::error_code;

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::chrono::seconds kLingerTimeout{2};
constexpr size_t kLingerMaxBytes = 4 << 20;
// Beast reads max(512, free capacity of the read buffer) bytes per read_some, and the body
// parser drains the buffer after each read, so a buffer sized for the headers reads a
// large body ~1 KiB per recvmsg (a 140 kB ingest batch took ~270 reads, each with its
// timer and epoll round trip). Before reading a body larger than the buffer, the buffer
// grows to this much; the connection keeps it for its next requests.
constexpr size_t kBodyReadChunk = 64 << 10;

// The most a connection's read buffer may hold. Beast's parser bounds the header section
// (header_limit) and the body (body_limit), but not a chunked body's chunk lines or its
// trailer section: those wait in the buffer until their CRLF comes, so without a bound an
// unauthenticated client could grow it without end (found by a black-box test: 300 MiB of
// trailer fields took ~1 GB). The body read loop (ReadDirect, plain TCP and TLS) refuses a
// chunk line or trailer section over max_header_bytes (431); this caps the buffer in
// every case at that plus what one read adds.
size_t ReadBufferLimit(const HttpServerOptions& options) {
  return size_t{options.max_header_bytes} + 2 * kBodyReadChunk;
}

std::chrono::nanoseconds Nanos(int64_t ns) { return std::chrono::nanoseconds(ns); }

std::string_view ToStd(beast::string_view s) { return {s.data(), s.size()}; }

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

// The method as a metric label: a small closed set, so clients cannot grow the registry.
std::string_view MethodLabel(std::string_view method) {
  for (std::string_view m : {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}) {
    if (method == m) return m;
  }
  return "OTHER";
}

bool ValidHeaderText(std::string_view s) {
  for (char c : s) {
    if (c == '\r' || c == '\n' || c == '\0') return false;
  }
  return true;
}

// Header fields the server writes itself on a stream's head; a handler's copies are dropped.
bool ServerStreamHeader(std::string_view name) {
  for (std::string_view own : {"content-type", "cache-control", "x-accel-buffering", "connection",
                               "server", "date", "content-length", "transfer-encoding"}) {
    if (EqualsIgnoreCase(name, own)) return true;
  }
  return false;
}

// The head of a text/event-stream response. A stream's body is delimited by the close
// (Connection: close); the head of a HEAD request's answer may keep the connection.
std::string StreamHead(const HttpHeaders& headers, bool close) {
  std::string head =
      "HTTP/1.1 200 OK\r\n"
      "Server: joule\r\n";
  head += DateHeaderLine();
  head +=
      "Content-Type: text/event-stream\r\n"
      "Cache-Control: no-cache\r\n"
      "X-Accel-Buffering: no\r\n";
  if (close) head += "Connection: close\r\n";
  for (const auto& [name, value] : headers) {
    if (name.empty() || !ValidHeaderText(name) || !ValidHeaderText(value)) continue;
    if (ServerStreamHeader(name)) continue;
    head += name;
    head += ": ";
    head += value;
    head += "\r\n";
  }
  head += "\r\n";
  return head;
}

// The canned answer to a connection the server cannot take (max_connections, or out of
// file descriptors).
const std::string& RejectResponse() {
  static const std::string kResponse = [] {
    std::string body = HttpResponse::Error(503, "unavailable", "too many connections").body;
    return "HTTP/1.1 503 Service Unavailable\r\nServer: joule\r\n"
           "Content-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\n"
           "Content-Length: " +
           std::to_string(body.size()) + "\r\n\r\n" + body;
  }();
  return kResponse;
}

// Decimal digits of a non-negative number.
void AppendStatusCode(std::string* out, size_t v) {
  char buf[24];
  char* p = buf + sizeof buf;
  do {
    *--p = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  out->append(p, static_cast<size_t>(buf + sizeof buf - p));
}

// A query parameter given more than once (`from=a&from=b`), or null. Every route reads one
// value per name, so a repeated one is refused instead of silently taking the first (found
// by a black-box test: history answered 200 for the first of two `from`s).
const std::string* RepeatedQueryName(const HttpHeaders& query) {
  if (query.size() <= 16) {
    for (size_t i = 1; i < query.size(); ++i) {
      for (size_t j = 0; j < i; ++j) {
        if (query[i].first == query[j].first) return &query[i].first;
      }
    }
    return nullptr;
  }
  std::unordered_map<std::string_view, size_t> seen;
  seen.reserve(query.size());
  for (const auto& [name, value] : query) {
    if (!seen.emplace(name, 0).second) return &name;
  }
  return nullptr;
}

// The request as handlers see it, from a parsed head (the body is moved in by the caller).
// Nullopt, or the 400 for a malformed target or a repeated query parameter.
std::optional<HttpResponse> BuildRequest(const http::request<http::string_body>& msg,
                                         HttpRequest* req) {
  // An absolute-form target (RFC 9112 §3.2.2) is served by its path and query; its
  // authority replaces the Host field.
  std::string authority;
  const bool target_ok = OriginForm(ToStd(msg.target()), &req->target, &authority);
  std::string_view target = req->target;
  size_t question = target.find('?');
  if (!target_ok || !PercentDecode(target.substr(0, question), false, &req->path) ||
      (question != std::string_view::npos &&
       !ParseQuery(target.substr(question + 1), &req->query))) {
    return HttpResponse::Error(400, "bad_request", "malformed request target");
  }
  if (const std::string* name = RepeatedQueryName(req->query)) {
    return HttpResponse::Error(400, "invalid_argument",
                               "query parameter '" + *name + "' is given more than once");
  }
  req->headers.reserve(static_cast<size_t>(std::distance(msg.begin(), msg.end())));
  for (const auto& field : msg) {
    req->headers.emplace_back(Lower(ToStd(field.name_string())), std::string(ToStd(field.value())));
    if (!authority.empty() && req->headers.back().first == "host") {
      req->headers.back().second = authority;
      authority.clear();
    }
  }
  if (!authority.empty()) req->headers.emplace_back("host", std::move(authority));
  // Two Authorization fields: the first would win here, while a proxy in front may check the
  // last — the two would disagree about who the caller is (found by a black-box test).
  if (std::count_if(req->headers.begin(), req->headers.end(),
                    [](const auto& h) { return h.first == "authorization"; }) > 1) {
    return HttpResponse::Error(400, "bad_request", "Authorization must be sent once");
  }
  return std::nullopt;
}

bool IsParseError(const error_code& ec) {
  return ec.category() == http::make_error_code(http::error::bad_target).category();
}

}  // namespace

class Connection;

namespace {
// The connection whose handler runs on this thread right now (Connection::Dispatch), if
// any. A Responder answered from inside its handler writes the response on the spot,
// without asio::dispatch through the type-erased executor (a wrapped handler per call).
thread_local Connection* t_dispatching = nullptr;
}  // namespace

// ---------------------------------------------------------------------------------------
// HttpServer::Impl

class HttpServer::Impl : public std::enable_shared_from_this<Impl> {
 public:
  Impl(asio::io_context& io, HttpServerOptions options, const Router& router,
       MetricsRegistry* metrics)
      : io_(io),
        options_(std::move(options)),
        router_(router),
        metrics_(metrics),
        accept_(io, options_.connection_contexts),
        shutdown_timer_(accept_.strand()) {
    if (metrics_ != nullptr) {
      connections_gauge_ = metrics_->GetGauge("joule_http_connections", "Open HTTP connections.");
      rejected_connections_ = metrics_->GetCounter(
          "joule_http_connections_rejected_total",
          "HTTP connections closed at accept because max_connections was reached.");
      sse_slow_disconnects_ =
          metrics_->GetCounter("joule_sse_disconnects_total",
                               "SSE streams the server closed because the client did not keep up.",
                               {{"reason", "slow"}});
      if (options_.tls) {
        handshake_failures_ = metrics_->GetCounter(
            "joule_tls_handshake_failures_total",
            "TLS handshakes that failed (old protocol version, no shared cipher, not TLS).",
            {{"listener", "http"}});
      }
    }
  }

  Status Start();
  void StopAccepting();
  void Shutdown(std::function<void()> done);
  void CloseAll();  // from ~HttpServer

  // Called by connections.
  void Unregister(uint64_t id);
  // The request counter and duration histogram of (route, method, status); both nullptr
  // without a registry.
  std::pair<Counter*, Histogram*> Instruments(std::string_view route, std::string_view method,
                                              int status);
  // An error line for a 5xx other than 503 (a bug, or a failure nobody mapped to a
  // status): the route, method, status and the response body (its code and message). At
  // most one line a second; the lines left out are counted in the next one's "suppressed".
  // joule_http_requests_total counts every one (docs/OPERATIONS.md, JouleHttp5xxRatioHigh:
  // "collect the log lines around it" — until session 31 there were none).
  void LogServerError(std::string_view route, std::string_view method, const HttpResponse& r);
  const HttpServerOptions& options() const { return options_; }
  const Router& router() const { return router_; }
  void CountHandshakeFailure() {
    if (handshake_failures_ != nullptr) handshake_failures_->Inc();
  }
  void CountSlowStreamClient() {
    if (sse_slow_disconnects_ != nullptr) sse_slow_disconnects_->Inc();
  }
  bool shutting_down() const { return shutting_down_.load(std::memory_order_acquire); }

  uint16_t port() const { return port_.load(std::memory_order_acquire); }
  size_t connection_count() const {
    std::lock_guard<std::mutex> lock(mu_);
    return connections_.size();
  }

 private:
  void OnAccept(tcp::socket socket);
  void Reject(tcp::socket& socket);
  std::vector<std::shared_ptr<Connection>> LiveConnections();
  void FinishShutdown();

  asio::io_context& io_;
  const HttpServerOptions options_;
  const Router router_;
  MetricsRegistry* const metrics_;

  AcceptLoop accept_;
  asio::steady_timer shutdown_timer_;  // on accept_.strand()
  std::atomic<uint16_t> port_{0};
  std::atomic<bool> shutting_down_{false};

  mutable std::mutex mu_;
  std::unordered_map<uint64_t, std::weak_ptr<Connection>> connections_;  // guarded by mu_
  uint64_t next_connection_id_ = 0;                                      // guarded by mu_
  std::function<void()> shutdown_done_;                                  // guarded by mu_

  Gauge* connections_gauge_ = nullptr;
  Counter* rejected_connections_ = nullptr;
  Counter* sse_slow_disconnects_ = nullptr;
  Counter* handshake_failures_ = nullptr;
  std::mutex metrics_mu_;
  std::unordered_map<std::string, Counter*> request_counters_;       // guarded by metrics_mu_
  std::unordered_map<std::string, Histogram*> duration_histograms_;  // guarded by metrics_mu_
  std::mutex error_log_mu_;
  Clock::time_point error_logged_at_{};  // guarded by error_log_mu_
  uint64_t errors_suppressed_ = 0;       // guarded by error_log_mu_
};

// ---------------------------------------------------------------------------------------
// SseStreamImpl: the thread-safe half of a stream; the Connection owns the socket half.

class SseStreamImpl final : public SseStream {
 public:
  SseStreamImpl(std::weak_ptr<Connection> connection, size_t max_queued_bytes)
      : connection_(std::move(connection)), max_queued_bytes_(max_queued_bytes) {}

  bool Send(std::string_view event, std::string_view data) override {
    return Enqueue(EncodeSseEvent(event, data));
  }
  void Close() override;
  bool IsOpen() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return open_;
  }
  void SetOnClose(std::function<void()> on_close) override {
    std::unique_lock<std::mutex> lock(mu_);
    if (!notified_) {
      on_close_ = std::move(on_close);
      return;
    }
    lock.unlock();
    if (on_close) on_close();
  }

  // Queues raw bytes; false (and the client is dropped) on overflow.
  bool Enqueue(std::string bytes);
  // On the strand: the response head goes before anything already queued.
  void PrependHead(std::string head) {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.insert(0, head);
  }
  // On the strand: takes what is queued for writing. `*close` is set when the stream should
  // end once that is written, `*abort` when it should end right away.
  std::string TakeForWrite(bool* close, bool* abort) {
    std::lock_guard<std::mutex> lock(mu_);
    flush_scheduled_ = false;
    std::string out;
    if (!abort_) out.swap(queue_);
    in_flight_bytes_ = out.size();
    *close = close_requested_;
    *abort = abort_;
    return out;
  }
  bool aborted() const {
    std::lock_guard<std::mutex> lock(mu_);
    return abort_;
  }
  void WriteDone() {
    std::lock_guard<std::mutex> lock(mu_);
    in_flight_bytes_ = 0;
  }
  // On the strand, when the connection closes: runs on_close once.
  void NotifyClosed() {
    std::function<void()> fn;
    {
      std::lock_guard<std::mutex> lock(mu_);
      open_ = false;
      std::string().swap(queue_);  // nobody will write it any more
      if (notified_) return;
      notified_ = true;
      fn = std::move(on_close_);
    }
    if (fn) fn();
  }

 private:
  void PostFlush();

  const std::weak_ptr<Connection> connection_;
  const size_t max_queued_bytes_;
  mutable std::mutex mu_;
  std::string queue_;               // guarded by mu_
  size_t in_flight_bytes_ = 0;      // guarded by mu_
  bool open_ = true;                // guarded by mu_
  bool flush_scheduled_ = false;    // guarded by mu_
  bool close_requested_ = false;    // guarded by mu_
  bool abort_ = false;              // guarded by mu_
  bool notified_ = false;           // guarded by mu_
  std::function<void()> on_close_;  // guarded by mu_
};

// ---------------------------------------------------------------------------------------
// Connection

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(std::shared_ptr<HttpServer::Impl> server, tcp::socket socket, uint64_t id)
      : server_(std::move(server)),
        options_(server_->options()),
        id_(id),
        stream_(std::move(socket), server_->options().tls.get()),
        buffer_(ReadBufferLimit(server_->options())),
        deadline_timer_(stream_.get_executor()),
        keepalive_timer_(stream_.get_executor()) {
    error_code ec;
    tcp::endpoint peer = stream_.socket().remote_endpoint(ec);
    if (!ec) remote_address_ = peer.address().to_string();
    // Plain TCP responses are first written with one non-blocking send on the spot
    // (WriteResponse); Asio's own asynchronous operations are not affected by this flag.
    if (!stream_.is_tls()) stream_.socket().non_blocking(true, ec);
  }

  ~Connection() {
    if (sse_) sse_->NotifyClosed();
    Unregister();
  }

  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  asio::any_io_executor executor() { return stream_.get_executor(); }

  void Start() {
    asio::post(executor(), [self = shared_from_this()] {
      if (!self->stream_.is_tls()) {
        self->ReadHeader();
        return;
      }
      // TLS: the handshake must finish within the read timeout.
      self->SetDeadline(Nanos(self->options_.read_timeout_ns));
      self->stream_.async_handshake([self](error_code ec) {
        if (self->state_ == State::kClosed) return;
        if (ec) {
          self->server_->CountHandshakeFailure();
          self->Close();
          return;
        }
        self->ReadHeader();
      });
    });
  }

  // Posted by the server's Shutdown: idle connections close; busy ones close after the
  // response (WriteResponse sees shutting_down); streams end.
  void OnServerShutdown() {
    if (state_ == State::kReading) {
      Close();
    } else if (state_ == State::kStreaming && sse_) {
      sse_->Close();
    }
  }

  void Close() {
    if (state_ == State::kClosed) return;
    state_ = State::kClosed;
    error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();  // TLS: no close_notify; every response is length-delimited
    deadline_ = Clock::time_point::max();
    deadline_timer_.cancel();
    keepalive_timer_.cancel();
    if (sse_) sse_->NotifyClosed();
    // A Responder may keep this object alive for a while; the connection is gone now.
    Unregister();
  }

  // From Responder (posted to the strand).
  void WriteResponse(uint64_t exchange, HttpResponse response);
  void BeginStream(uint64_t exchange, std::shared_ptr<SseStreamImpl> sse, HttpHeaders headers);
  void FlushStream();

 private:
  enum class State { kReading, kHandling, kWriting, kStreaming, kLingering, kClosed };

  void Unregister() {
    if (registered_) server_->Unregister(id_);
    registered_ = false;
  }
  void ReadHeader();
  void OnHeader(error_code ec);
  void ReadBody();
  void OnBody(error_code ec);
  void ReadDirect(bool header_only, bool from_initiation);
  void OnDirectRead(error_code ec, size_t n);
  void FinishDirectRead(error_code ec, bool from_initiation);
  void OnReadError(error_code ec);
  void FailRequest(int status, std::string_view code, std::string_view message);
  void FailRequest(HttpResponse response);
  bool CheckHead();
  void Dispatch();
  void OnWrite(bool keep_alive, error_code ec);
  void Linger();
  void OnLingerRead(error_code ec, size_t n);
  void OnStreamWrite(error_code ec);
  void OnStreamRead(error_code ec);
  void StreamRead();
  void ArmKeepalive();
  void RecordRequest(int status, Clock::time_point now);

  // Deadlines. A connection has at most one: while a request (or the TLS handshake) is
  // being read, a response or an event is being written, or the connection lingers. If it
  // passes, the socket is closed, so the pending operation fails and its handler closes
  // the connection (what beast::tcp_stream's per-operation timers did). One steady_timer
  // per connection stands guard lazily: it is re-armed only when a deadline comes earlier
  // than the armed expiry; when it fires early (the deadline moved later meanwhile, as it
  // does with every keep-alive request) it re-arms for the current deadline. So a
  // keep-alive request costs a clock read instead of arming and cancelling two timers
  // (timerfd_settime system calls, reactor locking, a handler allocation each).
  void SetDeadline(Clock::duration d) { SetDeadlineAt(Clock::now() + d); }
  // A response's write deadline moves with progress: read_timeout after the last time the
  // client took bytes. So a client reading slowly but steadily gets a response of any size,
  // and one that stops reading is cut off read_timeout after its last read. Progress is
  // either a part written — asio::async_write's completion condition below; a part is
  // what the socket (or the TLS layer, a record of up to 16 KiB) took — or, checked when
  // the deadline passes, the kernel's queue of bytes for the client having shrunk since
  // (the client acknowledged bytes, so it read): a socket with megabytes of send buffer
  // reports room for more only after a third of it drained, which at 40 KB/s takes longer
  // than 30 s. Only called while the write's handler, which holds the connection, is
  // pending.
  auto DeadlineMovesWithProgress() {
    return [this](const error_code& ec, size_t transferred) -> size_t {
      if (!ec) {
        SetDeadline(Nanos(options_.read_timeout_ns));
        send_queue_at_progress_ = SendQueueBytes();
      }
      return asio::transfer_all()(ec, transferred);
    };
  }
  // Bytes the kernel holds for the client, unsent or unacknowledged (-1 if unknown).
  int64_t SendQueueBytes() {
    int queued = 0;
    if (::ioctl(stream_.socket().native_handle(), SIOCOUTQ, &queued) != 0) return -1;
    return queued;
  }
  void SetDeadlineAt(Clock::time_point deadline) {
    deadline_ = deadline;
    if (deadline < timer_expiry_) ArmDeadlineTimer();
  }
  void ClearDeadline() { deadline_ = Clock::time_point::max(); }
  void ArmDeadlineTimer();
  void OnDeadlineTimer(uint64_t generation);
  // An SSE client dropped for not keeping up (its queue overflowed or an event's write
  // stalled for read_timeout): counted once per stream.
  void CountSlowStreamClient() {
    if (!slow_counted_) server_->CountSlowStreamClient();
    slow_counted_ = true;
  }

  const std::shared_ptr<HttpServer::Impl> server_;
  const HttpServerOptions& options_;
  const uint64_t id_;
  MaybeTlsStream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  // The request being read, once its head passed CheckHead (a request with a body);
  // Dispatch adds the body.
  std::optional<HttpRequest> request_;
  uint64_t body_limit_ = 0;  // of the request being read: its route's, or the server's
  // The route options of the request being read (CheckHead), or null.
  const RouteOptions* route_options_ = nullptr;
  // The response being written: its head, and the response that owns the body bytes.
  std::string head_;
  HttpResponse response_;
  State state_ = State::kReading;
  bool read_header_only_ = true;  // what ReadDirect is reading: the head, or the whole request
  Clock::time_point deadline_ = Clock::time_point::max();      // max: none
  Clock::time_point timer_expiry_ = Clock::time_point::max();  // max: timer not armed
  uint64_t timer_generation_ = 0;  // tells the armed wait from cancelled ones
  asio::steady_timer deadline_timer_;
  bool slow_counted_ = false;
  // While a response is being written asynchronously: SendQueueBytes() at the last
  // progress (-1: none to compare with).
  int64_t send_queue_at_progress_ = -1;
  bool registered_ = true;  // counted by the server
  std::string remote_address_;
  uint64_t requests_served_ = 0;
  uint64_t exchange_ = 0;  // counts requests handed to handlers; matches Responders to them

  // The request being served, for the response and for metrics.
  bool keep_alive_ = false;
  bool head_request_ = false;
  bool unread_input_ = false;  // the request was not fully read: linger before closing
  std::string route_;
  std::string method_;
  const HttpRequest* dispatching_ = nullptr;  // while the router runs the handler
  Clock::time_point started_;
  // The instruments of the last (route, method, status) answered: a keep-alive client
  // mostly repeats one request, so the registry lookup is skipped.
  std::string metrics_route_;
  std::string metrics_method_;
  int metrics_status_ = -1;
  Counter* request_counter_ = nullptr;
  Histogram* request_duration_ = nullptr;

  // Server-Sent Events.
  std::shared_ptr<SseStreamImpl> sse_;
  std::string sse_writing_;
  bool sse_write_pending_ = false;
  asio::steady_timer keepalive_timer_;

  std::array<char, 4096> discard_;  // for lingering and for reads while streaming
  size_t lingered_bytes_ = 0;
};

// Responder -> Connection.
class ExchangeSink final : public ResponseSink {
 public:
  ExchangeSink(std::shared_ptr<Connection> connection, uint64_t exchange, size_t sse_max_bytes)
      : connection_(std::move(connection)), exchange_(exchange), sse_max_bytes_(sse_max_bytes) {}

  void Send(HttpResponse response) override {
    // Inline when the handler answers on the connection's strand (the common case: no
    // queueing, no wake-up of another I/O thread); posted from other threads.
    if (t_dispatching == connection_.get()) {
      connection_->WriteResponse(exchange_, std::move(response));
      return;
    }
    auto c = connection_;
    asio::dispatch(c->executor(), [c, exchange = exchange_, r = std::move(response)]() mutable {
      c->WriteResponse(exchange, std::move(r));
    });
  }

  std::shared_ptr<SseStream> StartStream(HttpHeaders headers) override {
    auto c = connection_;
    auto sse = std::make_shared<SseStreamImpl>(c, sse_max_bytes_);
    asio::post(c->executor(), [c, sse, exchange = exchange_, h = std::move(headers)]() mutable {
      c->BeginStream(exchange, std::move(sse), std::move(h));
    });
    return sse;
  }

 private:
  const std::shared_ptr<Connection> connection_;
  const uint64_t exchange_;
  const size_t sse_max_bytes_;
};

void SseStreamImpl::Close() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (close_requested_ || abort_) return;
    open_ = false;
    close_requested_ = true;
    if (flush_scheduled_) return;
    flush_scheduled_ = true;
  }
  PostFlush();
}

bool SseStreamImpl::Enqueue(std::string bytes) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!open_) return false;
    if (queue_.size() + in_flight_bytes_ + bytes.size() > max_queued_bytes_) {
      // The client does not keep up: drop it rather than buffer without bound.
      open_ = false;
      abort_ = true;
    } else {
      queue_ += bytes;
      if (flush_scheduled_) return true;
    }
    flush_scheduled_ = true;
  }
  PostFlush();
  std::lock_guard<std::mutex> lock(mu_);
  return !abort_;
}

void SseStreamImpl::PostFlush() {
  if (auto c = connection_.lock()) {
    asio::post(c->executor(), [c] { c->FlushStream(); });
  }
}

void Connection::ArmDeadlineTimer() {
  timer_expiry_ = deadline_;
  const uint64_t generation = ++timer_generation_;
  deadline_timer_.expires_at(deadline_);  // cancels a pending wait: its generation is stale
  deadline_timer_.async_wait(
      [self = shared_from_this(), generation](error_code) { self->OnDeadlineTimer(generation); });
}

void Connection::OnDeadlineTimer(uint64_t generation) {
  if (generation != timer_generation_ || state_ == State::kClosed) return;
  timer_expiry_ = Clock::time_point::max();
  if (deadline_ == Clock::time_point::max()) return;  // the next SetDeadline arms it again
  if (Clock::now() < deadline_) {
    ArmDeadlineTimer();  // the deadline moved later since the timer was armed
    return;
  }
  if (state_ == State::kWriting && send_queue_at_progress_ >= 0) {
    const int64_t queued = SendQueueBytes();
    if (queued >= 0 && queued < send_queue_at_progress_) {  // the client took some meanwhile
      send_queue_at_progress_ = queued;
      SetDeadline(Nanos(options_.read_timeout_ns));
      return;
    }
  }
  // Passed: the pending read or write fails (operation_aborted) and its handler closes
  // the connection the way it handles any I/O error.
  deadline_ = Clock::time_point::max();
  if (state_ == State::kStreaming) CountSlowStreamClient();  // an event stalled
  stream_.close();
}

void Connection::ReadHeader() {
  if (state_ == State::kClosed) return;
  if (server_->shutting_down() && requests_served_ > 0) {
    Close();
    return;
  }
  state_ = State::kReading;
  parser_.emplace();
  parser_->header_limit(options_.max_header_bytes);
  parser_->body_limit(options_.max_body_bytes);
  body_limit_ = options_.max_body_bytes;
  route_options_ = nullptr;
  request_.reset();
  bool idle = requests_served_ > 0 && buffer_.size() == 0;
  SetDeadline(Nanos(idle ? options_.idle_timeout_ns : options_.read_timeout_ns));
  if (!stream_.is_tls()) {
    ReadDirect(/*header_only=*/true, /*from_initiation=*/true);
    return;
  }
  http::async_read_header(
      stream_, buffer_, *parser_,
      [self = shared_from_this()](error_code ec, size_t) { self->OnHeader(ec); });
}

// A plain-TCP request's head, and every body (TLS too): what http::async_read_header /
// http::async_read do (parse what is buffered, read more while the parser needs it, end
// of stream -> put_eof or end_of_stream), with one socket read and its completion handler
// per read instead of two composed operations (each copying the type-erased executor into
// work guards) around every request.
void Connection::ReadDirect(bool header_only, bool from_initiation) {
  read_header_only_ = header_only;
  // A chunked body is given to the parser max_header_bytes at a time, so that a chunk line
  // or trailer section longer than that can never be parsed whole: the parser needs more
  // than it was given (431). Without the window, one that arrived within one read was
  // taken whatever its length (found by a black-box test: 40 KB accepted with 16 KiB).
  const bool window = !header_only && parser_->chunked();
  while (buffer_.size() != 0) {
    error_code ec;
    const asio::const_buffer data = buffer_.data();
    const size_t fed =
        window ? std::min<size_t>(data.size(), options_.max_header_bytes) : data.size();
    const size_t used = parser_->put(asio::buffer(data.data(), fed), ec);
    buffer_.consume(used);
    if (ec == http::error::need_more) {
      if (used != 0) continue;
      if (fed < data.size()) {
        FinishDirectRead(http::error::header_limit, from_initiation);
        return;
      }
      break;
    }
    if (ec || (header_only ? parser_->is_header_done() : parser_->is_done())) {
      FinishDirectRead(ec, from_initiation);
      return;
    }
    if (used == 0) break;  // nothing parsed, nothing wrong: the parser wants more input
  }
  // In a body, what the parser leaves in the buffer is an unfinished chunk line or trailer
  // section (body bytes are taken as they come): bounded like the header section (this
  // catches one that spans reads; the window above, one that arrived whole).
  if (!header_only && buffer_.size() > options_.max_header_bytes) {
    FinishDirectRead(http::error::header_limit, from_initiation);
    return;
  }
  const size_t size = beast::read_size(buffer_, 65536);
  if (size == 0) {
    FinishDirectRead(http::error::buffer_overflow, from_initiation);
    return;
  }
  stream_.async_read_some(
      buffer_.prepare(size),
      [self = shared_from_this()](error_code ec, size_t n) { self->OnDirectRead(ec, n); });
}

void Connection::OnDirectRead(error_code ec, size_t n) {
  if (state_ != State::kReading) return;
  buffer_.commit(n);
  if (ec == asio::error::eof) {
    if (parser_->got_some()) {
      ec = {};
      parser_->put_eof(ec);  // a body delimited by the close, or partial_message
    } else {
      ec = http::error::end_of_stream;
    }
    FinishDirectRead(ec, false);
    return;
  }
  if (ec) {
    FinishDirectRead(ec, false);
    return;
  }
  ReadDirect(read_header_only_, false);
}

// A request found whole in the buffer when its read began (pipelined) is handled in a
// posted call, as Beast does, so that a run of pipelined requests does not nest
// handlers on the stack. A body found whole after its header is handled at once.
void Connection::FinishDirectRead(error_code ec, bool from_initiation) {
  if (!read_header_only_) {
    OnBody(ec);
  } else if (!from_initiation) {
    OnHeader(ec);
  } else {
    asio::post(executor(), [self = shared_from_this(), ec] { self->OnHeader(ec); });
  }
}

void Connection::OnHeader(error_code ec) {
  if (state_ != State::kReading) return;
  started_ = Clock::now();
  if (ec) {
    OnReadError(ec);
    return;
  }
  const auto& header = parser_->get();
  method_ = std::string(ToStd(header.method_string()));
  // One Content-Length, one value: the parser takes a repeated equal value ("2" twice, or
  // "2, 2"; RFC 9110 §8.6 allows that), but a proxy in front may frame the message
  // otherwise, so it is refused with the connection closed like a conflicting one (found
  // by a black-box test: accepted, and the connection kept open).
  if (const auto cl = header.count(http::field::content_length);
      cl > 1 ||
      (cl == 1 && ToStd(header[http::field::content_length]).find(',') != std::string_view::npos)) {
    FailRequest(400, "bad_request", "Content-Length must be sent once, with one value");
    return;
  }
  // RFC 9112 §3.2: an HTTP/1.1 request without a Host field, or with more than one, MUST be
  // answered 400 (found by a black-box test: answered as any other).
  if (const auto hosts = header.count(http::field::host);
      hosts > 1 || (hosts == 0 && header.version() >= 11)) {
    FailRequest(400, "bad_request",
                hosts > 1 ? "Host must be sent once" : "an HTTP/1.1 request must send Host");
    return;
  }
  // The only transfer coding is chunked, alone (RFC 9112 §6.1: a request whose final coding
  // is not chunked cannot be framed). Anything else is refused with the connection closed,
  // before the parser could take the body for a next request (request smuggling behind a
  // proxy that reads the header differently; found by a black-box test).
  if (const auto te = header.count(http::field::transfer_encoding); te > 0) {
    std::string_view value = ToStd(header[http::field::transfer_encoding]);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
      value.remove_prefix(1);
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
    if (te > 1 || !EqualsIgnoreCase(value, "chunked")) {
      FailRequest(501, "not_implemented",
                  "Transfer-Encoding must be chunked alone (other codings are not supported)");
      return;
    }
    // HTTP/1.0 has no transfer codings: RFC 9112 §6.1 says to treat such a message's
    // framing as faulty and close the connection.
    if (header.version() < 11) {
      FailRequest(400, "bad_request", "Transfer-Encoding in an HTTP/1.0 request");
      return;
    }
  }
  if (parser_->is_done()) {
    Dispatch();
    return;
  }
  if (!CheckHead()) return;
  // No 1xx response to an HTTP/1.0 client (RFC 9110 §15.2): it sends its body anyway.
  if (header.version() >= 11 &&
      EqualsIgnoreCase(ToStd(header[http::field::expect]), "100-continue")) {
    static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
    SetDeadlineAt(started_ + Nanos(options_.read_timeout_ns));
    asio::async_write(stream_, asio::buffer(kContinue.data(), kContinue.size()),
                      [self = shared_from_this()](error_code ec, size_t) {
                        if (ec) {
                          self->Close();
                        } else {
                          self->ReadBody();
                        }
                      });
    return;
  }
  ReadBody();
}

// A body follows the head: what the head decides is answered before the body is read
// — an unknown route (404), another method (405), a Content-Length over the route's own
// limit (413; a chunked body is cut off at it), the route's head check (a missing or
// invalid token: 401) — and the connection closes without reading the body. (Until
// session 19 every body up to max_body_bytes was read first, on every route and without
// a token: 50 connections holding 4 MiB each took the server from 32 to 228 MB; found by
// a black-box test.) False when answered.
bool Connection::CheckHead() {
  request_.emplace();
  HttpRequest& head = *request_;
  head.method = method_;
  head.remote_address = remote_address_;
  if (std::optional<HttpResponse> bad = BuildRequest(parser_->get(), &head)) {
    FailRequest(std::move(*bad));
    return false;
  }
  uint64_t route_limit = 0;
  std::optional<HttpResponse> refusal;
  try {
    refusal = server_->router().CheckHead(head, &route_limit, &route_options_);
  } catch (const std::exception& e) {  // a bug in a head check: as for a handler, 500
    logging::Error("http head check threw",
                   {{"route", std::string(head.route)}, {"error", e.what()}});
    refusal = HttpResponse::Error(500, "internal", "internal error");
  }
  route_ = std::string(head.route);
  if (refusal) {
    FailRequest(std::move(*refusal));
    return false;
  }
  body_limit_ = std::min<uint64_t>(route_limit, options_.max_body_bytes);
  const boost::optional<std::uint64_t> length = parser_->content_length();
  if (length && *length > body_limit_) {
    OnReadError(http::error::body_limit);
    return false;
  }
  parser_->body_limit(body_limit_);
  return true;
}

void Connection::ReadBody() {
  if (state_ != State::kReading) return;
  const boost::optional<std::uint64_t> length = parser_->content_length();
  const bool large = length ? *length > buffer_.capacity() - buffer_.size() : parser_->chunked();
  if (large && buffer_.capacity() < kBodyReadChunk) buffer_.reserve(kBodyReadChunk);
  SetDeadline(Nanos(options_.read_timeout_ns));
  // TLS too: the chunked body's window (ReadDirect) bounds its chunk lines and trailers.
  ReadDirect(/*header_only=*/false, /*from_initiation=*/true);
}

void Connection::OnBody(error_code ec) {
  if (state_ != State::kReading) return;
  if (ec) {
    OnReadError(ec);
    return;
  }
  Dispatch();
}

void Connection::OnReadError(error_code ec) {
  if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
    // buffer_overflow: the read buffer's cap (ReadBufferLimit), reached by a chunk line or
    // trailer section that never ends.
    FailRequest(
        431, "request_header_fields_too_large",
        std::string(parser_ && parser_->is_header_done() ? "chunked trailers or chunk line exceed "
                                                         : "request headers exceed ") +
            std::to_string(options_.max_header_bytes) + " bytes");
  } else if (ec == http::error::body_limit) {
    // A Content-Length over the server's own limit fails the head's read, before CheckHead
    // found the route: look it up here.
    // (The parser has the request line and fields then, but is_header_done() is not set.)
    if (route_options_ == nullptr && parser_ && !parser_->get().target().empty()) {
      const auto& header = parser_->get();
      if (method_.empty()) method_ = std::string(ToStd(header.method_string()));
      route_ = server_->router().RouteFor(method_, ToStd(header.target()), &route_options_);
    }
    if (route_options_ != nullptr && route_options_->on_body_too_large) {
      route_options_->on_body_too_large();
    }
    FailRequest(413, "payload_too_large",
                "request body exceeds " + std::to_string(body_limit_) + " bytes");
  } else if (IsParseError(ec) && ec != http::error::end_of_stream &&
             ec != http::error::partial_message) {
    FailRequest(400, "bad_request", "malformed HTTP request: " + ec.message());
  } else {
    // The client left, timed out, or the server closed the connection.
    Close();
  }
}

// Answers a request that could not be read completely, then closes the connection.
void Connection::FailRequest(int status, std::string_view code, std::string_view message) {
  FailRequest(HttpResponse::Error(status, code, message));
}

void Connection::FailRequest(HttpResponse response) {
  if (route_.empty() && parser_) {
    // Whatever of the request line was parsed, for the metric labels.
    const auto& header = parser_->get();
    if (method_.empty()) method_ = std::string(ToStd(header.method_string()));
    if (!header.target().empty()) {
      route_ = server_->router().RouteFor(method_, ToStd(header.target()));
    }
  }
  keep_alive_ = false;
  head_request_ = false;
  unread_input_ = true;
  state_ = State::kHandling;
  ++exchange_;
  WriteResponse(exchange_, std::move(response));
}

void Connection::Dispatch() {
  http::request<http::string_body> msg = parser_->release();
  parser_.reset();
  keep_alive_ = msg.keep_alive();
  head_request_ = msg.method() == http::verb::head;
  unread_input_ = false;
  state_ = State::kHandling;
  ClearDeadline();  // a handler may take its time (nothing is read or written meanwhile)
  uint64_t exchange = ++exchange_;

  HttpRequest req;
  if (request_) {
    req = std::move(*request_);  // built by CheckHead
    request_.reset();
    req.route = {};
    req.path_params.clear();
  } else {
    req.method = method_;
    req.remote_address = remote_address_;
    if (std::optional<HttpResponse> bad = BuildRequest(msg, &req)) {
      keep_alive_ = false;
      WriteResponse(exchange, std::move(*bad));
      return;
    }
  }
  req.body = std::move(msg.body());

  Responder responder =
      Responder::Make<ExchangeSink>(shared_from_this(), exchange, options_.sse_max_queued_bytes);
  route_.clear();
  dispatching_ = &req;  // a handler may answer before Dispatch returns
  Connection* const outer = t_dispatching;
  t_dispatching = this;
  try {
    server_->router().Dispatch(req, std::move(responder));
  } catch (const std::exception& e) {
    // A bug in a handler; its Responder, if dropped, answers 500.
    logging::Error("http handler threw", {{"route", std::string(req.route)}, {"error", e.what()}});
  } catch (...) {
    logging::Error("http handler threw", {{"route", std::string(req.route)}});
  }
  t_dispatching = outer;
  dispatching_ = nullptr;
  // Still unanswered: the route is kept for the response's metrics. (A response written
  // at once may already have finished, and the next request begun.)
  if (state_ == State::kHandling && exchange == exchange_) route_ = req.route;
}

void Connection::RecordRequest(int status, Clock::time_point now) {
  const std::string_view route =
      route_.empty() && dispatching_ != nullptr ? dispatching_->route : std::string_view(route_);
  if (status != metrics_status_ || route != metrics_route_ || method_ != metrics_method_) {
    std::tie(request_counter_, request_duration_) = server_->Instruments(route, method_, status);
    metrics_route_ = route;
    metrics_method_ = method_;
    metrics_status_ = status;
  }
  if (request_counter_ == nullptr) return;
  request_counter_->Inc();
  request_duration_->Observe(std::chrono::duration<double>(now - started_).count());
}

// The head is written by hand (status line, Server, Date, the handler's headers, Content-Type,
// Content-Length, Connection: close when closing) and goes out with the body in one
// gather write; a shared body is written from the handler's buffer without a copy.
void Connection::WriteResponse(uint64_t exchange, HttpResponse r) {
  if (state_ != State::kHandling || exchange != exchange_) return;  // closed meanwhile
  state_ = State::kWriting;
  bool keep_alive = keep_alive_ && !server_->shutting_down();

  if (r.status < 100 || r.status > 999) r.status = 500;
  response_ = std::move(r);
  std::string& head = head_;
  head.clear();
  head.append("HTTP/1.1 ");
  AppendStatusCode(&head, response_.status);
  head.push_back(' ');
  beast::string_view reason = http::obsolete_reason(static_cast<http::status>(response_.status));
  head.append(reason.data(), reason.size());
  head.append("\r\nServer: joule\r\n");
  head.append(DateHeaderLine());
  const bool bodiless =
      response_.status < 200 || response_.status == 204 || response_.status == 304;
  for (const auto& [name, value] : response_.headers) {
    if (name.empty() || !ValidHeaderText(name) || !ValidHeaderText(value)) continue;
    // The server sets these itself.
    if (EqualsIgnoreCase(name, "content-length") || EqualsIgnoreCase(name, "connection") ||
        EqualsIgnoreCase(name, "server") || EqualsIgnoreCase(name, "date") ||
        EqualsIgnoreCase(name, "transfer-encoding") ||
        (!bodiless && !response_.content_type.empty() && EqualsIgnoreCase(name, "content-type"))) {
      continue;
    }
    head.append(name).append(": ").append(value).append("\r\n");
  }
  const size_t body_size = response_.body_size();
  if (!bodiless) {
    if (!response_.content_type.empty() && ValidHeaderText(response_.content_type)) {
      head.append("Content-Type: ").append(response_.content_type).append("\r\n");
    }
    head.append("Content-Length: ");
    AppendStatusCode(&head, body_size);
    head.append("\r\n");
  }
  if (!keep_alive) head.append("Connection: close\r\n");
  head.append("\r\n");

  const Clock::time_point now = Clock::now();
  RecordRequest(response_.status, now);
  // 503 is load or an outage (its own alerts); 501 is a client naming a transfer coding
  // Joule does not implement (RFC 9112 §6.1), not a server fault (found by a black-box
  // test: anyone could write error lines with `Transfer-Encoding: gzip`).
  if (response_.status >= 500 && response_.status != 503 && response_.status != 501) {
    server_->LogServerError(metrics_route_, method_, response_);
  }
  SetDeadlineAt(now + Nanos(options_.read_timeout_ns));
  const bool no_body = bodiless || head_request_;
  const std::string* shared = response_.shared_body.get();
  std::array<asio::const_buffer, 3> buffers = {
      asio::buffer(head_), asio::buffer(response_.body.data(), no_body ? 0 : response_.body.size()),
      asio::buffer(shared != nullptr && !no_body ? shared->data() : nullptr,
                   shared != nullptr && !no_body ? shared->size() : 0)};
  if (!stream_.is_tls()) {
    // One non-blocking send right away: a response that fits the socket's send buffer
    // (nearly all) is done without a reactor operation, a posted completion and the
    // scheduler's extra epoll_wait round before it runs. What is left goes out
    // asynchronously.
    error_code ec;
    size_t sent = stream_.socket().write_some(buffers, ec);
    if (ec && ec != asio::error::would_block && ec != asio::error::try_again) {
      OnWrite(keep_alive, ec);
      return;
    }
    bool rest = false;
    for (asio::const_buffer& b : buffers) {
      const size_t n = std::min(sent, b.size());
      b += n;
      sent -= n;
      rest = rest || b.size() != 0;
    }
    if (!rest) {
      OnWrite(keep_alive, error_code());
      return;
    }
  }
  asio::async_write(stream_, buffers, DeadlineMovesWithProgress(),
                    [self = shared_from_this(), keep_alive](error_code ec, size_t) {
                      self->OnWrite(keep_alive, ec);
                    });
}

void Connection::OnWrite(bool keep_alive, error_code ec) {
  if (state_ != State::kWriting) return;
  ClearDeadline();
  send_queue_at_progress_ = -1;
  response_ = HttpResponse();
  ++requests_served_;
  if (ec) {
    Close();
  } else if (!keep_alive) {
    if (unread_input_) {
      Linger();
    } else {
      Close();
    }
  } else {
    method_.clear();
    route_.clear();
    ReadHeader();
  }
}

// After an error response to a request that was not read completely, closing at once
// could reset the connection before the client reads the response (RFC 9112 9.6). So
// stop sending, and discard input for a while first.
void Connection::Linger() {
  state_ = State::kLingering;
  error_code ec;
  stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
  SetDeadline(kLingerTimeout);
  // The TCP layer even with TLS: the input is discarded anyway.
  stream_.socket().async_read_some(
      asio::buffer(discard_),
      [self = shared_from_this()](error_code ec, size_t n) { self->OnLingerRead(ec, n); });
}

void Connection::OnLingerRead(error_code ec, size_t n) {
  if (state_ != State::kLingering) return;
  lingered_bytes_ += n;
  if (ec || lingered_bytes_ > kLingerMaxBytes) {
    Close();
    return;
  }
  stream_.socket().async_read_some(
      asio::buffer(discard_),
      [self = shared_from_this()](error_code ec, size_t n) { self->OnLingerRead(ec, n); });
}

void Connection::BeginStream(uint64_t exchange, std::shared_ptr<SseStreamImpl> sse,
                             HttpHeaders headers) {
  if (state_ != State::kHandling || exchange != exchange_) {
    sse->NotifyClosed();
    return;
  }
  if (head_request_) {
    // HEAD: the stream's head without a body, as for any GET route; no stream starts (the
    // handler's stream closes at once) and the connection stays open.
    sse->NotifyClosed();
    state_ = State::kWriting;
    const bool keep_alive = keep_alive_ && !server_->shutting_down();
    head_ = StreamHead(headers, /*close=*/!keep_alive);
    const Clock::time_point now = Clock::now();
    RecordRequest(200, now);
    SetDeadlineAt(now + Nanos(options_.read_timeout_ns));
    asio::async_write(stream_, asio::buffer(head_),
                      [self = shared_from_this(), keep_alive](error_code ec, size_t) {
                        self->OnWrite(keep_alive, ec);
                      });
    return;
  }
  state_ = State::kStreaming;
  sse_ = std::move(sse);
  sse_->PrependHead(StreamHead(headers, /*close=*/true));
  RecordRequest(200, Clock::now());

  // Reading is how we learn that the client has gone; anything it sends is discarded.
  StreamRead();
  ArmKeepalive();
  if (server_->shutting_down()) sse_->Close();
  FlushStream();
}

void Connection::OnStreamRead(error_code ec) {
  if (state_ != State::kStreaming) return;
  if (ec) {
    Close();
    return;
  }
  StreamRead();
}

void Connection::StreamRead() {
  if (!stream_.is_tls()) {
    stream_.socket().async_read_some(
        asio::buffer(discard_),
        [self = shared_from_this()](error_code ec, size_t) { self->OnStreamRead(ec); });
    return;
  }
  // TLS: through the TLS layer (it must see the client's records). No deadline: while
  // streaming, a deadline is set only while an event is being written.
  stream_.async_read_some(
      asio::buffer(discard_),
      [self = shared_from_this()](error_code ec, size_t) { self->OnStreamRead(ec); });
}

void Connection::ArmKeepalive() {
  keepalive_timer_.expires_after(Nanos(options_.sse_keepalive_interval_ns));
  keepalive_timer_.async_wait([self = shared_from_this()](error_code ec) {
    if (ec || self->state_ != State::kStreaming) return;
    self->sse_->Enqueue(": keepalive\n\n");
    self->ArmKeepalive();
  });
}

void Connection::FlushStream() {
  if (state_ != State::kStreaming) return;
  if (sse_->aborted()) {
    CountSlowStreamClient();
    Close();  // even with a write pending: that client is too slow to wait for
    return;
  }
  if (sse_write_pending_) return;
  bool close = false;
  bool abort = false;
  sse_writing_ = sse_->TakeForWrite(&close, &abort);
  if (abort || (close && sse_writing_.empty())) {
    if (abort) CountSlowStreamClient();  // its queue overflowed
    Close();
    return;
  }
  if (sse_writing_.empty()) return;
  sse_write_pending_ = true;
  SetDeadline(Nanos(options_.read_timeout_ns));
  asio::async_write(
      stream_, asio::buffer(sse_writing_),
      [self = shared_from_this()](error_code ec, size_t) { self->OnStreamWrite(ec); });
}

void Connection::OnStreamWrite(error_code ec) {
  sse_write_pending_ = false;
  sse_->WriteDone();
  if (state_ != State::kStreaming) return;
  ClearDeadline();
  if (ec) {
    Close();
    return;
  }
  sse_writing_.clear();
  FlushStream();
}

// ---------------------------------------------------------------------------------------
// HttpServer::Impl

Status HttpServer::Impl::Start() {
  uint16_t port = 0;
  // Out of file descriptors, waiting clients get the same 503 as over max_connections
  // (TLS clients: just the close), instead of waiting unanswered.
  accept_.SetShedResponse(options_.tls ? std::string() : RejectResponse(), [this] {
    if (rejected_connections_ != nullptr) rejected_connections_->Inc();
  });
  JOULE_RETURN_IF_ERROR(accept_.Start(options_.listen, &port, shared_from_this(),
                                      [this](tcp::socket socket) { OnAccept(std::move(socket)); }));
  port_.store(port, std::memory_order_release);
  logging::Debug("http server listening",
                 {{"address", options_.listen}, {"port", std::to_string(port)}});
  return Status::Ok();
}

// On the accept loop's strand (accept_loop.h), for every accepted connection.
void HttpServer::Impl::OnAccept(tcp::socket socket) {
  // Responses are written whole (head and body in one gather write), so Nagle's algorithm
  // would only hold back the last segment of a large body until the client's delayed ACK.
  error_code nodelay_ec;
  socket.set_option(tcp::no_delay(true), nodelay_ec);
  std::shared_ptr<Connection> connection;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (connections_.size() < options_.max_connections) {
      uint64_t id = next_connection_id_++;
      connection = std::make_shared<Connection>(shared_from_this(), std::move(socket), id);
      connections_.emplace(id, connection);
    }
  }
  if (connection) {
    if (connections_gauge_ != nullptr) connections_gauge_->Add(1);
    connection->Start();
  } else if (options_.tls) {
    if (rejected_connections_ != nullptr) rejected_connections_->Inc();
    error_code ignored;
    socket.close(ignored);  // a plaintext 503 means nothing to a TLS client
  } else {
    Reject(socket);
  }
}

// Over max_connections: a best-effort 503 without blocking, then close.
void HttpServer::Impl::Reject(tcp::socket& socket) {
  if (rejected_connections_ != nullptr) rejected_connections_->Inc();
  error_code ec;
  socket.non_blocking(true, ec);
  socket.write_some(asio::buffer(RejectResponse()), ec);
  socket.close(ec);
}

void HttpServer::Impl::Unregister(uint64_t id) {
  std::function<void()> done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    connections_.erase(id);
    if (connections_.empty() && shutdown_done_) done = std::move(shutdown_done_);
  }
  if (connections_gauge_ != nullptr) connections_gauge_->Add(-1);
  if (done) {
    asio::post(accept_.strand(), [self = shared_from_this()] { self->shutdown_timer_.cancel(); });
    asio::post(io_, std::move(done));
  }
}

std::vector<std::shared_ptr<Connection>> HttpServer::Impl::LiveConnections() {
  std::vector<std::shared_ptr<Connection>> out;
  std::lock_guard<std::mutex> lock(mu_);
  out.reserve(connections_.size());
  for (auto& [id, weak] : connections_) {
    if (auto c = weak.lock()) out.push_back(std::move(c));
  }
  return out;
}

void HttpServer::Impl::StopAccepting() { accept_.Stop(shared_from_this()); }

void HttpServer::Impl::Shutdown(std::function<void()> done) {
  StopAccepting();
  shutting_down_.store(true, std::memory_order_release);
  bool none_left = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (connections_.empty()) {
      none_left = true;
    } else {
      shutdown_done_ = std::move(done);
    }
  }
  if (none_left) {
    if (done) asio::post(io_, std::move(done));
    return;
  }
  for (auto& c : LiveConnections()) {
    asio::post(c->executor(), [c] { c->OnServerShutdown(); });
  }
  asio::post(accept_.strand(), [self = shared_from_this()] {
    self->shutdown_timer_.expires_after(Nanos(self->options_.shutdown_timeout_ns));
    self->shutdown_timer_.async_wait([self](error_code ec) {
      if (!ec) self->FinishShutdown();
    });
  });
}

// The shutdown timeout passed: close whatever is left and report done.
void HttpServer::Impl::FinishShutdown() {
  std::function<void()> done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    done = std::move(shutdown_done_);
    shutdown_done_ = nullptr;
  }
  if (!done) return;
  logging::Warn("http shutdown timed out; closing remaining connections",
                {{"connections", std::to_string(connection_count())}});
  for (auto& c : LiveConnections()) {
    asio::post(c->executor(), [c] { c->Close(); });
  }
  asio::post(io_, std::move(done));
}

void HttpServer::Impl::CloseAll() {
  accept_.Stop(shared_from_this());
  shutting_down_.store(true, std::memory_order_release);
  {
    std::lock_guard<std::mutex> lock(mu_);
    shutdown_done_ = nullptr;
  }
  asio::post(accept_.strand(), [self = shared_from_this()] { self->shutdown_timer_.cancel(); });
  for (auto& c : LiveConnections()) {
    asio::post(c->executor(), [c] { c->Close(); });
  }
}

std::pair<Counter*, Histogram*> HttpServer::Impl::Instruments(std::string_view route,
                                                              std::string_view method, int status) {
  if (metrics_ == nullptr) return {nullptr, nullptr};
  std::string_view route_label = route.empty() ? std::string_view("unmatched") : route;
  std::string_view method_label = MethodLabel(method);
  std::string status_label = std::to_string(status);
  std::string key;
  key.reserve(route_label.size() + method_label.size() + status_label.size() + 2);
  key.append(route_label).append(1, '\n').append(method_label).append(1, '\n').append(status_label);
  std::lock_guard<std::mutex> lock(metrics_mu_);
  Counter*& c = request_counters_[key];
  if (c == nullptr) {
    c = metrics_->GetCounter("joule_http_requests_total", "HTTP requests answered.",
                             {{"route", std::string(route_label)},
                              {"method", std::string(method_label)},
                              {"status", status_label}});
  }
  Histogram*& h = duration_histograms_[std::string(route_label)];
  if (h == nullptr) {
    h = metrics_->GetHistogram("joule_http_request_duration_seconds",
                               "Time from a request's headers to its response head.",
                               Histogram::LatencyBuckets(), {{"route", std::string(route_label)}});
  }
  return {c, h};
}

void HttpServer::Impl::LogServerError(std::string_view route, std::string_view method,
                                      const HttpResponse& r) {
  uint64_t suppressed = 0;
  {
    std::lock_guard<std::mutex> lock(error_log_mu_);
    const Clock::time_point now = Clock::now();
    if (error_logged_at_ != Clock::time_point{} &&
        now - error_logged_at_ < std::chrono::seconds(1)) {
      ++errors_suppressed_;
      return;
    }
    error_logged_at_ = now;
    suppressed = std::exchange(errors_suppressed_, 0);
  }
  constexpr size_t kMaxBody = 1024;
  std::string body = r.body.substr(0, kMaxBody);
  if (r.body.size() < kMaxBody && r.shared_body) {
    body.append(r.shared_body->substr(0, kMaxBody - body.size()));
  }
  logging::Error("http request answered with a server error",
                 {{"route", std::string(route.empty() ? std::string_view("unmatched") : route)},
                  {"method", std::string(MethodLabel(method))},
                  {"status", std::to_string(r.status)},
                  {"response", std::move(body)},
                  {"suppressed", std::to_string(suppressed)}});
}

// ---------------------------------------------------------------------------------------
// HttpServer

HttpServer::HttpServer(asio::io_context& io, HttpServerOptions options, const Router& router,
                       MetricsRegistry* metrics)
    : impl_(std::make_shared<Impl>(io, std::move(options), router, metrics)) {}

HttpServer::~HttpServer() { impl_->CloseAll(); }

Status HttpServer::Start() { return impl_->Start(); }
uint16_t HttpServer::port() const { return impl_->port(); }
void HttpServer::StopAccepting() { impl_->StopAccepting(); }
void HttpServer::Shutdown(std::function<void()> done) { impl_->Shutdown(std::move(done)); }
size_t HttpServer::connection_count() const { return impl_->connection_count(); }

}  // namespace joule::net

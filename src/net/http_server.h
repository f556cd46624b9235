// HttpServer: an HTTP/1.1 server on Boost.Beast, serving a Router.
//
// Each connection lives on its own strand of the given io_context, so the io_context may
// be run by a pool of threads. Requests on one connection are handled one at a time
// (pipelined requests wait), keep-alive is the default, "Connection: close" is honored.
// Malformed input gets 400 (or 413 / 431 for oversized bodies / headers) and the
// connection closes; nothing a client sends can crash the server.
//
// Lifetime: the server copies the Router. The HttpServer object must outlive the
// io_context's run (connections keep internal state alive by themselves, but the handlers
// captured by the Router usually reference objects owned next to the server).
// Thread-safety: Start, StopAccepting and Shutdown may be called from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/metrics.h"
#include "common/status.h"
#include "net/http_message.h"
#include "net/responder.h"
#include "net/router.h"
#include "net/sse_stream.h"
#include "net/tls_context.h"

namespace boost::asio {
class io_context;
}  // namespace boost::asio

namespace joule::net {

struct HttpServerOptions {
  std::string listen = "127.0.0.1:8080";     // host:port; port 0 picks a free port
  std::shared_ptr<TlsContext> tls;           // set: HTTPS only (TLS >= 1.2); null: plain HTTP
  uint64_t max_body_bytes = 4ull << 20;      // larger -> 413, decided from Content-Length up front
  uint32_t max_header_bytes = 16 * 1024;     // request line + headers; larger -> 431
  int64_t read_timeout_ns = 30'000'000'000;  // to receive a request (and to write a response)
  int64_t idle_timeout_ns = 60'000'000'000;  // between requests on a keep-alive connection
  size_t max_connections = 10000;            // more are closed right after accept
  // Server-Sent Events.
  int64_t sse_keepalive_interval_ns = 15'000'000'000;  // ": keepalive" comment lines
  size_t sse_max_queued_bytes = 1 << 20;               // per stream; overflowing drops the client
  // Shutdown gives in-flight requests this long, then closes every connection.
  int64_t shutdown_timeout_ns = 10'000'000'000;
  // Where connections live: accepted connections go to these io_contexts in turn (each
  // run by its own thread, so that a connection's reads, handler and writes stay on one
  // thread without cross-thread wake-ups). Empty: every connection on the server's
  // io_context. The contexts must outlive the server like the io_context itself.
  std::vector<boost::asio::io_context*> connection_contexts;
};

class HttpServer {
 public:
  // `metrics` may be null. It must outlive the server.
  HttpServer(boost::asio::io_context& io, HttpServerOptions options, const Router& router,
             MetricsRegistry* metrics);
  ~HttpServer();  // closes the listener and every connection
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and listens, then accepts on the io_context. Errors (bad address, address in
  // use) come back as a Status.
  Status Start();
  // The bound port (after a successful Start); resolves port 0.
  uint16_t port() const;

  // Graceful shutdown, step 1: stop accepting new connections.
  void StopAccepting();
  // Stops accepting; lets requests whose handler is running finish (their responses go
  // out with "Connection: close"); closes idle connections and SSE streams. Calls `done`
  // (on an io_context thread) once no connection remains, or after
  // options.shutdown_timeout_ns, when the rest are closed forcibly. Call at most once.
  void Shutdown(std::function<void()> done);

  // Open connections right now (for tests and diagnostics).
  size_t connection_count() const;

  class Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace joule::net

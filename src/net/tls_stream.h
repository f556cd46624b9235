// Internal to src/net: a byte stream that is either plain TCP or TLS over TCP, chosen per
// listener at run time, so one Connection class serves both (HTTP and MQTT). It models
// Asio's AsyncReadStream / AsyncWriteStream, so Beast's http::async_read/async_write and
// asio::async_write work on it unchanged. The lowest layer is a plain tcp::socket: it has no
// timeouts of its own (a beast::tcp_stream arms and cancels a timer around every read and
// write); the connection classes keep their own deadlines (http_server.cc, mqtt/listener.cc).
//
// Include only from the .cc files that already use Asio (it pulls in OpenSSL).
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <optional>
#include <utility>

#include "net/tls_context_impl.h"

namespace joule::net {

class MaybeTlsStream {
 public:
  using executor_type = boost::asio::ip::tcp::socket::executor_type;
  using TlsLayer = boost::beast::ssl_stream<boost::asio::ip::tcp::socket>;

  // `tls` null: plain TCP. Otherwise the caller must complete async_handshake first.
  MaybeTlsStream(boost::asio::ip::tcp::socket socket, TlsContext* tls) {
    if (tls != nullptr) {
      tls_.emplace(std::move(socket), tls->ssl);
    } else {
      plain_.emplace(std::move(socket));
    }
  }

  bool is_tls() const { return tls_.has_value(); }
  boost::asio::ip::tcp::socket& socket() {
    return tls_ ? boost::beast::get_lowest_layer(*tls_) : *plain_;
  }
  executor_type get_executor() { return socket().get_executor(); }
  void close() {
    boost::system::error_code ignored;
    socket().close(ignored);
  }

  template <class MutableBuffers, class Handler>
  void async_read_some(const MutableBuffers& buffers, Handler&& handler) {
    if (tls_) {
      tls_->async_read_some(buffers, std::forward<Handler>(handler));
    } else {
      plain_->async_read_some(buffers, std::forward<Handler>(handler));
    }
  }
  template <class ConstBuffers, class Handler>
  void async_write_some(const ConstBuffers& buffers, Handler&& handler) {
    if (tls_) {
      tls_->async_write_some(buffers, std::forward<Handler>(handler));
    } else {
      plain_->async_write_some(buffers, std::forward<Handler>(handler));
    }
  }
  // REQUIRES: is_tls().
  template <class Handler>
  void async_handshake(Handler&& handler) {
    tls_->async_handshake(boost::asio::ssl::stream_base::server, std::forward<Handler>(handler));
  }

 private:
  std::optional<boost::asio::ip::tcp::socket> plain_;
  std::optional<TlsLayer> tls_;
};

}  // namespace joule::net

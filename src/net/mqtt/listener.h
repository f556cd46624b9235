// MqttListener: the server side of MQTT 3.1.1 / 5.0 over TCP on Boost.Asio (session rules in
// docs/formats/mqtt.md §3). It knows nothing about telemetry: a SessionHandler decides
// who may connect and what a PUBLISH means, and reports each publish's outcome once.
//
// Each connection lives on its own strand of the given io_context, so the io_context may
// be run by a pool of threads. PUBACKs of one connection go out in the order the PUBLISH
// packets arrived, whatever the order the handler completes them in.
//
// Lifetime: the handler and the metrics registry must outlive the listener and every
// publish callback. Thread-safety: Start, Stop and the accessors may be called from any
// thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/metrics.h"
#include "common/status.h"
#include "net/mqtt/codec.h"
#include "net/tls_context.h"

namespace boost::asio {
class io_context;
}  // namespace boost::asio

namespace joule::net::mqtt {

struct ConnectRequest {
  ProtocolVersion version = ProtocolVersion::kV311;
  std::string client_id;  // as sent; empty when the server assigns one (after OnConnect)
  std::optional<std::string> username;
  std::optional<std::string> password;
  std::string remote_address;
};

struct ConnectDecision {
  uint8_t reason_code = reason::kSuccess;  // MQTT 5 CONNACK reason (mapped for 3.1.1)
  std::string principal;                   // e.g. the device id; passed to OnPublish
  // Kept with the connection and passed to OnPublish, for a handler that checks on every
  // publish that the credential the connection was opened with is still valid (a token
  // revoked while the connection is open).
  std::string credential;
};

struct PublishRequest {
  ProtocolVersion version = ProtocolVersion::kV311;
  const std::string* principal = nullptr;   // from ConnectDecision
  const std::string* credential = nullptr;  // from ConnectDecision
  std::string_view topic;                   // after Topic Alias resolution
  std::string_view payload;
  uint8_t qos = 0;
  std::optional<uint8_t> payload_format_indicator;  // MQTT 5
};

struct PublishOutcome {
  // MQTT 5 PUBACK reason: kSuccess, kNotAuthorized, kPayloadFormatInvalid, kQuotaExceeded,
  // kUnspecifiedError. 3.1.1 mapping: see docs/formats/mqtt.md §4.
  uint8_t reason_code = reason::kSuccess;
  std::string reason_string;  // MQTT 5 only; dropped if the client's max size is exceeded
  // A refusal that a resend cannot change (like an invalid payload): MQTT 3.1.1, which has
  // no negative PUBACK, gets a PUBACK instead of a closed connection (docs/formats/mqtt.md
  // §4), so that the client does not resend it for ever.
  bool permanent = false;
  // Close the connection after answering (MQTT 5: PUBACK, then DISCONNECT with
  // reason_code): the connection itself may no longer publish (its token was revoked).
  bool disconnect = false;
  // A refusal for the device's event rate limit (kQuotaExceeded, not permanent): MQTT
  // 3.1.1 closes the connection as for backpressure, but counts it under
  // joule_mqtt_disconnects_total{reason="rate_limited"} instead of "unavailable".
  bool rate_limited = false;
};

class SessionHandler {
 public:
  using PublishDone = std::function<void(PublishOutcome)>;
  virtual ~SessionHandler() = default;
  // On a connection's strand; may block briefly (a cached metadata lookup).
  virtual ConnectDecision OnConnect(const ConnectRequest& request) = 0;
  // On a connection's strand. `done` must be called exactly once, from any thread (for
  // QoS 0 too). The request's views are valid only during the call.
  virtual void OnPublish(const PublishRequest& request, PublishDone done) = 0;
};

struct MqttListenerOptions {
  std::string listen = "127.0.0.1:1883";  // host:port; port 0 picks a free port
  std::shared_ptr<TlsContext> tls;        // set: MQTT over TLS only (TLS >= 1.2)
  uint32_t max_packet_size = (4u << 20) + (64u << 10);
  int64_t connect_timeout_ns = 10'000'000'000;  // accept → CONNECT
  uint16_t receive_maximum = 256;               // QoS 1 publishes in flight per connection
  uint16_t topic_alias_maximum = 16;
  size_t max_connections = 100000;
  // Shutdown waits this long for the publishes in flight to be answered, then disconnects.
  int64_t shutdown_timeout_ns = 10'000'000'000;
  // Accepted connections go to these io_contexts in turn (HttpServerOptions has the same);
  // empty: all on the listener's io_context.
  std::vector<boost::asio::io_context*> connection_contexts;
};

class MqttListener {
 public:
  // `metrics` may be null.
  MqttListener(boost::asio::io_context& io, MqttListenerOptions options, SessionHandler* handler,
               MetricsRegistry* metrics);
  ~MqttListener();  // Stop()
  MqttListener(const MqttListener&) = delete;
  MqttListener& operator=(const MqttListener&) = delete;

  // Binds and listens, then accepts on the io_context.
  Status Start();
  uint16_t port() const;
  // Stops accepting and closes every connection at once (MQTT 5 clients get DISCONNECT
  // 0x8B). Publishes still being made durable complete without their PUBACK; the clients
  // resend them.
  void Stop();
  // Stops accepting, reads nothing more, answers each connection's QoS 1 publishes in
  // flight (their PUBACKs once durable), then disconnects it as Stop does; whatever is
  // left after options.shutdown_timeout_ns is disconnected at once. `done` runs on the
  // listener's io_context when no connection is left (or at the timeout). Call at most once.
  void Shutdown(std::function<void()> done);

  size_t connection_count() const;

  class Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace joule::net::mqtt

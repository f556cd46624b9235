// MqttSubscriber: the client side of MQTT 3.1.1 for bridge mode (docs/formats/mqtt.md §6).
// It connects to an external broker with a persistent session (clean session = 0),
// subscribes to topic filters with QoS 1, and hands every PUBLISH to a MessageHandler —
// and a QoS 1 message is acknowledged to the broker only when the handler says so (for
// Joule: once the events are durable). Messages the handler cannot keep are never
// acknowledged: the client drops the connection and the broker redelivers them to the
// persistent session on the next connect.
//
// Why not libmosquitto or Paho: libmosquitto 2.0 (Debian 12 ships 2.0.11; manual acks
// arrive in 2.1) and Paho C both send the PUBACK as soon as the PUBLISH is read, before
// the application sees it, so a crash right after would lose an acknowledged message.
//
// It reconnects forever with exponential backoff (with jitter), keeps the connection alive
// with PINGREQ, and sends PUBACKs in the order the PUBLISH packets arrived (MQTT 3.1.1
// §4.6). Everything runs on one strand of the given io_context.
//
// Lifetime: the handler and the metrics registry must outlive the subscriber and every
// `done` callback. Thread-safety: Start/Stop/connected may be called from any thread;
// OnMessage is called on the subscriber's strand, one message at a time; `done` may be
// called from any thread, exactly once.
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
#include "net/tls_context.h"

namespace boost::asio {
class io_context;
}  // namespace boost::asio

namespace joule::net::mqtt {

struct ReceivedMessage {
  std::string_view topic;
  std::string_view payload;
  uint8_t qos = 0;
  bool dup = false;  // the broker says it may have sent it before
  // > 0: the PUBLISH was larger than MqttSubscriberOptions::max_packet_size, this many
  // bytes: its payload was skipped unread (`payload` is empty) and can only be refused.
  uint64_t too_large_bytes = 0;
};

class MessageHandler {
 public:
  // keep = true: the message was handled (stored, or refused for good): acknowledge it.
  // keep = false: it could not be stored now: do not acknowledge; the broker redelivers.
  using Done = std::function<void(bool keep)>;
  virtual ~MessageHandler() = default;
  // The views are valid only during the call. `done` is called exactly once (for QoS 0
  // too, where it does nothing).
  virtual void OnMessage(const ReceivedMessage& message, Done done) = 0;
};

struct MqttSubscriberOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 1883;
  std::string client_id = "joule-bridge";
  std::optional<std::string> username;
  std::optional<std::string> password;
  std::vector<std::string> topics;  // filters, subscribed with QoS 1
  // mqtts://: TLS to the broker with `tls_context` (LoadClientTlsContext: TLS 1.2+, the
  // broker's chain verified, optional client certificate). The certificate must name
  // `host` (DNS name or IP address); SNI carries `host` when it is a name.
  bool use_tls = false;
  std::shared_ptr<TlsContext> tls_context;
  uint16_t keep_alive_s = 30;
  int64_t connect_timeout_ns = 10'000'000'000;  // TCP connect + CONNACK
  int64_t min_backoff_ns = 100'000'000;
  int64_t max_backoff_ns = 30'000'000'000;
  // A larger PUBLISH is not buffered: its payload is skipped as it arrives, a warning is
  // logged and it goes to the handler with too_large_bytes set (and, QoS 1, is
  // acknowledged when the handler says so). It used to end the connection, and the broker
  // redelivered it on every reconnect: nothing else got in (found by a black-box test).
  uint32_t max_packet_size = (4u << 20) + (64u << 10);
  size_t max_unacknowledged = 1024;  // stop reading while this many wait for the handler
};

// "mqtt://host[:port]" (port 1883 when omitted) or "mqtts://host[:port]" (TLS, port 8883
// when omitted) → options->host, options->port, options->use_tls.
// InvalidArgument names what is wrong (other schemes, user info, paths).
Status ParseBrokerUrl(std::string_view url, MqttSubscriberOptions* options);

// A topic filter as MQTT 3.1.1 section 4.7 allows it: not empty, at most 65535 bytes, no
// U+0000, '#' only alone as the last level, '+' only alone in its level. A broker closes
// the connection on a malformed SUBSCRIBE (the bridge then reconnected forever with "read:
// End of file", naming nothing: found by a black-box test). InvalidArgument says which rule.
Status ValidateTopicFilter(std::string_view filter);

// A comma-separated list of topic filters (spaces around each dropped, empty entries
// skipped), each validated → *filters.
Status ParseTopicFilters(std::string_view list, std::vector<std::string>* filters);

class MqttSubscriber {
 public:
  // `metrics` may be null. Metrics: joule_mqtt_bridge_connected (gauge),
  // joule_mqtt_bridge_connects_total{result}, joule_mqtt_bridge_publishes_total{qos},
  // joule_mqtt_bridge_ack_latency_seconds, joule_mqtt_bridge_subscribe_refused_total,
  // joule_mqtt_bridge_tls_handshake_failures_total.
  MqttSubscriber(boost::asio::io_context& io, MqttSubscriberOptions options,
                 MessageHandler* handler, MetricsRegistry* metrics);
  ~MqttSubscriber();  // Stop()
  MqttSubscriber(const MqttSubscriber&) = delete;
  MqttSubscriber& operator=(const MqttSubscriber&) = delete;

  // Starts connecting in the background.
  void Start();
  // Closes the connection (a DISCONNECT first if connected) and stops reconnecting.
  // Messages not yet acknowledged stay with the broker.
  void Stop();
  // Connected and subscribed.
  bool connected() const;

  class Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace joule::net::mqtt

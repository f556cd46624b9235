// MqttPublisher: a minimal blocking MQTT 5 publisher (QoS 1) over the codec the server and
// the bridge use (net/mqtt/codec.h), enough for `joule simulate --mqtt`: one connection
// authenticated as one device (docs/formats/mqtt.md §3: user name = device id, password =
// its token), PUBLISH QoS 1 and wait for the PUBACK. Over plain TCP, or TLS (the server's
// certificate checked as app/client_tls.h says). Not thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "app/client_tls.h"
#include "net/mqtt/codec.h"

namespace joule::app {

class MqttPublisher {
 public:
  // Results of Connect and Publish besides the MQTT 5 reason codes (0x00 = success).
  static constexpr int kConnectionError = -1;  // TCP connect, send or receive failed
  static constexpr int kProtocolError = -2;    // the server's answer did not decode
  // The server ended the connection with a DISCONNECT instead of answering (e.g. 0x8B
  // "server shutting down" on a graceful restart): its reason code is disconnect_reason().
  static constexpr int kDisconnected = -3;

  // `tls` set: every connection is TLS, its peer checked as ClientTlsTrust says.
  MqttPublisher(std::string host, std::string port, std::optional<ClientTlsTrust> tls = {});
  ~MqttPublisher();
  MqttPublisher(const MqttPublisher&) = delete;
  MqttPublisher& operator=(const MqttPublisher&) = delete;

  // TCP connect and CONNECT (clean start, no keep alive); returns the CONNACK reason code
  // (0x00 accepted, e.g. 0x86 bad user name or password) or a negative result. An empty
  // password is sent as none. On anything but 0x00 the connection is closed.
  int Connect(const std::string& client_id, const std::string& username,
              const std::string& password);
  // PUBLISH QoS 1 and wait for its PUBACK: returns the PUBACK reason code (0x00 durable,
  // 0x97 quota / unavailable, 0x99 invalid payload, …) and its reason string (MQTT 5:
  // "accepted N, rejected M (…)" when some events were rejected), or a negative result
  // (then the connection is closed; a DISCONNECT is kDisconnected, its reason string in
  // `reason`). Never a DISCONNECT's reason code: that is not the publish's answer.
  int Publish(const std::string& topic, const std::string& payload, std::string* reason);
  // Whether a TCP connection can be opened (then closed at once, before any CONNECT).
  bool CanConnect();
  // DISCONNECT (when connected) and close.
  void Disconnect();

  bool connected() const { return fd_ >= 0; }
  // Whether the connection is open and the server has not ended it since the last call:
  // reads, without waiting, what the server sent unasked. A DISCONNECT (its reason code in
  // disconnect_reason()), a closed socket or undecodable bytes close the connection. A
  // connection idle while the server restarted still looks connected() until then.
  bool StillConnected();
  // The reason code of the last DISCONNECT the server sent (after kDisconnected or a false
  // StillConnected), else 0.
  uint8_t disconnect_reason() const { return disconnect_reason_; }
  // Why the last call failed (a connection error, a refused CONNACK), for messages.
  const std::string& error() const { return error_; }

 private:
  bool Open();
  void Close();
  bool SendAll(const std::string& bytes);
  // The next whole packet the decoder holds: 1, 0 when it needs more bytes, or
  // kProtocolError (error_ set).
  int NextPacket(net::mqtt::Packet* packet);
  void Feed(std::string_view bytes);  // to the decoder, keeping the first bytes
  std::string HttpHint() const;       // for error_: "" unless the server spoke HTTP
  // Receives what the socket holds into the decoder (`flags` MSG_DONTWAIT: without
  // waiting): 1, 0 when nothing was there (MSG_DONTWAIT only), or kConnectionError (error_
  // set) when the server closed the connection or the receive failed.
  int Receive(int flags);
  // Reads until one whole packet is decoded: 0, or a negative result (error_ set).
  int ReadPacket(net::mqtt::Packet* packet);
  // A DISCONNECT from the server: records its reason, names it in error_ (`when`: "before
  // the PUBACK", …), closes the connection. Returns kDisconnected.
  int Disconnected(const net::mqtt::Packet& disconnect, std::string_view when, std::string* reason);
  // Sends `request` and reads until a packet `is_answer` accepts: 0 with it in `answer`; a
  // DISCONNECT instead is kDisconnected (error_ names it, `reason` gets its reason string);
  // a connection error is negative too. The connection is closed unless 0.
  int Exchange(const net::mqtt::Packet& request,
               const std::function<bool(const net::mqtt::Packet&)>& is_answer,
               net::mqtt::Packet* answer, std::string_view awaited, std::string* reason);

  std::string host_, port_;
  std::optional<ClientTlsTrust> tls_trust_;
  int fd_ = -1;
  std::unique_ptr<ClientTls> tls_;  // on fd_, when tls_trust_ is set
  uint16_t next_packet_id_ = 1;
  std::string error_;
  uint8_t disconnect_reason_ = 0;
  net::mqtt::Decoder decoder_;  // of the current connection
  std::string first_bytes_;     // the connection's first bytes received (up to 5)
};

}  // namespace joule::app

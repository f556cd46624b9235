// MQTT 3.1.1 / 5.0 packet codec: bytes ↔ Packet, specified in docs/formats/mqtt.md.
//
// Pure: no I/O, no clocks, no globals. The Decoder is incremental (feed it bytes as they
// arrive from a socket) and strict: anything the spec calls malformed or a protocol error
// is reported as an Error with the MQTT 5 reason code to answer with; it never reads past
// the bytes it was given, and never buffers more than max_packet_size of one packet.
//
// Thread-safety: a Decoder is a plain value owned by one connection; the free functions are
// thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace joule::net::mqtt {

enum class ProtocolVersion : uint8_t { kUnknown = 0, kV311 = 4, kV5 = 5 };

enum class PacketType : uint8_t {
  kConnect = 1,
  kConnack = 2,
  kPublish = 3,
  kPuback = 4,
  kPubrec = 5,
  kPubrel = 6,
  kPubcomp = 7,
  kSubscribe = 8,
  kSuback = 9,
  kUnsubscribe = 10,
  kUnsuback = 11,
  kPingreq = 12,
  kPingresp = 13,
  kDisconnect = 14,
  kAuth = 15,
};
std::string_view PacketTypeName(PacketType type);

// MQTT 5 reason codes used by Joule (3.1.1 return codes are mapped by the session layer).
namespace reason {
inline constexpr uint8_t kSuccess = 0x00;
inline constexpr uint8_t kNoSubscriptionExisted = 0x11;
inline constexpr uint8_t kUnspecifiedError = 0x80;
inline constexpr uint8_t kMalformedPacket = 0x81;
inline constexpr uint8_t kProtocolError = 0x82;
inline constexpr uint8_t kUnsupportedProtocolVersion = 0x84;
inline constexpr uint8_t kClientIdentifierNotValid = 0x85;
inline constexpr uint8_t kBadUserNameOrPassword = 0x86;
inline constexpr uint8_t kNotAuthorized = 0x87;
inline constexpr uint8_t kServerUnavailable = 0x88;
inline constexpr uint8_t kServerShuttingDown = 0x8B;
inline constexpr uint8_t kBadAuthenticationMethod = 0x8C;
inline constexpr uint8_t kKeepAliveTimeout = 0x8D;
inline constexpr uint8_t kSessionTakenOver = 0x8E;
inline constexpr uint8_t kTopicNameInvalid = 0x90;
inline constexpr uint8_t kReceiveMaximumExceeded = 0x93;
inline constexpr uint8_t kTopicAliasInvalid = 0x94;
inline constexpr uint8_t kPacketTooLarge = 0x95;
inline constexpr uint8_t kQuotaExceeded = 0x97;
inline constexpr uint8_t kPayloadFormatInvalid = 0x99;
inline constexpr uint8_t kRetainNotSupported = 0x9A;
inline constexpr uint8_t kQosNotSupported = 0x9B;
}  // namespace reason

// MQTT 5 properties. The ones Joule acts on are typed; `others` records the identifiers of
// the rest (validated and skipped). Empty for 3.1.1 packets.
struct Properties {
  std::optional<uint8_t> payload_format_indicator;                   // 0x01
  std::optional<uint32_t> message_expiry_interval;                   // 0x02
  std::optional<std::string> content_type;                           // 0x03
  std::optional<uint32_t> session_expiry_interval;                   // 0x11
  std::optional<std::string> assigned_client_id;                     // 0x12
  std::optional<uint16_t> server_keep_alive;                         // 0x13
  std::optional<std::string> reason_string;                          // 0x1F
  std::optional<uint16_t> receive_maximum;                           // 0x21
  std::optional<uint16_t> topic_alias_maximum;                       // 0x22
  std::optional<uint16_t> topic_alias;                               // 0x23
  std::optional<uint8_t> maximum_qos;                                // 0x24
  std::optional<uint8_t> retain_available;                           // 0x25
  std::optional<uint32_t> maximum_packet_size;                       // 0x27
  std::optional<uint8_t> wildcard_subscription_available;            // 0x28
  std::optional<uint8_t> subscription_identifier_available;          // 0x29
  std::optional<uint8_t> shared_subscription_available;              // 0x2A
  std::vector<std::pair<std::string, std::string>> user_properties;  // 0x26
  std::vector<uint32_t> subscription_identifiers;                    // 0x0B
  // Every other property (response topic, correlation data, auth method/data, …): its
  // identifier and its raw value bytes, in order.
  std::vector<std::pair<uint8_t, std::string>> others;

  bool empty() const { return *this == Properties{}; }
  bool operator==(const Properties&) const = default;
};

struct Will {
  uint8_t qos = 0;
  bool retain = false;
  Properties properties;  // 5
  std::string topic;
  std::string payload;
  bool operator==(const Will&) const = default;
};

struct Connect {
  ProtocolVersion version = ProtocolVersion::kV311;
  bool clean_start = true;
  uint16_t keep_alive = 0;  // seconds
  Properties properties;
  std::string client_id;
  std::optional<Will> will;
  std::optional<std::string> username;
  std::optional<std::string> password;  // binary data
  bool operator==(const Connect&) const = default;
};

struct Connack {
  bool session_present = false;
  uint8_t reason_code = 0;  // 3.1.1: the return code
  Properties properties;
  bool operator==(const Connack&) const = default;
};

struct Publish {
  bool dup = false;
  uint8_t qos = 0;
  bool retain = false;
  std::string topic;
  uint16_t packet_id = 0;  // QoS > 0 only
  Properties properties;
  std::string payload;
  bool operator==(const Publish&) const = default;
};

// PUBACK, PUBREC, PUBREL, PUBCOMP.
struct PublishResponse {
  uint16_t packet_id = 0;
  uint8_t reason_code = 0;
  Properties properties;
  bool operator==(const PublishResponse&) const = default;
};

struct Subscription {
  std::string filter;
  uint8_t options = 0;  // bits 0-1 QoS; 5: no local, retain as published, retain handling
  bool operator==(const Subscription&) const = default;
};

struct Subscribe {
  uint16_t packet_id = 0;
  Properties properties;
  std::vector<Subscription> subscriptions;
  bool operator==(const Subscribe&) const = default;
};

// SUBACK and UNSUBACK (3.1.1 UNSUBACK has no reason codes).
struct SubscribeAck {
  uint16_t packet_id = 0;
  Properties properties;
  std::vector<uint8_t> reason_codes;
  bool operator==(const SubscribeAck&) const = default;
};

struct Unsubscribe {
  uint16_t packet_id = 0;
  Properties properties;
  std::vector<std::string> filters;
  bool operator==(const Unsubscribe&) const = default;
};

// DISCONNECT and AUTH (and the empty PINGREQ / PINGRESP).
struct ReasonOnly {
  uint8_t reason_code = 0;
  Properties properties;
  bool operator==(const ReasonOnly&) const = default;
};

// One decoded packet: `type` says which member is meaningful (the others may hold stale
// values from an earlier packet decoded into the same object; == ignores them).
struct Packet {
  PacketType type = PacketType::kPingreq;
  Connect connect;
  Connack connack;
  Publish publish;
  PublishResponse publish_response;
  Subscribe subscribe;
  SubscribeAck subscribe_ack;
  Unsubscribe unsubscribe;
  ReasonOnly reason_only;
  bool operator==(const Packet& other) const;
};

struct DecodeError {
  uint8_t reason_code = reason::kMalformedPacket;  // 0x81, 0x82, 0x84 or 0x95
  std::string message;
  // An error in a first packet (CONNECT), including one too large to decode (0x95): the
  // protocol version that its variable header names (kUnknown if none or unsupported), so
  // that a server can answer an MQTT 5 client with a CONNACK rather than just closing.
  ProtocolVersion connect_version = ProtocolVersion::kUnknown;
};

struct DecoderOptions {
  // Largest accepted packet, fixed header included (MQTT 5 "Maximum Packet Size").
  uint32_t max_packet_size = 268'435'460;
  // kUnknown: only a CONNECT is accepted first, and it sets the version (a server).
  ProtocolVersion version = ProtocolVersion::kUnknown;
  // Largest accepted first packet (the CONNECT, before anyone is authenticated): its
  // strings are at most 64 KiB each, so a peer that announces megabytes is refused before
  // the server buffers them (found by a black-box test: 4 MiB held per unauthenticated
  // connection).
  uint32_t max_connect_packet_size = 256u << 10;
  // MQTT 3.1.1 only, after the CONNECT: a PUBLISH larger than max_packet_size is not an
  // error but skipped. Next() returns kOversizedPublish with its fixed and variable header
  // decoded (topic, QoS, packet id, DUP; empty payload) and the packet's size in
  // oversized_size(); its payload bytes are then dropped as they are fed, never buffered.
  // For a client (the bridge), which cannot refuse what its broker sends: 3.1.1 has no
  // Maximum Packet Size, and closing the connection makes the broker redeliver the same
  // message on every reconnect (found by a black-box test: one 5 MiB message stopped the
  // bridge for good).
  bool skip_oversized_publish = false;
};

class Decoder {
 public:
  // kOversizedPublish: only with DecoderOptions::skip_oversized_publish.
  enum class State { kPacket, kNeedMore, kError, kOversizedPublish };

  explicit Decoder(DecoderOptions options = {});

  // Appends stream bytes.
  void Feed(std::string_view bytes);
  // Decodes the next whole packet, if buffered. After kError, always kError.
  State Next(Packet* out);

  ProtocolVersion version() const { return options_.version; }
  const DecodeError& error() const { return error_; }
  // Bytes buffered but not yet decoded.
  size_t buffered() const { return buffer_.size() - pos_; }
  // The size (fixed header included) of the PUBLISH of the last kOversizedPublish.
  uint64_t oversized_size() const { return oversized_size_; }

 private:
  State Fail(uint8_t reason_code, std::string message);
  State SkipPublish(std::string_view in, size_t header, uint64_t total, Packet* out);

  DecoderOptions options_;
  std::string buffer_;
  size_t pos_ = 0;
  uint64_t skip_remaining_ = 0;  // payload bytes of an oversized PUBLISH still to drop
  uint64_t oversized_size_ = 0;
  bool failed_ = false;
  DecodeError error_;
};

// Decodes the body (variable header + payload) of one packet whose fixed-header byte is
// `first_byte`. For tests and the fuzzer; the Decoder uses it. On failure returns false and
// fills *error. `*version` is read, and set by a CONNECT when kUnknown.
bool DecodePacketBody(uint8_t first_byte, std::string_view body, ProtocolVersion* version,
                      Packet* out, DecodeError* error);

// Appends the encoding of `packet` (the member selected by packet.type) for `version`.
// REQUIRES: the packet is valid for that version (fields within their ranges).
void Encode(const Packet& packet, ProtocolVersion version, std::string* out);

// Appends a PUBACK without properties: the bytes Encode writes for it (reason_code 0, or
// any 3.1.1 PUBACK: no reason byte).
void AppendPuback(uint16_t packet_id, uint8_t reason_code, std::string* out);

// Size of the encoding, without building it.
size_t EncodedSize(const Packet& packet, ProtocolVersion version);

// Variable Byte Integer helpers. Decode returns the number of bytes consumed, 0 when more
// bytes are needed, -1 when malformed (5 bytes, non-minimal).
void EncodeVarint(uint32_t value, std::string* out);
int DecodeVarint(std::string_view in, uint32_t* value);

// Well-formed UTF-8 without U+0000 (an MQTT "UTF-8 Encoded String").
bool ValidMqttUtf8(std::string_view s);

}  // namespace joule::net::mqtt

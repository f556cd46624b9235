// The only translation unit of joule_mqtt that includes Asio: the acceptor, connections,
// keep-alive, session takeover and ordered PUBACKs (docs/formats/mqtt.md §3).
//
// A connection runs on its own strand. Its life:
//   accepted --CONNECT (within connect_timeout)--> connected --DISCONNECT / error--> closed
// Publish outcomes arrive from any thread (the log's writer thread) and are posted to the
// strand; `inflight_` holds the QoS 1 publishes in arrival order, and PUBACKs leave from its
// front only, so they go out in packet order.
#include "net/mqtt/listener.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <deque>
#include <mutex>
#include <optional>
#include <random>
#include <unordered_map>
#include <utility>  // before Asio (Boost 1.74 + GCC 12)
#include <vector>

#include "common/logging.h"
#include "net/accept_loop.h"
#include "net/tls_stream.h"
#include "net/url.h"

namespace joule::net::mqtt {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;
using SteadyClock = std::chrono::steady_clock;

namespace {

constexpr size_t kReadChunk = 64 * 1024;
// Answers (PUBACKs) waiting unsent above which a connection is not read further.
constexpr size_t kMaxUnsentBytes = 64 * 1024;
// After a refusal or a DISCONNECT the connection lingers: its sending side is shut down and
// what the client still sends is read and discarded, for at most this long and this much,
// before the socket is closed (a close with unread input sends a reset, which can discard
// the CONNACK or DISCONNECT still in flight to the client).
constexpr auto kLingerTimeout = std::chrono::seconds(2);
constexpr size_t kLingerMaxBytes = 4 << 20;
// The `seq` of a QoS 0 publish's outcome (a QoS 1 publish's is its place in `inflight_`).
constexpr uint64_t kQos0Seq = UINT64_MAX;

// An outcome the handler gives while OnPublish is still running (a refusal it decides at
// once: another device's topic, a revoked token, the rate limit) is taken on the spot, not
// posted: the packets read after it in the same buffer must not be handed on before it is
// known whether it ends the connection (found by a black-box test: publishes pipelined
// after a refused one were stored and counted as accepted, without a PUBACK). Set around
// one OnPublish call on the connection's thread; another thread's call of `done` (the
// log's writer) never sees it.
struct SyncOutcome {
  const void* connection = nullptr;
  uint64_t seq = 0;
  std::optional<PublishOutcome> outcome;
};
thread_local SyncOutcome* t_sync_outcome = nullptr;

// Takes `outcome` as the synchronous answer of the OnPublish call running on this thread
// for (connection, seq), if it is that call's.
bool TakeSyncOutcome(const void* connection, uint64_t seq, PublishOutcome& outcome) {
  SyncOutcome* sync = t_sync_outcome;
  if (sync == nullptr || sync->connection != connection || sync->seq != seq ||
      sync->outcome.has_value()) {
    return false;
  }
  sync->outcome = std::move(outcome);
  return true;
}

// "joule-" and 32 random bits in hex, then "-": the part of the client ids that one run
// of the listener assigns (ClaimAssignedSession), different from any other run's.
std::string AssignedIdPrefix() {
  std::random_device random;
  const uint32_t run = random();
  static constexpr char kHex[] = "0123456789abcdef";
  std::string prefix = "joule-";
  for (int shift = 28; shift >= 0; shift -= 4) prefix += kHex[(run >> shift) & 0xF];
  prefix += '-';
  return prefix;
}

// MQTT 5 CONNACK reason → 3.1.1 return code.
uint8_t V311ReturnCode(uint8_t reason_code) {
  switch (reason_code) {
    case reason::kSuccess:
      return 0;
    case reason::kUnsupportedProtocolVersion:
      return 1;
    case reason::kClientIdentifierNotValid:
      return 2;
    case reason::kBadUserNameOrPassword:
      return 4;
    case reason::kNotAuthorized:
      return 5;
    default:
      return 3;  // server unavailable
  }
}

}  // namespace

class MqttConnection;

// ---------------------------------------------------------------------------------------
// MqttListener::Impl

class MqttListener::Impl : public std::enable_shared_from_this<Impl> {
 public:
  Impl(asio::io_context& io, MqttListenerOptions options, SessionHandler* handler,
       MetricsRegistry* metrics)
      : io_(io),
        options_(std::move(options)),
        handler_(handler),
        metrics_(metrics),
        accept_(io, options_.connection_contexts) {
    if (metrics_ != nullptr) {
      connections_gauge_ = metrics_->GetGauge("joule_mqtt_connections", "Open MQTT connections.");
      publishes_qos0_ = metrics_->GetCounter(
          "joule_mqtt_publishes_total", "MQTT PUBLISH packets received, by QoS.", {{"qos", "0"}});
      publishes_qos1_ = metrics_->GetCounter(
          "joule_mqtt_publishes_total", "MQTT PUBLISH packets received, by QoS.", {{"qos", "1"}});
      publishes_qos2_ = metrics_->GetCounter(
          "joule_mqtt_publishes_total", "MQTT PUBLISH packets received, by QoS.", {{"qos", "2"}});
      puback_latency_ = metrics_->GetHistogram("joule_mqtt_puback_latency_seconds",
                                               "MQTT PUBLISH (QoS 1) received to PUBACK queued.",
                                               Histogram::LatencyBuckets());
      for (const char* r :
           {"protocol_error", "packet_too_large", "keepalive", "takeover", "qos_not_supported",
            "not_authorized", "unavailable", "connect_timeout", "bad_credentials", "shutdown",
            "tls_handshake", "max_connections", "rate_limited", "bad_auth_method",
            "invalid_client_id", "retain_not_supported"}) {
        disconnects_.emplace(
            r, metrics_->GetCounter("joule_mqtt_disconnects_total",
                                    "MQTT connections closed by the server, by reason.",
                                    {{"reason", r}}));
      }
      subscribe_refused_ = metrics_->GetCounter(
          "joule_mqtt_subscribe_refused_total",
          "MQTT topic filters refused in a SUBACK (the listener takes no subscriptions).");
    }
  }

  Status Start();
  void Stop();
  void Shutdown(std::function<void()> done);

  // Called by connections (on their strands).
  void Unregister(uint64_t id, const std::string& session_key);
  // Makes `id` the owner of `client_id`; the previous owner, if any, is taken over.
  void ClaimSession(uint64_t id, const std::string& session_key);
  // For a CONNECT with an empty client id: a client id no live session of `principal`
  // holds, claimed for `id`; sets *session_key. Assigned ids are "joule-<run>-<n>": <run>
  // is drawn at random when the listener is made, so an id assigned by an earlier run of
  // the server (which a client may reuse: MQTT 5 §3.2.2.3.7) is not handed out again, and
  // <n> skips what a client chose itself (MQTT-3.1.3-6: assigned ids are unique).
  std::string ClaimAssignedSession(uint64_t id, const std::string& principal,
                                   std::string* session_key);
  void CountDisconnect(const char* reason) {
    auto it = disconnects_.find(reason);
    if (it != disconnects_.end()) it->second->Inc();
  }
  void CountSubscribeRefused(size_t filters) {
    if (subscribe_refused_ != nullptr) subscribe_refused_->Inc(filters);
  }
  void CountPublish(uint8_t qos) {
    Counter* c = qos == 0 ? publishes_qos0_ : qos == 1 ? publishes_qos1_ : publishes_qos2_;
    if (c != nullptr) c->Inc();
  }
  void ObservePuback(SteadyClock::duration d) {
    if (puback_latency_ != nullptr) {
      puback_latency_->Observe(std::chrono::duration<double>(d).count());
    }
  }

  const MqttListenerOptions& options() const { return options_; }
  SessionHandler* handler() const { return handler_; }
  uint16_t port() const { return port_.load(std::memory_order_acquire); }
  size_t connection_count() const {
    std::lock_guard<std::mutex> lock(mu_);
    return connections_.size();
  }

 private:
  void OnAccept(tcp::socket socket);
  std::vector<std::shared_ptr<MqttConnection>> LiveConnections();
  void FinishShutdown();

  asio::io_context& io_;
  const MqttListenerOptions options_;
  SessionHandler* const handler_;
  MetricsRegistry* const metrics_;

  AcceptLoop accept_;
  std::atomic<uint16_t> port_{0};
  const std::string assigned_id_prefix_ = AssignedIdPrefix();  // "joule-<8 hex digits>-"
  uint64_t assigned_ids_ = 0;                                  // guarded by mu_

  mutable std::mutex mu_;
  std::unordered_map<uint64_t, std::weak_ptr<MqttConnection>> connections_;  // guarded by mu_
  // principal + '\n' + client id → connection; guarded by mu_
  std::unordered_map<std::string, uint64_t> sessions_;
  uint64_t next_connection_id_ = 0;                   // guarded by mu_
  std::function<void()> shutdown_done_;               // guarded by mu_
  std::optional<asio::steady_timer> shutdown_timer_;  // on accept_'s strand

  Gauge* connections_gauge_ = nullptr;
  Counter* publishes_qos0_ = nullptr;
  Counter* publishes_qos1_ = nullptr;
  Counter* publishes_qos2_ = nullptr;
  Histogram* puback_latency_ = nullptr;
  Counter* subscribe_refused_ = nullptr;
  std::unordered_map<std::string_view, Counter*> disconnects_;  // fixed after construction

  friend class MqttConnection;
};

// ---------------------------------------------------------------------------------------
// MqttConnection

class MqttConnection : public std::enable_shared_from_this<MqttConnection> {
 public:
  MqttConnection(std::shared_ptr<MqttListener::Impl> server, tcp::socket socket, uint64_t id)
      : server_(std::move(server)),
        options_(server_->options()),
        id_(id),
        socket_(std::move(socket), options_.tls.get()),
        executor_(socket_.get_executor()),
        timer_(executor_),
        decoder_(DecoderOptions{options_.max_packet_size, ProtocolVersion::kUnknown}) {
    error_code ec;
    tcp::endpoint peer = socket_.socket().remote_endpoint(ec);
    if (!ec) remote_address_ = peer.address().to_string();
  }

  ~MqttConnection() { Unregister(); }

  const asio::any_io_executor& executor() const { return executor_; }

  void Start() {
    asio::post(executor(), [self = shared_from_this()] {
      self->deadline_ =
          SteadyClock::now() + std::chrono::nanoseconds(self->options_.connect_timeout_ns);
      self->ArmTimer();  // the connect timeout covers the TLS handshake too
      if (!self->socket_.is_tls()) {
        self->StartRead();
        return;
      }
      self->socket_.async_handshake([self](error_code ec) {
        if (self->closed_) return;
        if (ec) {
          self->server_->CountDisconnect("tls_handshake");
          self->Close();
          return;
        }
        self->StartRead();
      });
    });
  }

  // Posted by the server.
  void TakeOver() {
    if (closed_) return;
    server_->CountDisconnect("takeover");
    DisconnectWith(reason::kSessionTakenOver);
  }
  // Posted by the server. Unless `at_once`, the QoS 1 publishes being made durable are
  // answered first (their PUBACKs, then the DISCONNECT), and nothing more is read meanwhile.
  void ServerShutdown(bool at_once) {
    if (closed_ || closing_) return;
    if (!at_once && connected_ && !inflight_.empty()) {
      draining_ = true;
      return;
    }
    Disconnect("shutdown", reason::kServerShuttingDown);
  }

 private:
  struct InFlight {
    uint16_t packet_id = 0;
    bool done = false;
    PublishOutcome outcome;
    SteadyClock::time_point received;
    // A QoS 0 publish refused in a way that ends the connection while QoS 1 publishes
    // before it were in flight: no PUBACK, the disconnect once those are answered.
    bool qos0 = false;
  };

  void Unregister() {
    if (!registered_) return;
    registered_ = false;
    server_->Unregister(id_, session_claimed_ ? session_key_ : std::string());
  }

  // --- reading

  void StartRead() {
    if (closed_ || closing_ || read_pending_ || Paused()) return;
    read_pending_ = true;
    socket_.async_read_some(
        asio::buffer(read_buffer_.data(), read_buffer_.size()),
        [self = shared_from_this()](error_code ec, size_t n) { self->OnRead(ec, n); });
  }

  void OnRead(error_code ec, size_t n) {
    read_pending_ = false;
    if (closed_) return;
    if (lingering_) {
      OnLingerRead(ec, n);
      return;
    }
    if (ec) {
      Close();  // peer closed or reset
      return;
    }
    decoder_.Feed(std::string_view(read_buffer_.data(), n));
    ProcessBuffered();
  }

  // Not read further while its publishes in flight are at receive_maximum, or while its
  // answers wait unsent (a client that does not read its PUBACKs: the kernel's send buffer
  // is full, and without this bound every further publish grew out_ — found by a
  // black-box test: 300 MB for 2 M unread PUBACKs). The keep-alive deadline still runs.
  bool Paused() const {
    return draining_ || ending_ || inflight_.size() >= options_.receive_maximum ||
           out_.size() + writing_.size() >= kMaxUnsentBytes;
  }

  void ProcessBuffered() {
    while (!closed_ && !closing_ && !Paused()) {
      Decoder::State state = decoder_.Next(&packet_);
      if (state == Decoder::State::kNeedMore) break;
      if (state == Decoder::State::kError) {
        OnDecodeError();
        return;
      }
      last_packet_ = SteadyClock::now();
      if (!connected_) {
        HandleConnect();
      } else {
        HandlePacket();
      }
    }
    StartRead();
  }

  void OnDecodeError() {
    const DecodeError& e = decoder_.error();
    const bool too_large = e.reason_code == reason::kPacketTooLarge;
    server_->CountDisconnect(too_large ? "packet_too_large" : "protocol_error");
    if (!connected_) {
      // A CONNACK where the version has a code for it, then close.
      Packet p;
      p.type = PacketType::kConnack;
      ProtocolVersion version = ProtocolVersion::kV311;
      if (e.reason_code == reason::kUnsupportedProtocolVersion) {
        p.connack.reason_code = 1;  // unacceptable protocol version (3.1.1 form)
      } else if (e.connect_version == ProtocolVersion::kV5) {
        // An MQTT 5 CONNECT over the first-packet limit, malformed or breaking the protocol
        // after its protocol level: CONNACK with the decoder's reason code (0x95, 0x81,
        // 0x82; found by a black-box test: all but 0x95 were just closed). 3.1.1 has no
        // code for these: just closed.
        p.connack.reason_code = e.reason_code;
        version = ProtocolVersion::kV5;
      } else {
        Close();
        return;
      }
      Send(p, version);
      CloseAfterWrite();
      return;
    }
    DisconnectWith(e.reason_code);
  }

  // --- CONNECT

  void HandleConnect() {
    // The decoder only lets a CONNECT through first.
    const Connect& c = packet_.connect;
    version_ = c.version;
    keep_alive_s_ = c.keep_alive;
    if (c.properties.maximum_packet_size) client_max_packet_ = *c.properties.maximum_packet_size;
    // Request Problem Information 0: no Reason String or User Property on any packet but
    // PUBLISH, CONNACK and DISCONNECT (MQTT 5 §3.1.2.11.7; found by a black-box test).
    for (const auto& [id, value] : c.properties.others) {
      if (id == 0x17 && value.size() == 1 && value[0] == 0) problem_information_ = false;
    }
    // Every refusal is counted under `reason` (found by a black-box test: the two the
    // listener decides itself, 0x8C and 0x85, were counted nowhere).
    auto refuse = [&](uint8_t reason_code, const char* reason) {
      server_->CountDisconnect(reason);
      Packet p;
      p.type = PacketType::kConnack;
      p.connack.reason_code = v5() ? reason_code : V311ReturnCode(reason_code);
      Send(p);
      CloseAfterWrite();
    };
    auto has_property = [&](uint8_t id) {
      return std::any_of(c.properties.others.begin(), c.properties.others.end(),
                         [id](const auto& o) { return o.first == id; });
    };
    if (has_property(0x15)) {
      // No enhanced authentication here.
      refuse(reason::kBadAuthenticationMethod, "bad_auth_method");
      return;
    }
    if (has_property(0x16)) {
      // Authentication Data without an Authentication Method (MQTT 5 §3.1.2.11.10; found by
      // a black-box test: it was accepted).
      refuse(reason::kProtocolError, "protocol_error");
      return;
    }
    if (v5() && c.will && c.will->retain) {
      // The CONNACK says Retain Available 0 (MQTT-3.2.2-13; found by a black-box test). In
      // 3.1.1, which cannot say it, Will Retain is ignored with the Will (never published).
      refuse(reason::kRetainNotSupported, "retain_not_supported");
      return;
    }
    if (v5() && c.will && c.will->qos > 1) {
      // The CONNACK says Maximum QoS 1 (MQTT-3.2.2-12; found by a black-box test: a Will of
      // QoS 2 was accepted). 3.1.1 cannot say it; the Will is never published anyway.
      refuse(reason::kQosNotSupported, "qos_not_supported");
      return;
    }
    client_id_ = c.client_id;
    const bool assign = client_id_.empty();
    if (assign && !v5() && !c.clean_start) {
      refuse(reason::kClientIdentifierNotValid, "invalid_client_id");
      return;
    }
    ConnectRequest request;
    request.version = version_;
    request.client_id = client_id_;
    request.username = c.username;
    request.password = c.password;
    request.remote_address = remote_address_;
    ConnectDecision decision = server_->handler()->OnConnect(request);
    if (decision.reason_code != reason::kSuccess) {
      // A credential that could not be checked (the metadata store unreachable) is no bad
      // password (found by a black-box test: it was counted as bad_credentials).
      refuse(decision.reason_code, decision.reason_code == reason::kServerUnavailable
                                       ? "unavailable"
                                       : "bad_credentials");
      return;
    }
    principal_ = std::move(decision.principal);
    credential_ = std::move(decision.credential);
    connected_ = true;
    session_claimed_ = true;
    // A session is the principal's client id: a client id reused by another device (or
    // user) opens its own session instead of taking the other's over and knocking it
    // offline (found by a black-box test).
    std::optional<std::string> assigned;
    if (assign) {
      client_id_ = server_->ClaimAssignedSession(id_, principal_, &session_key_);
      if (v5()) assigned = client_id_;
    } else {
      session_key_ = principal_ + '\n' + client_id_;
      server_->ClaimSession(id_, session_key_);
    }

    Packet p;
    p.type = PacketType::kConnack;
    // Publish-only sessions are stateless: present whenever the client asks to resume one,
    // so that it resends its unacknowledged QoS 1 publishes — but not for a client id
    // assigned just now, which no session can have had (MQTT-3.2.2-3; found by a black-box
    // test).
    p.connack.session_present = !c.clean_start && !assign;
    if (v5()) {
      Properties& props = p.connack.properties;
      props.maximum_packet_size = options_.max_packet_size;
      props.receive_maximum = options_.receive_maximum;
      props.topic_alias_maximum = options_.topic_alias_maximum;
      props.maximum_qos = 1;
      props.retain_available = 0;
      props.wildcard_subscription_available = 0;
      props.subscription_identifier_available = 0;
      props.shared_subscription_available = 0;
      props.assigned_client_id = assigned;
    }
    Send(p);
    aliases_.assign(options_.topic_alias_maximum + 1u, std::string());
    if (keep_alive_s_ > 0) {
      deadline_ = last_packet_ + std::chrono::milliseconds(keep_alive_s_ * 1500);
    } else {
      deadline_ = SteadyClock::time_point::max();
    }
    // The connect timeout's wait re-checks deadline_ when cancelled.
    if (timer_armed_) {
      timer_.cancel();
    } else {
      ArmTimer();
    }
  }

  // --- after CONNECT

  void HandlePacket() {
    if (keep_alive_s_ > 0) {
      deadline_ = last_packet_ + std::chrono::milliseconds(keep_alive_s_ * 1500);
    }
    switch (packet_.type) {
      case PacketType::kPublish:
        HandlePublish();
        return;
      case PacketType::kSubscribe: {
        Packet p;
        p.type = PacketType::kSuback;
        p.subscribe_ack.packet_id = packet_.subscribe.packet_id;
        p.subscribe_ack.reason_codes.assign(packet_.subscribe.subscriptions.size(),
                                            v5() ? reason::kNotAuthorized : 0x80);
        if (v5()) p.subscribe_ack.properties.reason_string = "subscriptions are not supported";
        server_->CountSubscribeRefused(packet_.subscribe.subscriptions.size());
        Send(p);
        return;
      }
      case PacketType::kUnsubscribe: {
        Packet p;
        p.type = PacketType::kUnsuback;
        p.subscribe_ack.packet_id = packet_.unsubscribe.packet_id;
        if (v5()) {
          p.subscribe_ack.reason_codes.assign(packet_.unsubscribe.filters.size(),
                                              reason::kNoSubscriptionExisted);
        }
        Send(p);
        return;
      }
      case PacketType::kPingreq: {
        Packet p;
        p.type = PacketType::kPingresp;
        Send(p);
        return;
      }
      case PacketType::kDisconnect:
        CloseAfterWrite();
        return;
      default:
        // PUBACK/PUBREC/PUBREL/PUBCOMP (we never publish, QoS 2 is refused), AUTH without
        // an authentication method, server-to-client packets.
        server_->CountDisconnect("protocol_error");
        DisconnectWith(reason::kProtocolError);
        return;
    }
  }

  void HandlePublish() {
    Publish& pub = packet_.publish;
    server_->CountPublish(pub.qos);
    if (pub.qos == 2) {
      server_->CountDisconnect("qos_not_supported");
      DisconnectWith(reason::kQosNotSupported);
      return;
    }
    if (pub.retain && v5()) {
      // Retain Available 0 in the CONNACK (MQTT 5 §3.3.1.3; found by a black-box test: it
      // was taken). 3.1.1 has no way to say it: RETAIN is ignored there.
      server_->CountDisconnect("retain_not_supported");
      DisconnectWith(reason::kRetainNotSupported);
      return;
    }
    if (!pub.properties.subscription_identifiers.empty()) {
      // Only a server's PUBLISH may carry one (MQTT-3.3.4-6; found by a black-box test: it
      // was accepted). The codec cannot tell: the bridge's subscriber receives them.
      server_->CountDisconnect("protocol_error");
      DisconnectWith(reason::kProtocolError);
      return;
    }
    if (v5() && pub.properties.topic_alias) {
      const uint16_t alias = *pub.properties.topic_alias;
      if (alias == 0 || alias > options_.topic_alias_maximum) {
        server_->CountDisconnect("protocol_error");
        DisconnectWith(reason::kTopicAliasInvalid);
        return;
      }
      if (pub.topic.empty()) {
        if (aliases_[alias].empty()) {
          server_->CountDisconnect("protocol_error");
          DisconnectWith(reason::kProtocolError);
          return;
        }
        pub.topic = aliases_[alias];
      } else {
        aliases_[alias] = pub.topic;
      }
    }
    PublishRequest request;
    request.version = version_;
    request.principal = &principal_;
    request.credential = &credential_;
    request.topic = pub.topic;
    request.payload = pub.payload;
    request.qos = pub.qos;
    request.payload_format_indicator = pub.properties.payload_format_indicator;
    std::weak_ptr<MqttConnection> weak = shared_from_this();
    const void* const self_id = this;
    const uint64_t seq = pub.qos == 0 ? kQos0Seq : inflight_base_ + inflight_.size();
    if (pub.qos == 1) {
      inflight_.push_back(InFlight{pub.packet_id, false, {}, SteadyClock::now()});
    }
    SyncOutcome sync{this, seq, std::nullopt};
    SyncOutcome* const outer = t_sync_outcome;
    t_sync_outcome = &sync;
    server_->handler()->OnPublish(request, [weak, self_id, seq](PublishOutcome outcome) {
      if (TakeSyncOutcome(self_id, seq, outcome)) return;
      // A connection gone meanwhile has nobody to answer (the executor is the connection's).
      if (auto self = weak.lock()) {
        asio::post(self->executor_, [self, seq, outcome = std::move(outcome)]() mutable {
          if (seq == kQos0Seq) {
            self->OnQos0Done(outcome);
          } else {
            self->OnQos1Done(seq, std::move(outcome));
          }
        });
      }
    });
    t_sync_outcome = outer;
    if (!sync.outcome) return;
    if (seq != kQos0Seq) {
      OnQos1Done(seq, std::move(*sync.outcome));
    } else if (EndsConnection(*sync.outcome, 0)) {
      if (inflight_.empty()) {
        OnQos0Done(*sync.outcome);
      } else {
        // After the PUBACKs of the QoS 1 publishes before it (they were stored).
        InFlight marker{0, true, std::move(*sync.outcome), SteadyClock::now()};
        marker.qos0 = true;
        inflight_.push_back(std::move(marker));
        ending_ = true;
      }
    }
  }

  // Whether `outcome` of a publish of `qos` ends the connection once answered: nothing
  // read after that publish is handed on (ending_).
  bool EndsConnection(const PublishOutcome& outcome, uint8_t qos) const {
    const uint8_t code = outcome.reason_code;
    if (qos == 0) return code == reason::kNotAuthorized;
    if (v5()) return outcome.disconnect;
    return code == reason::kNotAuthorized ||
           (code != reason::kSuccess && code != reason::kPayloadFormatInvalid &&
            !outcome.permanent);
  }

  void OnQos0Done(const PublishOutcome& outcome) {
    if (closed_ || closing_) return;
    if (outcome.reason_code == reason::kNotAuthorized) {
      server_->CountDisconnect("not_authorized");
      DisconnectWith(reason::kNotAuthorized);
    }
  }

  void OnQos1Done(uint64_t seq, PublishOutcome outcome) {
    if (closed_ || seq < inflight_base_ || seq - inflight_base_ >= inflight_.size()) return;
    InFlight& f = inflight_[seq - inflight_base_];
    f.done = true;
    f.outcome = std::move(outcome);
    if (EndsConnection(f.outcome, 1)) ending_ = true;
    const bool was_paused = Paused();
    while (!inflight_.empty() && inflight_.front().done && !closed_ && !closing_) {
      InFlight front = std::move(inflight_.front());
      inflight_.pop_front();
      ++inflight_base_;
      SendPublishOutcome(front);
    }
    if (was_paused && !Paused() && !closed_ && !closing_) {
      // Resume: packets may already wait in the decoder.
      asio::post(executor(), [self = shared_from_this()] { self->ProcessBuffered(); });
    }
    if (draining_ && inflight_.empty()) Disconnect("shutdown", reason::kServerShuttingDown);
  }

  void SendPublishOutcome(const InFlight& f) {
    if (f.qos0) {
      OnQos0Done(f.outcome);
      return;
    }
    const uint8_t code = f.outcome.reason_code;
    if (!v5()) {
      // 3.1.1 has no negative PUBACK (docs/formats/mqtt.md §4).
      // Closed once the PUBACKs queued before are written (a Close here could drop them).
      if (code == reason::kNotAuthorized) {
        server_->CountDisconnect("not_authorized");
        CloseAfterWrite();
        return;
      }
      if (code != reason::kSuccess && code != reason::kPayloadFormatInvalid &&
          !f.outcome.permanent) {
        // Found by a black-box test: the rate limit was counted as "unavailable", which
        // mqtt.md defines as the metadata store being unreachable.
        server_->CountDisconnect(f.outcome.rate_limited ? "rate_limited" : "unavailable");
        CloseAfterWrite();
        return;
      }
    }
    server_->ObservePuback(SteadyClock::now() - f.received);
    if (!v5() || f.outcome.reason_string.empty() || !problem_information_) {
      // No properties: the packet's 4 or 5 bytes, as Encode would write them (this runs
      // once per message).
      if (!closed_) {
        AppendPuback(f.packet_id, v5() ? code : reason::kSuccess, &out_);
        if (!write_pending_) DoWrite();
      }
    } else {
      Packet p;
      p.type = PacketType::kPuback;
      p.publish_response.packet_id = f.packet_id;
      p.publish_response.reason_code = code;
      p.publish_response.properties.reason_string = f.outcome.reason_string;
      Send(p);
    }
    if (f.outcome.disconnect) {
      server_->CountDisconnect("not_authorized");
      DisconnectWith(code);
    }
  }

  // --- writing

  bool v5() const { return version_ == ProtocolVersion::kV5; }

  void Send(Packet& p) { Send(p, version_); }
  void Send(Packet& p, ProtocolVersion version) {
    if (closed_) return;
    if (!problem_information_ && p.type != PacketType::kConnack &&
        p.type != PacketType::kDisconnect && p.type != PacketType::kPublish) {
      p.publish_response.properties.reason_string.reset();
      p.publish_response.properties.user_properties.clear();
      p.subscribe_ack.properties.reason_string.reset();
      p.subscribe_ack.properties.user_properties.clear();
      p.reason_only.properties.reason_string.reset();
      p.reason_only.properties.user_properties.clear();
    }
    const size_t before = out_.size();
    Encode(p, version, &out_);
    if (out_.size() - before > client_max_packet_) {
      // Drop the optional properties (MQTT 5 §3.1.2.11.4), then send the bare packet.
      out_.resize(before);
      p.publish_response.properties.reason_string.reset();
      p.publish_response.properties.user_properties.clear();
      p.subscribe_ack.properties.reason_string.reset();
      p.reason_only.properties.reason_string.reset();
      p.connack.properties.reason_string.reset();
      Encode(p, version, &out_);
    }
    if (!write_pending_) DoWrite();
  }

  void DoWrite() {
    if (closed_ || out_.empty()) return;
    write_pending_ = true;
    writing_.clear();
    writing_.swap(out_);
    asio::async_write(socket_, asio::buffer(writing_),
                      [self = shared_from_this()](error_code ec, size_t) { self->OnWrite(ec); });
  }

  void OnWrite(error_code ec) {
    write_pending_ = false;
    if (closed_) return;
    if (ec) {
      Close();
      return;
    }
    const bool was_paused = Paused();
    writing_.clear();
    if (!out_.empty()) {
      DoWrite();
    } else if (closing_) {
      Linger();
    }
    if (was_paused && !Paused() && !closing_) ProcessBuffered();  // resume reading
  }

  // Counted under `why`; MQTT 5 gets DISCONNECT with `reason_code`. What is queued (PUBACKs)
  // is written first.
  void Disconnect(const char* why, uint8_t reason_code) {
    if (closed_ || closing_) return;
    server_->CountDisconnect(why);
    if (v5() && connected_) {
      DisconnectWith(reason_code);
    } else {
      CloseAfterWrite();
    }
  }

  // MQTT 5: DISCONNECT with `reason_code`, then close; 3.1.1: close. Either once what is
  // queued (PUBACKs) is written (found by a black-box test: a 3.1.1 connection closed at
  // once lost the PUBACK just queued for the publish before the refused one).
  void DisconnectWith(uint8_t reason_code) {
    if (closed_ || closing_) return;
    if (v5() && connected_) {
      Packet p;
      p.type = PacketType::kDisconnect;
      p.reason_only.reason_code = reason_code;
      Send(p);
    }
    CloseAfterWrite();
  }

  void CloseAfterWrite() {
    if (closed_) return;
    closing_ = true;
    if (!write_pending_) Linger();
  }

  // What was sent is on its way: the sending side is shut down (the client reads it, then
  // end of stream) and the client's further input is drained until it closes, or for
  // kLingerTimeout / kLingerMaxBytes, then the socket is closed (http_server.cc does the
  // same for error responses). The connection no longer counts as a session.
  void Linger() {
    if (closed_ || lingering_) return;
    lingering_ = true;
    closing_ = true;
    error_code ec;
    socket_.socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec) {
      Close();
      return;
    }
    inflight_.clear();
    Unregister();
    deadline_ = SteadyClock::now() + kLingerTimeout;
    if (timer_armed_) {
      timer_.cancel();  // its handler re-arms for the new deadline
    } else {
      ArmTimer();
    }
    LingerRead();
  }
  void LingerRead() {
    if (closed_ || read_pending_) return;  // a read in flight ends in OnLingerRead
    read_pending_ = true;
    // The raw socket: what a TLS client still sends is discarded undecrypted.
    socket_.socket().async_read_some(asio::buffer(read_buffer_.data(), read_buffer_.size()),
                                     [self = shared_from_this()](error_code ec, size_t n) {
                                       self->read_pending_ = false;
                                       self->OnLingerRead(ec, n);
                                     });
  }
  void OnLingerRead(error_code ec, size_t n) {
    if (closed_) return;
    lingered_bytes_ += n;
    if (ec || lingered_bytes_ > kLingerMaxBytes) {
      Close();
      return;
    }
    LingerRead();
  }

  void Close() {
    if (closed_) return;
    closed_ = true;
    closing_ = true;
    error_code ec;
    socket_.socket().shutdown(tcp::socket::shutdown_both, ec);
    socket_.close();  // TLS: no close_notify (MQTT ends sessions with DISCONNECT)
    timer_.cancel();
    inflight_.clear();
    Unregister();
  }

  // --- timers

  void ArmTimer() {
    if (closed_) return;
    if (deadline_ == SteadyClock::time_point::max()) {
      timer_.cancel();
      return;
    }
    if (timer_armed_) return;  // it re-checks deadline_ when it fires
    timer_armed_ = true;
    timer_.expires_at(deadline_);
    timer_.async_wait([self = shared_from_this()](error_code ec) { self->OnTimer(ec); });
  }

  void OnTimer(error_code ec) {
    timer_armed_ = false;
    if (closed_) return;
    if (lingering_) {
      if (SteadyClock::now() >= deadline_) {
        Close();
      } else {
        ArmTimer();
      }
      return;
    }
    if (ec == asio::error::operation_aborted && deadline_ == SteadyClock::time_point::max()) {
      return;
    }
    if (SteadyClock::now() >= deadline_) {
      if (!connected_) {
        server_->CountDisconnect("connect_timeout");
        Close();
      } else {
        server_->CountDisconnect("keepalive");
        DisconnectWith(reason::kKeepAliveTimeout);
      }
      return;
    }
    ArmTimer();
  }

  const std::shared_ptr<MqttListener::Impl> server_;
  const MqttListenerOptions& options_;
  const uint64_t id_;
  MaybeTlsStream socket_;                 // plain TCP, or TLS when the listener has a TlsContext
  const asio::any_io_executor executor_;  // the socket's (the connection's strand)
  asio::steady_timer timer_;
  Decoder decoder_;
  Packet packet_;  // the packet being handled (reused)
  std::array<char, kReadChunk> read_buffer_;
  std::string remote_address_;

  bool registered_ = true;
  bool read_pending_ = false;
  bool write_pending_ = false;
  bool closing_ = false;    // no more reading; close once the output is written
  bool draining_ = false;   // server shutdown: answering what is in flight, reading nothing
  bool ending_ = false;     // a publish's answer ends the connection: nothing more is read
  bool lingering_ = false;  // written; draining the client's input before closing (Linger)
  size_t lingered_bytes_ = 0;
  bool closed_ = false;
  bool connected_ = false;
  bool session_claimed_ = false;
  std::string session_key_;  // principal + '\n' + client id
  bool timer_armed_ = false;

  ProtocolVersion version_ = ProtocolVersion::kV311;
  std::string client_id_;
  std::string principal_;
  std::string credential_;
  uint16_t keep_alive_s_ = 0;
  uint32_t client_max_packet_ = UINT32_MAX;
  bool problem_information_ = true;   // the client's Request Problem Information
  std::vector<std::string> aliases_;  // index = topic alias
  SteadyClock::time_point last_packet_ = SteadyClock::now();
  SteadyClock::time_point deadline_ = SteadyClock::time_point::max();

  std::deque<InFlight> inflight_;
  uint64_t inflight_base_ = 0;  // sequence number of inflight_.front()

  std::string out_;
  std::string writing_;
};

// ---------------------------------------------------------------------------------------
// MqttListener::Impl

Status MqttListener::Impl::Start() {
  uint16_t port = 0;
  // Out of file descriptors, waiting clients are closed at once (net/accept_loop.h), as
  // over max_connections, instead of waiting unanswered.
  accept_.SetShedResponse(std::string(), [this] { CountDisconnect("max_connections"); });
  JOULE_RETURN_IF_ERROR(accept_.Start(options_.listen, &port, shared_from_this(),
                                      [this](tcp::socket socket) { OnAccept(std::move(socket)); }));
  port_.store(port, std::memory_order_release);
  return Status::Ok();
}

// On the accept loop's strand (net/accept_loop.h), for every accepted connection.
void MqttListener::Impl::OnAccept(tcp::socket socket) {
  std::shared_ptr<MqttConnection> connection;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (connections_.size() < options_.max_connections) {
      const uint64_t id = next_connection_id_++;
      connection = std::make_shared<MqttConnection>(shared_from_this(), std::move(socket), id);
      connections_.emplace(id, connection);
    }
  }
  if (connection) {
    if (connections_gauge_ != nullptr) connections_gauge_->Add(1);
    connection->Start();
  } else {
    CountDisconnect("max_connections");
    error_code ignored;
    socket.close(ignored);
  }
}

void MqttListener::Impl::Unregister(uint64_t id, const std::string& client_id) {
  std::function<void()> done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (connections_.erase(id) == 0) return;
    if (!client_id.empty()) {
      auto it = sessions_.find(client_id);
      if (it != sessions_.end() && it->second == id) sessions_.erase(it);
    }
    if (connections_.empty() && shutdown_done_) done = std::move(shutdown_done_);
  }
  if (connections_gauge_ != nullptr) connections_gauge_->Add(-1);
  if (done) {
    asio::post(accept_.strand(), [self = shared_from_this()] {
      if (self->shutdown_timer_) self->shutdown_timer_->cancel();
    });
    asio::post(io_, std::move(done));
  }
}

void MqttListener::Impl::ClaimSession(uint64_t id, const std::string& client_id) {
  std::shared_ptr<MqttConnection> previous;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto [it, inserted] = sessions_.try_emplace(client_id, id);
    if (!inserted && it->second != id) {
      auto c = connections_.find(it->second);
      if (c != connections_.end()) previous = c->second.lock();
      it->second = id;
    }
  }
  if (previous) {
    asio::post(previous->executor(), [previous] { previous->TakeOver(); });
  }
}

std::string MqttListener::Impl::ClaimAssignedSession(uint64_t id, const std::string& principal,
                                                     std::string* session_key) {
  std::lock_guard<std::mutex> lock(mu_);
  while (true) {
    std::string client_id = assigned_id_prefix_ + std::to_string(++assigned_ids_);
    *session_key = principal + '\n' + client_id;
    if (sessions_.try_emplace(*session_key, id).second) return client_id;
  }
}

std::vector<std::shared_ptr<MqttConnection>> MqttListener::Impl::LiveConnections() {
  std::vector<std::shared_ptr<MqttConnection>> live;
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [id, weak] : connections_) {
    if (auto c = weak.lock()) live.push_back(std::move(c));
  }
  return live;
}

void MqttListener::Impl::Stop() {
  if (!accept_.Stop(shared_from_this())) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    shutdown_done_ = nullptr;
  }
  for (auto& c : LiveConnections()) {
    asio::post(c->executor(), [c] { c->ServerShutdown(/*at_once=*/true); });
  }
}

void MqttListener::Impl::Shutdown(std::function<void()> done) {
  if (!accept_.Stop(shared_from_this())) {
    if (done) asio::post(io_, std::move(done));
    return;
  }
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
  // The timer first: the last connection to go cancels it (Unregister, on the same strand).
  asio::post(accept_.strand(), [self = shared_from_this()] {
    self->shutdown_timer_.emplace(self->accept_.strand());
    self->shutdown_timer_->expires_after(
        std::chrono::nanoseconds(self->options_.shutdown_timeout_ns));
    self->shutdown_timer_->async_wait([self](error_code ec) {
      if (!ec) self->FinishShutdown();
    });
  });
  for (auto& c : LiveConnections()) {
    asio::post(c->executor(), [c] { c->ServerShutdown(/*at_once=*/false); });
  }
}

// The shutdown timeout passed: what is still in flight is left to the clients' resend.
void MqttListener::Impl::FinishShutdown() {
  std::function<void()> done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    done = std::move(shutdown_done_);
    shutdown_done_ = nullptr;
  }
  if (!done) return;
  auto live = LiveConnections();
  logging::Warn("mqtt shutdown timed out; disconnecting remaining connections",
                {{"connections", std::to_string(live.size())}});
  for (auto& c : live) {
    asio::post(c->executor(), [c] { c->ServerShutdown(/*at_once=*/true); });
  }
  asio::post(io_, std::move(done));
}

// ---------------------------------------------------------------------------------------
// MqttListener

MqttListener::MqttListener(asio::io_context& io, MqttListenerOptions options,
                           SessionHandler* handler, MetricsRegistry* metrics)
    : impl_(std::make_shared<Impl>(io, std::move(options), handler, metrics)) {}

MqttListener::~MqttListener() { impl_->Stop(); }

Status MqttListener::Start() { return impl_->Start(); }
uint16_t MqttListener::port() const { return impl_->port(); }
void MqttListener::Stop() { impl_->Stop(); }
void MqttListener::Shutdown(std::function<void()> done) { impl_->Shutdown(std::move(done)); }
size_t MqttListener::connection_count() const { return impl_->connection_count(); }

}  // namespace joule::net::mqtt

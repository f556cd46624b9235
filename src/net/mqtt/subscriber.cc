// MqttSubscriber on Asio (docs/formats/mqtt.md §6). One strand; `epoch_` numbers the
// connection attempts, so completions of an older socket are recognised and ignored.
//
// With mqtts:// every attempt gets a fresh ssl::stream (kept alive by the handlers of its
// pending operations), and a TLS handshake (SNI, chain and host name verified) comes
// between the TCP connect and CONNECT.
//
//   idle --Start--> resolving --> connecting [--> TLS handshake] --> CONNECT sent --CONNACK 0-->
//   SUBSCRIBE sent
//        --SUBACK--> subscribed;  any error / timeout / done(false) --> backoff --> resolving
#include "net/mqtt/subscriber.h"

#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <deque>
#include <random>
#include <utility>  // before Asio (Boost 1.74 + GCC 12)

#include "common/logging.h"
#include "net/mqtt/codec.h"
#include "net/tls_context_impl.h"
#include "net/url.h"

namespace joule::net::mqtt {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;
using SteadyClock = std::chrono::steady_clock;
using TlsStream = asio::ssl::stream<tcp::socket>;

namespace {
constexpr size_t kReadChunk = 64 * 1024;
constexpr uint16_t kSubscribePacketId = 1;

DecoderOptions MakeDecoderOptions(const MqttSubscriberOptions& options) {
  DecoderOptions d;
  d.max_packet_size = options.max_packet_size;
  d.version = ProtocolVersion::kV311;
  d.skip_oversized_publish = true;  // never buffered, never a reason to disconnect
  return d;
}
}  // namespace

class MqttSubscriber::Impl : public std::enable_shared_from_this<Impl> {
 public:
  Impl(asio::io_context& io, MqttSubscriberOptions options, MessageHandler* handler,
       MetricsRegistry* metrics)
      : options_(std::move(options)),
        handler_(handler),
        strand_(asio::make_strand(io)),
        resolver_(strand_),
        socket_(strand_),
        timer_(strand_),
        keepalive_timer_(strand_),
        decoder_(MakeDecoderOptions(options_)),
        rng_(std::random_device{}()) {
    if (metrics != nullptr) {
      connected_gauge_ = metrics->GetGauge("joule_mqtt_bridge_connected",
                                           "1 while the MQTT bridge is connected and subscribed.");
      connects_ok_ =
          metrics->GetCounter("joule_mqtt_bridge_connects_total",
                              "MQTT bridge connection attempts, by result.", {{"result", "ok"}});
      connects_failed_ = metrics->GetCounter("joule_mqtt_bridge_connects_total",
                                             "MQTT bridge connection attempts, by result.",
                                             {{"result", "failed"}});
      publishes_qos0_ =
          metrics->GetCounter("joule_mqtt_bridge_publishes_total",
                              "PUBLISH packets received from the broker, by QoS.", {{"qos", "0"}});
      publishes_qos1_ =
          metrics->GetCounter("joule_mqtt_bridge_publishes_total",
                              "PUBLISH packets received from the broker, by QoS.", {{"qos", "1"}});
      ack_latency_ =
          metrics->GetHistogram("joule_mqtt_bridge_ack_latency_seconds",
                                "PUBLISH (QoS 1) received from the broker to PUBACK queued.",
                                Histogram::LatencyBuckets());
      subscribe_refused_ = metrics->GetCounter("joule_mqtt_bridge_subscribe_refused_total",
                                               "Topic filters the broker refused.");
      tls_failures_ = metrics->GetCounter(
          "joule_mqtt_bridge_tls_handshake_failures_total",
          "TLS handshakes with the broker that failed (certificate not trusted, wrong host "
          "name, client certificate refused, protocol).");
    }
  }

  void Start() {
    asio::post(strand_, [self = shared_from_this()] {
      if (self->stopped_ || self->started_) return;
      self->started_ = true;
      self->Connect();
    });
  }

  void Stop() {
    asio::post(strand_, [self = shared_from_this()] {
      if (self->stopped_) return;
      self->stopped_ = true;
      // Over TLS no DISCONNECT: a synchronous write could interleave with the pending
      // asynchronous read inside the TLS engine. Closing is as good (no will is set).
      if (self->subscribed_ && !self->tls_) {
        Packet p;
        p.type = PacketType::kDisconnect;
        std::string bytes;
        Encode(p, ProtocolVersion::kV311, &bytes);
        error_code ignored;
        asio::write(self->socket_, asio::buffer(bytes), ignored);  // best effort, tiny
      }
      self->CloseSocket();
      self->resolver_.cancel();
      self->timer_.cancel();
      self->keepalive_timer_.cancel();
    });
  }

  bool connected() const { return connected_.load(std::memory_order_acquire); }

 private:
  struct InFlight {
    uint16_t packet_id = 0;
    bool done = false;
    SteadyClock::time_point received;
    // A copy of the message while it may have to be handed over again (done(false)).
    std::string topic, payload;
    bool dup = false;
    uint32_t refusals = 0;
    uint64_t too_large_bytes = 0;
  };

  // --- connecting

  void Connect() {
    if (stopped_) return;
    const uint64_t epoch = ++epoch_;
    decoder_ = Decoder(MakeDecoderOptions(options_));
    inflight_.clear();
    retrying_ = 0;
    out_.clear();
    write_pending_ = false;
    read_pending_ = false;
    subscribed_ = false;
    tls_.reset();  // a fresh TLS session per attempt; the old one lives on in its handlers
    if (options_.use_tls) {
      if (!options_.tls_context) {
        ++epoch_;
        stopped_ = true;
        logging::Error("mqtt bridge: mqtts:// without a TLS context; not connecting");
        return;
      }
      tls_ = std::make_shared<TlsStream>(strand_, options_.tls_context->ssl);
    }
    // One deadline for resolve + TCP connect + TLS handshake + CONNACK + SUBACK.
    timer_.expires_after(std::chrono::nanoseconds(options_.connect_timeout_ns));
    timer_.async_wait([self = shared_from_this(), epoch](error_code ec) {
      if (ec || epoch != self->epoch_ || self->subscribed_) return;
      self->Fail(epoch, "timed out connecting");
    });
    resolver_.async_resolve(
        options_.host, std::to_string(options_.port),
        [self = shared_from_this(), epoch](error_code ec, tcp::resolver::results_type results) {
          if (epoch != self->epoch_ || self->stopped_) return;
          if (ec) {
            self->Fail(epoch, "resolve: " + ec.message());
            return;
          }
          asio::async_connect(
              self->Socket(), results,
              [self, epoch, keep = self->tls_](error_code cec, const tcp::endpoint&) {
                if (epoch != self->epoch_ || self->stopped_) return;
                if (cec) {
                  self->Fail(epoch, "connect: " + cec.message());
                  return;
                }
                self->OnTcpConnected(epoch);
              });
        });
  }

  tcp::socket& Socket() { return tls_ ? tls_->next_layer() : socket_; }

  void OnTcpConnected(uint64_t epoch) {
    error_code ignored;
    Socket().set_option(tcp::no_delay(true), ignored);
    if (!tls_) {
      SendConnect(epoch);
      return;
    }
    // Host name checks: a DNS name goes in SNI and must match the certificate's DNS names;
    // an IP address must be one of its IP SANs (RFC 6066 forbids IP literals in SNI).
    SSL* ssl = tls_->native_handle();
    error_code not_ip;
    asio::ip::make_address(options_.host, not_ip);
    int ok = 1;
    if (not_ip) {
      SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      ok = SSL_set_tlsext_host_name(ssl, options_.host.c_str()) == 1 &&
           SSL_set1_host(ssl, options_.host.c_str()) == 1;
    } else {
      ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), options_.host.c_str());
    }
    if (ok != 1) {
      Fail(epoch, "TLS: cannot set the host name to verify");
      return;
    }
    tls_->async_handshake(asio::ssl::stream_base::client,
                          [self = shared_from_this(), epoch, keep = tls_](error_code ec) {
                            if (epoch != self->epoch_ || self->stopped_) return;
                            if (ec) {
                              std::string why = "TLS handshake: " + ec.message();
                              const long verify = SSL_get_verify_result(keep->native_handle());
                              if (verify != X509_V_OK) {
                                why += " (certificate: ";
                                why += X509_verify_cert_error_string(verify);
                                why += ")";
                              }
                              if (self->tls_failures_ != nullptr) self->tls_failures_->Inc();
                              self->Fail(epoch, why);
                              return;
                            }
                            self->SendConnect(epoch);
                          });
  }

  void SendConnect(uint64_t epoch) {
    Packet p;
    p.type = PacketType::kConnect;
    p.connect.version = ProtocolVersion::kV311;
    p.connect.clean_start = false;  // a persistent session: the broker keeps what we missed
    p.connect.keep_alive = options_.keep_alive_s;
    p.connect.client_id = options_.client_id;
    p.connect.username = options_.username;
    p.connect.password = options_.password;
    Send(p);
    last_received_ = SteadyClock::now();
    StartRead(epoch);
  }

  // Drops the connection (if any) and schedules the next attempt.
  void Fail(uint64_t epoch, const std::string& why) {
    if (epoch != epoch_ || stopped_) return;
    const bool was_subscribed = subscribed_;
    ++epoch_;  // outstanding completions of this connection become stale
    CloseSocket();
    if (!was_subscribed && connects_failed_ != nullptr) connects_failed_->Inc();
    if (was_subscribed) backoff_ns_ = 0;  // it worked for a while: retry quickly
    backoff_ns_ = backoff_ns_ == 0 ? options_.min_backoff_ns
                                   : std::min(backoff_ns_ * 2, options_.max_backoff_ns);
    // Full jitter on the upper half, so many bridges do not reconnect in lock step.
    std::uniform_int_distribution<int64_t> jitter(backoff_ns_ / 2, backoff_ns_);
    const int64_t delay = jitter(rng_);
    logging::Warn("mqtt bridge disconnected",
                  {{"broker", options_.host + ":" + std::to_string(options_.port)},
                   {"error", why},
                   {"retry_in_ms", std::to_string(delay / 1'000'000)}});
    timer_.expires_after(std::chrono::nanoseconds(delay));
    const uint64_t next = epoch_;
    timer_.async_wait([self = shared_from_this(), next](error_code ec) {
      if (ec || next != self->epoch_ || self->stopped_) return;
      self->Connect();
    });
  }

  void CloseSocket() {
    error_code ignored;
    Socket().shutdown(tcp::socket::shutdown_both, ignored);
    Socket().close(ignored);
    keepalive_timer_.cancel();
    inflight_.clear();
    retrying_ = 0;
    out_.clear();
    if (subscribed_ && connected_gauge_ != nullptr) connected_gauge_->Set(0);
    subscribed_ = false;
    connected_.store(false, std::memory_order_release);
  }

  // --- reading

  // Reading stops while the in-flight window is full, and while a refused message waits
  // to be handed over again (backpressure reaches the broker through its in-flight limit).
  bool Paused() const { return retrying_ > 0 || inflight_.size() >= options_.max_unacknowledged; }

  void StartRead(uint64_t epoch) {
    if (epoch != epoch_ || stopped_ || read_pending_ || Paused()) return;
    read_pending_ = true;
    auto on_read = [self = shared_from_this(), epoch](error_code ec, size_t n) {
      if (epoch != self->epoch_) return;
      self->read_pending_ = false;
      if (ec) {
        self->Fail(epoch, "read: " + ec.message());
        return;
      }
      self->last_received_ = SteadyClock::now();
      self->decoder_.Feed(std::string_view(self->read_buffer_.data(), n));
      self->ProcessBuffered(epoch);
    };
    auto buffer = asio::buffer(read_buffer_.data(), read_buffer_.size());
    if (tls_) {
      tls_->async_read_some(buffer, [on_read = std::move(on_read), keep = tls_](
                                        error_code ec, size_t n) { on_read(ec, n); });
    } else {
      socket_.async_read_some(buffer, std::move(on_read));
    }
  }

  void ProcessBuffered(uint64_t epoch) {
    while (epoch == epoch_ && !stopped_ && !Paused()) {
      Decoder::State state = decoder_.Next(&packet_);
      if (state == Decoder::State::kNeedMore) break;
      if (state == Decoder::State::kError) {
        Fail(epoch, "protocol: " + decoder_.error().message);
        return;
      }
      if (state == Decoder::State::kOversizedPublish) {
        if (connack_seen_epoch_ != epoch) {
          ProtocolFail(epoch, "PUBLISH before CONNACK");
          return;
        }
        logging::Warn("mqtt bridge: message larger than the maximum packet size skipped",
                      {{"topic", packet_.publish.topic},
                       {"bytes", std::to_string(decoder_.oversized_size())},
                       {"max_bytes", std::to_string(options_.max_packet_size)},
                       {"qos", std::to_string(packet_.publish.qos)}});
        if (!HandlePublish(epoch, decoder_.oversized_size())) return;
        continue;
      }
      if (!HandlePacket(epoch)) return;
    }
    StartRead(epoch);
  }

  // false: the connection was dropped.
  bool HandlePacket(uint64_t epoch) {
    switch (packet_.type) {
      case PacketType::kConnack: {
        if (connack_seen_epoch_ == epoch) return ProtocolFail(epoch, "a second CONNACK");
        connack_seen_epoch_ = epoch;
        if (packet_.connack.reason_code != 0) {
          Fail(epoch,
               "CONNACK refused with return code " + std::to_string(packet_.connack.reason_code));
          return false;
        }
        Packet s;
        s.type = PacketType::kSubscribe;
        s.subscribe.packet_id = kSubscribePacketId;
        for (const std::string& t : options_.topics) s.subscribe.subscriptions.push_back({t, 1});
        Send(s);
        return true;
      }
      case PacketType::kSuback: {
        if (connack_seen_epoch_ != epoch || subscribed_) return ProtocolFail(epoch, "SUBACK");
        const auto& codes = packet_.subscribe_ack.reason_codes;
        for (size_t i = 0; i < codes.size() && i < options_.topics.size(); ++i) {
          if (codes[i] >= 0x80) {
            if (subscribe_refused_ != nullptr) subscribe_refused_->Inc();
            logging::Error("mqtt bridge subscription refused by the broker",
                           {{"topic", options_.topics[i]}});
          }
        }
        subscribed_ = true;
        connected_.store(true, std::memory_order_release);
        backoff_ns_ = 0;
        timer_.cancel();  // the connect deadline
        if (connects_ok_ != nullptr) connects_ok_->Inc();
        if (connected_gauge_ != nullptr) connected_gauge_->Set(1);
        logging::Info("mqtt bridge subscribed",
                      {{"broker", options_.host + ":" + std::to_string(options_.port)},
                       {"client_id", options_.client_id},
                       {"session_present", packet_.connack.session_present ? "true" : "false"}});
        ArmKeepAlive(epoch);
        return true;
      }
      case PacketType::kPublish:
        if (connack_seen_epoch_ != epoch) return ProtocolFail(epoch, "PUBLISH before CONNACK");
        return HandlePublish(epoch, 0);
      case PacketType::kPingresp:
        return true;
      default:
        // PUBREL/PUBREC (QoS 2 is never subscribed to), UNSUBACK, PUBACK (we never
        // publish), client-to-server packets.
        return ProtocolFail(epoch,
                            std::string("unexpected ") + std::string(PacketTypeName(packet_.type)));
    }
  }

  bool ProtocolFail(uint64_t epoch, const std::string& what) {
    Fail(epoch, "protocol: " + what);
    return false;
  }

  // too_large_bytes > 0: an oversized PUBLISH whose payload was skipped (it is empty).
  bool HandlePublish(uint64_t epoch, uint64_t too_large_bytes) {
    const Publish& pub = packet_.publish;
    if (pub.qos == 2) return ProtocolFail(epoch, "QoS 2 PUBLISH on a QoS 1 subscription");
    ReceivedMessage m;
    m.topic = pub.topic;
    m.payload = pub.payload;
    m.qos = pub.qos;
    m.dup = pub.dup;
    m.too_large_bytes = too_large_bytes;
    if (pub.qos == 0) {
      if (publishes_qos0_ != nullptr) publishes_qos0_->Inc();
      handler_->OnMessage(m, [](bool) {});
      return true;
    }
    if (publishes_qos1_ != nullptr) publishes_qos1_->Inc();
    const uint64_t seq = inflight_base_ + inflight_.size();
    inflight_.push_back(InFlight{pub.packet_id, false, SteadyClock::now(), std::string(pub.topic),
                                 std::string(pub.payload), pub.dup, 0, too_large_bytes});
    HandOver(epoch, seq, m);
    return epoch == epoch_;
  }

  void HandOver(uint64_t epoch, uint64_t seq, const ReceivedMessage& m) {
    std::weak_ptr<Impl> weak = shared_from_this();
    handler_->OnMessage(m, [weak, epoch, seq](bool keep) {
      auto self = weak.lock();
      if (!self) return;
      asio::post(self->strand_, [self, epoch, seq, keep] { self->OnDone(epoch, seq, keep); });
    });
  }

  void OnDone(uint64_t epoch, uint64_t seq, bool keep) {
    if (epoch != epoch_ || stopped_) return;  // that connection is gone: the broker redelivers
    if (seq < inflight_base_ || seq - inflight_base_ >= inflight_.size()) return;
    InFlight& f = inflight_[seq - inflight_base_];
    if (!keep) {
      // Not stored now (the log is full): handed over again after a pause, reading paused
      // meanwhile; PUBACKs stay in order. (Found by a black-box test: dropping the
      // connection here also dropped the PUBACKs of the stored messages before it, and under
      // lasting backpressure the broker redelivered the same messages for ever.)
      if (f.refusals++ == 0) ++retrying_;
      const auto delay = std::chrono::milliseconds(
          std::min<int64_t>(int64_t{10} << std::min<uint32_t>(f.refusals - 1, 7), 1000));
      auto timer = std::make_shared<asio::steady_timer>(strand_, delay);
      timer->async_wait([self = shared_from_this(), epoch, seq, timer](error_code ec) {
        if (ec || epoch != self->epoch_ || self->stopped_) return;
        if (seq < self->inflight_base_ || seq - self->inflight_base_ >= self->inflight_.size()) {
          return;
        }
        const InFlight& again = self->inflight_[seq - self->inflight_base_];
        ReceivedMessage m;
        m.topic = again.topic;
        m.payload = again.payload;
        m.qos = 1;
        m.dup = again.dup;
        m.too_large_bytes = again.too_large_bytes;
        self->HandOver(epoch, seq, m);
      });
      return;
    }
    const bool was_paused = Paused();
    if (f.refusals > 0) --retrying_;
    f.done = true;
    f.topic.clear();
    f.topic.shrink_to_fit();
    f.payload.clear();
    f.payload.shrink_to_fit();
    while (!inflight_.empty() && inflight_.front().done) {
      const uint16_t packet_id = inflight_.front().packet_id;
      const SteadyClock::time_point received = inflight_.front().received;
      inflight_.pop_front();
      ++inflight_base_;
      Packet p;
      p.type = PacketType::kPuback;
      p.publish_response.packet_id = packet_id;
      if (ack_latency_ != nullptr) {
        ack_latency_->Observe(std::chrono::duration<double>(SteadyClock::now() - received).count());
      }
      Send(p);
    }
    if (was_paused && !Paused()) {
      asio::post(strand_, [self = shared_from_this(), epoch] { self->ProcessBuffered(epoch); });
    }
  }

  // --- writing

  void Send(const Packet& p) {
    Encode(p, ProtocolVersion::kV311, &out_);
    if (!write_pending_) DoWrite(epoch_);
  }

  void DoWrite(uint64_t epoch) {
    if (out_.empty()) return;
    write_pending_ = true;
    writing_.clear();
    writing_.swap(out_);
    last_sent_ = SteadyClock::now();
    auto on_write = [self = shared_from_this(), epoch](error_code ec, size_t) {
      if (epoch != self->epoch_) return;
      self->write_pending_ = false;
      if (ec) {
        self->Fail(epoch, "write: " + ec.message());
        return;
      }
      self->DoWrite(epoch);
    };
    if (tls_) {
      asio::async_write(*tls_, asio::buffer(writing_),
                        [on_write = std::move(on_write), keep = tls_](error_code ec, size_t n) {
                          on_write(ec, n);
                        });
    } else {
      asio::async_write(socket_, asio::buffer(writing_), std::move(on_write));
    }
  }

  // --- keep-alive: PINGREQ after keep_alive/2 of silence on our side; the connection is
  // dead after 1.5 × keep_alive without a byte from the broker.

  void ArmKeepAlive(uint64_t epoch) {
    if (options_.keep_alive_s == 0) return;
    keepalive_timer_.expires_after(std::chrono::milliseconds(options_.keep_alive_s * 250));
    keepalive_timer_.async_wait([self = shared_from_this(), epoch](error_code ec) {
      if (ec || epoch != self->epoch_ || self->stopped_) return;
      const auto now = SteadyClock::now();
      const auto ka = std::chrono::seconds(self->options_.keep_alive_s);
      if (now - self->last_received_ > ka + ka / 2) {
        self->Fail(epoch, "keep-alive: no answer from the broker");
        return;
      }
      if (now - self->last_sent_ >= ka / 2) {
        Packet p;
        p.type = PacketType::kPingreq;
        self->Send(p);
      }
      self->ArmKeepAlive(epoch);
    });
  }

  const MqttSubscriberOptions options_;
  MessageHandler* const handler_;
  asio::strand<asio::io_context::executor_type> strand_;
  tcp::resolver resolver_;
  tcp::socket socket_;              // plain mqtt://
  std::shared_ptr<TlsStream> tls_;  // mqtts://: this attempt's stream
  asio::steady_timer timer_;        // connect deadline, then the backoff
  asio::steady_timer keepalive_timer_;
  Decoder decoder_;
  Packet packet_;
  std::array<char, kReadChunk> read_buffer_;
  std::mt19937_64 rng_;

  bool started_ = false;
  bool stopped_ = false;
  bool subscribed_ = false;
  bool read_pending_ = false;
  bool write_pending_ = false;
  std::atomic<bool> connected_{false};
  uint64_t epoch_ = 0;
  uint64_t connack_seen_epoch_ = 0;
  int64_t backoff_ns_ = 0;
  SteadyClock::time_point last_sent_ = SteadyClock::now();
  SteadyClock::time_point last_received_ = SteadyClock::now();

  std::deque<InFlight> inflight_;
  size_t retrying_ = 0;  // in-flight messages refused and waiting to be handed over again
  uint64_t inflight_base_ = 0;
  std::string out_;
  std::string writing_;

  Gauge* connected_gauge_ = nullptr;
  Counter* connects_ok_ = nullptr;
  Counter* connects_failed_ = nullptr;
  Counter* publishes_qos0_ = nullptr;
  Counter* publishes_qos1_ = nullptr;
  Histogram* ack_latency_ = nullptr;
  Counter* subscribe_refused_ = nullptr;
  Counter* tls_failures_ = nullptr;
};

Status ParseBrokerUrl(std::string_view url, MqttSubscriberOptions* options) {
  constexpr std::string_view kPlain = "mqtt://";
  constexpr std::string_view kTls = "mqtts://";
  bool tls = false;
  std::string_view rest;
  if (url.substr(0, kPlain.size()) == kPlain) {
    rest = url.substr(kPlain.size());
  } else if (url.substr(0, kTls.size()) == kTls) {
    rest = url.substr(kTls.size());
    tls = true;
  } else {
    return Status::InvalidArgument("broker url '" + std::string(url) +
                                   "' must start with mqtt:// or mqtts://");
  }
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  if (rest.empty() || rest.find_first_of("/@?#") != std::string_view::npos) {
    return Status::InvalidArgument("broker url '" + std::string(url) +
                                   "' must be mqtt[s]://host[:port] (user name and password have "
                                   "their own settings)");
  }
  std::string host_port(rest);
  const bool has_port = rest.back() != ']' && rest.rfind(':') != std::string_view::npos &&
                        (rest.front() != '[' || rest.rfind(']') < rest.rfind(':'));
  if (!has_port) host_port += tls ? ":8883" : ":1883";
  Result<HostPort> hp = ParseHostPort(host_port);
  if (!hp.ok() || hp->host.empty() || hp->port == 0) {
    return Status::InvalidArgument("broker url '" + std::string(url) + "': bad host or port");
  }
  options->host = hp->host;
  options->port = hp->port;
  options->use_tls = tls;
  return Status::Ok();
}

Status ValidateTopicFilter(std::string_view filter) {
  const auto bad = [filter](std::string_view why) {
    std::string shown;  // the filter as text, a NUL as \0
    for (char ch : filter) shown += ch == '\0' ? std::string("\\0") : std::string(1, ch);
    return Status::InvalidArgument("topic filter '" + shown + "' " + std::string(why) +
                                   " (MQTT 3.1.1 section 4.7)");
  };
  if (filter.empty()) return bad("is empty");
  if (filter.size() > 65535) return bad("is longer than 65535 bytes");
  if (filter.find('\0') != std::string_view::npos) return bad("holds U+0000");
  size_t level_start = 0;
  for (size_t i = 0; i <= filter.size(); ++i) {
    if (i < filter.size() && filter[i] != '/') continue;
    const std::string_view level = filter.substr(level_start, i - level_start);
    if (level.find('#') != std::string_view::npos && (level.size() != 1 || i != filter.size())) {
      return bad("has '#' other than alone as its last level (e.g. devices/#)");
    }
    if (level.find('+') != std::string_view::npos && level.size() != 1) {
      return bad("has '+' other than alone in its level (e.g. devices/+/telemetry)");
    }
    level_start = i + 1;
  }
  return Status::Ok();
}

Status ParseTopicFilters(std::string_view list, std::vector<std::string>* filters) {
  std::vector<std::string> out;
  while (!list.empty()) {
    const size_t comma = list.find(',');
    std::string_view t = list.substr(0, comma);
    while (!t.empty() && t.front() == ' ') t.remove_prefix(1);
    while (!t.empty() && t.back() == ' ') t.remove_suffix(1);
    if (!t.empty()) {
      JOULE_RETURN_IF_ERROR(ValidateTopicFilter(t));
      out.emplace_back(t);
    }
    list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
  }
  *filters = std::move(out);
  return Status::Ok();
}

MqttSubscriber::MqttSubscriber(asio::io_context& io, MqttSubscriberOptions options,
                               MessageHandler* handler, MetricsRegistry* metrics)
    : impl_(std::make_shared<Impl>(io, std::move(options), handler, metrics)) {}

MqttSubscriber::~MqttSubscriber() { impl_->Stop(); }

void MqttSubscriber::Start() { impl_->Start(); }
void MqttSubscriber::Stop() { impl_->Stop(); }
bool MqttSubscriber::connected() const { return impl_->connected(); }

}  // namespace joule::net::mqtt

// MqttPublisher (the simulator's MQTT client) against the server's own MqttListener.
#include "app/mqtt_publisher.h"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>  // before Asio (Boost 1.74 + GCC 12)
#include <vector>

#include "net/mqtt/listener.h"

namespace joule::app {
namespace {

namespace asio = boost::asio;
namespace mqtt = net::mqtt;

// Accepts user "dev" with password "good"; answers a publish by its payload.
class Handler : public mqtt::SessionHandler {
 public:
  mqtt::ConnectDecision OnConnect(const mqtt::ConnectRequest& r) override {
    mqtt::ConnectDecision d;
    std::lock_guard lock(mu_);
    connects_.push_back(
        {r.version, r.client_id, r.username.value_or(""), r.password.value_or("<none>")});
    if (r.username != "dev" || (r.password != "good" && r.password.has_value())) {
      d.reason_code = mqtt::reason::kBadUserNameOrPassword;
    }
    d.principal = r.username.value_or("");
    return d;
  }
  void OnPublish(const mqtt::PublishRequest& r, PublishDone done) override {
    {
      std::lock_guard lock(mu_);
      publishes_.emplace_back(std::string(r.topic), std::string(r.payload), r.qos);
    }
    if (r.payload == "hold") {  // answered by Release()
      std::lock_guard lock(mu_);
      held_ = std::move(done);
      return;
    }
    if (r.payload == "bad") {
      done({mqtt::reason::kPayloadFormatInvalid, "event 0: invalid_json: nope"});
    } else if (r.payload == "partial") {
      done({mqtt::reason::kSuccess,
            "accepted 2, rejected 1 (first: event 1 x); rejected events: 1"});
    } else {
      done({});
    }
  }
  struct Connect {
    mqtt::ProtocolVersion version;
    std::string client_id, username, password;
  };
  std::vector<Connect> connects() {
    std::lock_guard lock(mu_);
    return connects_;
  }
  std::vector<std::tuple<std::string, std::string, uint8_t>> publishes() {
    std::lock_guard lock(mu_);
    return publishes_;
  }
  bool holding() {
    std::lock_guard lock(mu_);
    return held_ != nullptr;
  }
  void Release() {
    PublishDone done;
    {
      std::lock_guard lock(mu_);
      done.swap(held_);
    }
    if (done) done({});
  }

 private:
  PublishDone held_;  // of a "hold" publish
  std::mutex mu_;
  std::vector<Connect> connects_;
  std::vector<std::tuple<std::string, std::string, uint8_t>> publishes_;
};

class MqttPublisherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    mqtt::MqttListenerOptions o;
    o.listen = "127.0.0.1:0";
    listener_ = std::make_unique<mqtt::MqttListener>(io_, o, &handler_, &metrics_);
    ASSERT_TRUE(listener_->Start().ok());
    port_ = std::to_string(listener_->port());
    guard_.emplace(io_.get_executor());
    thread_ = std::thread([this] { io_.run(); });
  }
  void TearDown() override {
    handler_.Release();
    StopListener();
    guard_.reset();
    io_.stop();
    thread_.join();
  }
  void StopListener() {
    if (listener_) listener_->Stop();
  }

  Handler handler_;
  MetricsRegistry metrics_;
  asio::io_context io_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard_;
  std::unique_ptr<mqtt::MqttListener> listener_;
  std::thread thread_;
  std::string port_;
};

TEST_F(MqttPublisherTest, ConnectsAsTheDeviceAndGetsEachPubackReason) {
  MqttPublisher p("127.0.0.1", port_);
  ASSERT_EQ(p.Connect("dev-sim", "dev", "good"), 0) << p.error();
  EXPECT_TRUE(p.connected());
  std::string reason = "stale";
  EXPECT_EQ(p.Publish("devices/dev/telemetry", "[{}]", &reason), 0);
  EXPECT_EQ(reason, "");
  EXPECT_EQ(p.Publish("devices/dev/telemetry", "partial", &reason), 0);
  EXPECT_EQ(reason, "accepted 2, rejected 1 (first: event 1 x); rejected events: 1");
  EXPECT_EQ(p.Publish("devices/dev/telemetry", "bad", &reason),
            mqtt::reason::kPayloadFormatInvalid);
  EXPECT_EQ(reason, "event 0: invalid_json: nope");
  EXPECT_TRUE(p.connected());  // a refused payload does not end the connection
  p.Disconnect();
  EXPECT_FALSE(p.connected());

  auto connects = handler_.connects();
  ASSERT_EQ(connects.size(), 1u);
  EXPECT_EQ(connects[0].version, mqtt::ProtocolVersion::kV5);
  EXPECT_EQ(connects[0].client_id, "dev-sim");
  EXPECT_EQ(connects[0].username, "dev");
  EXPECT_EQ(connects[0].password, "good");
  auto publishes = handler_.publishes();
  ASSERT_EQ(publishes.size(), 3u);
  EXPECT_EQ(std::get<0>(publishes[0]), "devices/dev/telemetry");
  EXPECT_EQ(std::get<1>(publishes[0]), "[{}]");
  EXPECT_EQ(std::get<2>(publishes[0]), 1);  // QoS 1
}

TEST_F(MqttPublisherTest, AWrongPasswordIsARefusedConnack) {
  MqttPublisher p("127.0.0.1", port_);
  EXPECT_EQ(p.Connect("dev-sim", "dev", "wrong"), mqtt::reason::kBadUserNameOrPassword);
  EXPECT_FALSE(p.connected());
  EXPECT_NE(p.error().find("CONNACK refused: 0x86"), std::string::npos) << p.error();
  std::string reason;
  EXPECT_EQ(p.Publish("devices/dev/telemetry", "[{}]", &reason), MqttPublisher::kConnectionError);
  // The same object connects again with the right token.
  EXPECT_EQ(p.Connect("dev-sim", "dev", "good"), 0);
  EXPECT_EQ(p.Publish("devices/dev/telemetry", "[{}]", &reason), 0);
}

TEST_F(MqttPublisherTest, AnEmptyPasswordIsSentAsNone) {
  MqttPublisher p("127.0.0.1", port_);
  EXPECT_EQ(p.Connect("dev-sim", "dev", ""), 0) << p.error();
  EXPECT_EQ(handler_.connects().at(0).password, "<none>");
}

TEST_F(MqttPublisherTest, ConnectionErrorsAreNegativeAndNamed) {
  MqttPublisher p("127.0.0.1", port_);
  ASSERT_EQ(p.Connect("dev-sim", "dev", "good"), 0);
  EXPECT_TRUE(p.CanConnect());
  StopListener();  // closes every connection
  std::string reason;
  EXPECT_LT(p.Publish("devices/dev/telemetry", "[{}]", &reason), 0);
  EXPECT_FALSE(p.connected());
  // The listener closes its acceptor asynchronously.
  bool can = true;
  for (int i = 0; i < 500 && (can = p.CanConnect()); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_FALSE(can);
  // (A connection the kernel queued just before the acceptor closed is reset instead.)
  EXPECT_TRUE(p.error() == "Connection refused" || p.error() == "Connection reset by peer")
      << p.error();
  EXPECT_EQ(p.Connect("dev-sim", "dev", "good"), MqttPublisher::kConnectionError);
}

// Found by a black-box test: `joule simulate --mqtt` pointed at Joule's HTTP port failed
// with "undecodable packet … invalid fixed header flags" and no hint.
TEST(MqttPublisherHttpPortTest, AnHttpAnswerIsNamed) {
  asio::io_context io;
  asio::ip::tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
  std::thread server([&] {
    asio::ip::tcp::socket s(io);
    acceptor.accept(s);
    char buf[512];
    boost::system::error_code ec;
    s.read_some(asio::buffer(buf), ec);  // the CONNECT
    const std::string answer =
        "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    asio::write(s, asio::buffer(answer), ec);
  });
  MqttPublisher p("127.0.0.1", std::to_string(acceptor.local_endpoint().port()));
  EXPECT_LT(p.Connect("dev-sim", "dev", "good"), 0);
  server.join();
  EXPECT_NE(p.error().find("it answered in HTTP: is that the HTTP port?"), std::string::npos)
      << p.error();
}

// Found by a black-box test: on a graceful restart the server's DISCONNECT 0x8B arrived
// instead of a PUBACK and was returned as if it were the PUBACK's code (the simulator
// counted the batch refused and failed instead of resending it).
TEST_F(MqttPublisherTest, ADisconnectInsteadOfThePubackIsNotAPubackCode) {
  MqttPublisher p("127.0.0.1", port_);
  ASSERT_EQ(p.Connect("dev-sim", "dev", "good"), 0) << p.error();
  std::thread stopper([this] {
    for (int i = 0; i < 1000 && !handler_.holding(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    StopListener();  // a graceful shutdown: DISCONNECT 0x8B, the publish unanswered
  });
  std::string reason;
  const int rc = p.Publish("devices/dev/telemetry", "hold", &reason);
  stopper.join();
  EXPECT_EQ(rc, MqttPublisher::kDisconnected) << p.error();
  EXPECT_EQ(p.disconnect_reason(), mqtt::reason::kServerShuttingDown);
  EXPECT_EQ(p.error(), "DISCONNECT 0x8b (server shutting down) from the server before the PUBACK");
  EXPECT_FALSE(p.connected());
}

// Found by a black-box test: a device idle while the server restarted sent its next
// batch on the old connection, which still looked connected, and read the stale 0x8B.
TEST_F(MqttPublisherTest, AnIdleConnectionEndedByTheServerIsNoLongerConnected) {
  MqttPublisher p("127.0.0.1", port_);
  ASSERT_EQ(p.Connect("dev-sim", "dev", "good"), 0) << p.error();
  EXPECT_TRUE(p.StillConnected());  // nothing arrived: still open
  std::string reason;
  EXPECT_EQ(p.Publish("devices/dev/telemetry", "[{}]", &reason), 0);
  EXPECT_TRUE(p.StillConnected());
  StopListener();
  bool still = true;
  for (int i = 0; i < 500 && (still = p.StillConnected()); ++i) {  // the DISCONNECT is sent
    std::this_thread::sleep_for(std::chrono::milliseconds(10));    // asynchronously
  }
  EXPECT_FALSE(still);
  EXPECT_FALSE(p.connected());
  EXPECT_EQ(p.disconnect_reason(), mqtt::reason::kServerShuttingDown);
  EXPECT_EQ(p.error(), "DISCONNECT 0x8b (server shutting down) from the server while idle");
}

TEST_F(MqttPublisherTest, AnIdleConnectionTheServerClosedIsNoLongerConnected) {
  // A stand-in server that accepts, answers the CONNECT and closes (a kill -9 leaves the
  // same: end of stream, no DISCONNECT).
  asio::io_context io;
  asio::ip::tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
  std::thread server([&] {
    asio::ip::tcp::socket s(io);
    acceptor.accept(s);
    char buf[512];
    s.read_some(asio::buffer(buf));  // the CONNECT
    mqtt::Packet connack;
    connack.type = mqtt::PacketType::kConnack;
    std::string bytes;
    mqtt::Encode(connack, mqtt::ProtocolVersion::kV5, &bytes);
    asio::write(s, asio::buffer(bytes));
  });  // closes the socket
  MqttPublisher p("127.0.0.1", std::to_string(acceptor.local_endpoint().port()));
  ASSERT_EQ(p.Connect("dev-sim", "dev", "good"), 0) << p.error();
  server.join();
  bool still = true;
  for (int i = 0; i < 500 && (still = p.StillConnected()); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_FALSE(still);
  EXPECT_EQ(p.disconnect_reason(), 0);
  EXPECT_NE(p.error().find("closed the connection"), std::string::npos) << p.error();
}

}  // namespace
}  // namespace joule::app

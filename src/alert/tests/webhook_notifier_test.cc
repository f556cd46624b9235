// WebhookNotifier's workers against fake receivers on loopback: a hanging receiver delays
// only itself, also once max_targets targets have been seen (idle workers end), and a
// target over the limit waits for a worker of its own instead of queueing behind another.
#include "alert/webhook_notifier.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "alert/outbox.h"
#include "common/clock.h"
#include "common/metrics.h"

namespace joule::alert {
namespace {

using namespace std::chrono_literals;

// Listens on `address`:0. Answers every request 200 at once and counts it, or (hang) accepts
// and never answers.
class FakeReceiver {
 public:
  FakeReceiver(const char* address, bool hang) : address_(address), hang_(hang) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    ::inet_pton(AF_INET, address, &a.sin_addr);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << address;
    EXPECT_EQ(::listen(fd_, 64), 0);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~FakeReceiver() {
    stop_ = true;
    thread_.join();
    for (int fd : held_) ::close(fd);
    ::close(fd_);
  }
  std::string url() const { return "http://" + address_ + ":" + std::to_string(port_) + "/hook"; }
  int answered() const { return answered_; }

 private:
  void Serve() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) continue;
      if (hang_) {
        held_.push_back(c);
        continue;
      }
      // Reads the head and the Content-Length body, then answers.
      std::string in;
      char buf[4096];
      size_t need = std::string::npos;
      while (need == std::string::npos || in.size() < need) {
        ssize_t n = ::recv(c, buf, sizeof buf, 0);
        if (n <= 0) break;
        in.append(buf, static_cast<size_t>(n));
        size_t end = in.find("\r\n\r\n");
        size_t cl = in.find("Content-Length: ");
        if (end != std::string::npos && cl != std::string::npos) {
          need = end + 4 + std::stoul(in.substr(cl + 16));
        }
      }
      static constexpr char kOk[] =
          "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
      (void)!::send(c, kOk, sizeof kOk - 1, MSG_NOSIGNAL);
      ::close(c);
      ++answered_;
    }
  }

  std::string address_;
  bool hang_;
  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> answered_{0};
  std::vector<int> held_;
  std::thread thread_;
};

// A port on 127.0.0.1 that nobody listens on: every attempt fails at once.
std::string ClosedPortUrl() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return "http://127.0.0.1:" + std::to_string(ntohs(a.sin_port)) + "/hook";
}

template <class Pred>
bool WaitFor(Pred pred, std::chrono::milliseconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

class WebhookNotifierTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("joule-notifier-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    auto box = Outbox::Open(dir_.string(), false);
    ASSERT_TRUE(box.ok()) << box.status().ToString();
    outbox_ = std::move(*box);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  NotifierOptions Options(size_t max_targets, int64_t timeout_ns) {
    NotifierOptions o;
    o.max_targets = max_targets;
    o.timeout_ns = timeout_ns;
    o.max_attempts = 1;  // a failed attempt is a dead letter at once
    o.worker_idle_ns = 200'000'000;
    o.allow_private_targets = true;
    return o;
  }
  Delivery Make(const std::string& alert_id, const std::string& url) {
    Delivery d;
    d.id = "msg_" + std::to_string(++n_);
    d.alert_id = alert_id;
    d.url = url;
    d.secret = "s";
    d.body = "{}";
    EXPECT_TRUE(*outbox_->Add(d));
    return d;
  }
  double Workers() { return metrics_.GetGauge("joule_alert_delivery_workers", "")->Value(); }
  uint64_t TargetWaits() {
    return metrics_.GetCounter("joule_alert_delivery_target_waits_total", "")->Value();
  }

  std::filesystem::path dir_;
  std::unique_ptr<Outbox> outbox_;
  SystemClock clock_;
  MetricsRegistry metrics_;
  int n_ = 0;
};

// Found by a black-box test: targets were never let go, and once max_targets had been seen
// every new target shared the worker of whichever sorted last — here the hanging one.
TEST_F(WebhookNotifierTest, AHangingReceiverDelaysOnlyItselfAfterMaxTargetsWereSeen) {
  FakeReceiver hanging("127.0.0.2", true);  // sorts after every 127.0.0.1 target
  FakeReceiver fast("127.0.0.1", false);
  WebhookNotifier notifier(Options(2, 2'000'000'000), outbox_.get(), &clock_, &metrics_);
  notifier.Submit(Make("dead", ClosedPortUrl()));
  for (int i = 0; i < 3; ++i) notifier.Submit(Make("h" + std::to_string(i), hanging.url()));
  // The closed port's delivery is dead-lettered at once; its worker ends when idle.
  ASSERT_TRUE(WaitFor([&] { return Workers() == 1; }, 5s)) << Workers();
  const auto start = std::chrono::steady_clock::now();
  notifier.Submit(Make("f", fast.url()));
  ASSERT_TRUE(WaitFor([&] { return fast.answered() == 1; }, 10s));
  // Well before the hanging receiver's three 2 s attempts are over.
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1500ms);
  EXPECT_EQ(TargetWaits(), 0u);
  EXPECT_EQ(Workers(), 2);
  notifier.Stop();
}

// Over max_targets a new target waits for a worker of its own (counted), which it gets when
// a busy target's worker goes idle and ends.
TEST_F(WebhookNotifierTest, ANewTargetOverTheLimitWaitsForAWorkerOfItsOwn) {
  FakeReceiver hanging("127.0.0.2", true);
  FakeReceiver fast("127.0.0.1", false);
  WebhookNotifier notifier(Options(1, 1'000'000'000), outbox_.get(), &clock_, &metrics_);
  notifier.Submit(Make("h", hanging.url()));
  notifier.Submit(Make("f1", fast.url()));
  notifier.Submit(Make("f2", fast.url()));
  EXPECT_EQ(TargetWaits(), 2u);
  EXPECT_EQ(Workers(), 1);
  // The hanging attempt times out (1 s), is dead-lettered, the worker idles out, and the
  // fast target gets it.
  ASSERT_TRUE(WaitFor([&] { return fast.answered() == 2; }, 10s));
  EXPECT_EQ(Workers(), 1);
  EXPECT_TRUE(WaitFor([&] { return outbox_->StatusOf("f2")->delivered == 1; }, 5s));
  // Idle, the fast target's worker ends too.
  EXPECT_TRUE(WaitFor([&] { return Workers() == 0; }, 5s)) << Workers();
  notifier.Stop();
}

}  // namespace
}  // namespace joule::alert

// joule_mqtt_load: a device that publishes N telemetry events with QoS 1 through
// libmosquitto (Debian's libmosquitto1, a client nobody here wrote), used by
// tests/integration/test_mqtt_load.py.
//
// It behaves like a well-made device: at most --inflight publishes unacknowledged; an
// event counts as delivered only when its PUBACK arrived with a success reason; when the
// connection is lost (the server was SIGKILLed, say), it reconnects with backoff and
// re-sends every unacknowledged event unchanged (same event_id, timestamp and values), so
// the server may see duplicates and must drop them. It exits 0 once every event has been
// acknowledged, 1 when --deadline-s passes first, 2 on bad arguments.
//
// Events: device --device, event_id "{prefix}-{seq}", timestamp --start-ms + seq *
// --step-ms (epoch milliseconds), metrics power_w = 100 + seq % 7 and energy_wh =
// 1000 + seq / 2 (a counter), so the expected aggregates are known to the test.
//
// Output (stdout, one JSON object a line): {"acked": K} every --progress-every
// acknowledgements, and at the end {"count","acked","publishes","resent","reconnects",
// "refused","seconds"}.
#include <mosquitto.h>
#include <mqtt_protocol.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace {

struct Options {
  std::string host = "127.0.0.1";
  int port = 1883;
  std::string device;
  std::string token;  // empty: no password (auth disabled)
  uint64_t count = 100000;
  int64_t start_ms = 0;
  int64_t step_ms = 10;
  int inflight = 256;
  int version = 5;  // 5 or 311
  std::string prefix = "e";
  int deadline_s = 600;
  uint64_t progress_every = 1000;
  std::string cafile;  // TLS when set
};

using Clock = std::chrono::steady_clock;

class LoadClient {
 public:
  explicit LoadClient(Options options)
      : options_(std::move(options)), acked_(options_.count, false) {
    topic_ = "devices/" + options_.device + "/telemetry";
  }

  int Run() {
    const Clock::time_point start = Clock::now();
    const Clock::time_point deadline = start + std::chrono::seconds(options_.deadline_s);
    int backoff_ms = 50;
    while (acked_count_ < options_.count) {
      if (Clock::now() > deadline) {
        Report(start);
        std::fprintf(stderr, "joule_mqtt_load: deadline passed with %llu of %llu acknowledged\n",
                     static_cast<unsigned long long>(acked_count_),
                     static_cast<unsigned long long>(options_.count));
        return 1;
      }
      if (mosq_ == nullptr) {
        if (!Connect()) {
          std::this_thread::sleep_for(std::chrono::milliseconds(backoff_ms));
          backoff_ms = std::min(backoff_ms * 2, 1000);
          continue;
        }
      }
      if (connected_) {
        backoff_ms = 50;
        FillWindow();
      }
      const int rc = mosquitto_loop(mosq_, 100, 1);
      if (rc != MOSQ_ERR_SUCCESS || lost_) Drop();
    }
    // Every event is acknowledged: a clean DISCONNECT.
    if (mosq_ != nullptr) {
      mosquitto_disconnect(mosq_);
      mosquitto_loop(mosq_, 100, 1);
      mosquitto_destroy(mosq_);
      mosq_ = nullptr;
    }
    Report(start);
    return 0;
  }

 private:
  bool Connect() {
    ++connects_;
    const std::string client_id = options_.device + "-load";
    mosq_ = mosquitto_new(client_id.c_str(), true, this);
    if (mosq_ == nullptr) return false;
    mosquitto_int_option(mosq_, MOSQ_OPT_PROTOCOL_VERSION,
                         options_.version == 5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311);
    mosquitto_max_inflight_messages_set(mosq_, static_cast<unsigned>(options_.inflight));
    mosquitto_username_pw_set(mosq_, options_.device.c_str(),
                              options_.token.empty() ? nullptr : options_.token.c_str());
    if (!options_.cafile.empty()) {
      mosquitto_tls_set(mosq_, options_.cafile.c_str(), nullptr, nullptr, nullptr, nullptr);
    }
    mosquitto_connect_v5_callback_set(mosq_, &LoadClient::OnConnect);
    mosquitto_disconnect_v5_callback_set(mosq_, &LoadClient::OnDisconnect);
    mosquitto_publish_v5_callback_set(mosq_, &LoadClient::OnPublish);
    connected_ = false;
    lost_ = false;
    if (mosquitto_connect(mosq_, options_.host.c_str(), options_.port, 30) != MOSQ_ERR_SUCCESS) {
      mosquitto_destroy(mosq_);
      mosq_ = nullptr;
      return false;
    }
    return true;
  }

  // The connection is gone: forget libmosquitto's queue (a new instance starts empty) and
  // queue every unacknowledged event for re-sending, in order.
  void Drop() {
    if (mosq_ != nullptr) {
      mosquitto_destroy(mosq_);
      mosq_ = nullptr;
    }
    connected_ = false;
    std::vector<uint64_t> seqs;
    seqs.reserve(unacked_.size());
    for (const auto& [mid, seq] : unacked_) seqs.push_back(seq);
    unacked_.clear();
    std::sort(seqs.begin(), seqs.end());
    for (auto it = seqs.rbegin(); it != seqs.rend(); ++it) resend_.push_front(*it);
  }

  void FillWindow() {
    while (connected_ && unacked_.size() < static_cast<size_t>(options_.inflight)) {
      uint64_t seq;
      if (!resend_.empty()) {
        seq = resend_.front();
        resend_.pop_front();
        if (acked_[seq]) continue;
        ++resent_;
      } else if (next_seq_ < options_.count) {
        seq = next_seq_++;
      } else {
        return;
      }
      const std::string payload = Payload(seq);
      int mid = 0;
      const int rc = mosquitto_publish(mosq_, &mid, topic_.c_str(),
                                       static_cast<int>(payload.size()), payload.data(), 1, false);
      if (rc != MOSQ_ERR_SUCCESS) {
        resend_.push_front(seq);
        lost_ = true;
        return;
      }
      ++publishes_;
      unacked_[mid] = seq;
    }
  }

  std::string Payload(uint64_t seq) const {
    char buf[256];
    const int n = std::snprintf(
        buf, sizeof(buf),
        "{\"timestamp\":%lld,\"metrics\":{\"power_w\":%d,\"energy_wh\":%.1f},"
        "\"event_id\":\"%s-%llu\"}",
        static_cast<long long>(options_.start_ms + static_cast<int64_t>(seq) * options_.step_ms),
        100 + static_cast<int>(seq % 7), 1000.0 + static_cast<double>(seq) / 2.0,
        options_.prefix.c_str(), static_cast<unsigned long long>(seq));
    return std::string(buf, static_cast<size_t>(n));
  }

  static void OnConnect(mosquitto*, void* obj, int rc, int, const mosquitto_property*) {
    auto* self = static_cast<LoadClient*>(obj);
    if (rc == 0) {
      self->connected_ = true;
    } else {
      std::fprintf(stderr, "joule_mqtt_load: CONNACK refused: %d\n", rc);
      self->lost_ = true;
    }
  }

  static void OnDisconnect(mosquitto*, void* obj, int, const mosquitto_property*) {
    static_cast<LoadClient*>(obj)->lost_ = true;
  }

  static void OnPublish(mosquitto*, void* obj, int mid, int reason_code,
                        const mosquitto_property*) {
    auto* self = static_cast<LoadClient*>(obj);
    auto it = self->unacked_.find(mid);
    if (it == self->unacked_.end()) return;
    const uint64_t seq = it->second;
    self->unacked_.erase(it);
    if (reason_code >= 0x80) {
      // Refused (e.g. 0x97 the log is full): not stored, send it again later.
      ++self->refused_;
      self->resend_.push_back(seq);
      return;
    }
    if (!self->acked_[seq]) {
      self->acked_[seq] = true;
      ++self->acked_count_;
      if (self->options_.progress_every > 0 &&
          self->acked_count_ % self->options_.progress_every == 0) {
        std::printf("{\"acked\":%llu}\n", static_cast<unsigned long long>(self->acked_count_));
        std::fflush(stdout);
      }
    }
  }

  void Report(Clock::time_point start) const {
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    std::printf(
        "{\"count\":%llu,\"acked\":%llu,\"publishes\":%llu,\"resent\":%llu,"
        "\"reconnects\":%llu,\"refused\":%llu,\"seconds\":%.3f}\n",
        static_cast<unsigned long long>(options_.count),
        static_cast<unsigned long long>(acked_count_), static_cast<unsigned long long>(publishes_),
        static_cast<unsigned long long>(resent_),
        static_cast<unsigned long long>(connects_ > 0 ? connects_ - 1 : 0),
        static_cast<unsigned long long>(refused_), seconds);
    std::fflush(stdout);
  }

  const Options options_;
  std::string topic_;
  mosquitto* mosq_ = nullptr;
  bool connected_ = false;
  bool lost_ = false;
  uint64_t next_seq_ = 0;
  std::vector<bool> acked_;
  uint64_t acked_count_ = 0;
  std::unordered_map<int, uint64_t> unacked_;  // mid → seq
  std::deque<uint64_t> resend_;
  uint64_t publishes_ = 0;
  uint64_t resent_ = 0;
  uint64_t connects_ = 0;
  uint64_t refused_ = 0;
};

bool ParseArgs(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (i + 1 >= argc) return false;
    const char* v = argv[++i];
    if (a == "--host") {
      o->host = v;
    } else if (a == "--port") {
      o->port = std::atoi(v);
    } else if (a == "--device") {
      o->device = v;
    } else if (a == "--token") {
      o->token = v;
    } else if (a == "--count") {
      o->count = std::strtoull(v, nullptr, 10);
    } else if (a == "--start-ms") {
      o->start_ms = std::strtoll(v, nullptr, 10);
    } else if (a == "--step-ms") {
      o->step_ms = std::strtoll(v, nullptr, 10);
    } else if (a == "--inflight") {
      o->inflight = std::atoi(v);
    } else if (a == "--version") {
      o->version = std::atoi(v);
    } else if (a == "--prefix") {
      o->prefix = v;
    } else if (a == "--deadline-s") {
      o->deadline_s = std::atoi(v);
    } else if (a == "--progress-every") {
      o->progress_every = std::strtoull(v, nullptr, 10);
    } else if (a == "--cafile") {
      o->cafile = v;
    } else {
      return false;
    }
  }
  return !o->device.empty() && o->port > 0 && o->count > 0 && o->inflight > 0 &&
         (o->version == 5 || o->version == 311) && o->start_ms > 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  if (!ParseArgs(argc, argv, &options)) {
    std::fprintf(stderr,
                 "usage: joule_mqtt_load --port P --device D --start-ms EPOCH_MS [--token T] "
                 "[--count N] [--step-ms 10] [--inflight 256] [--version 5|311] [--prefix e] "
                 "[--deadline-s 600] [--progress-every 1000] [--cafile ca.pem] [--host H]\n");
    return 2;
  }
  mosquitto_lib_init();
  int rc = LoadClient(std::move(options)).Run();
  mosquitto_lib_cleanup();
  return rc;
}

// Pipelined MQTT QoS 1 load client (libmosquitto, one thread, poll over all sockets).
//
// Each of the first --devices device ids in FILE.ndjson gets its own connection (username
// = device id, as Joule requires) and publishes its own lines, in file order, to
// devices/{id}/telemetry with QoS 1, keeping up to --inflight unacknowledged messages per
// connection. With --subscribe, one more connection subscribes to devices/+/telemetry
// (QoS 1) and the run ends only when it has received every message (Mosquitto relaying the
// stream). Prints one JSON object: published, acked, received, wall_s, ack_p50_ms,
// ack_p99_ms (publish call → PUBACK).
//   mqtt_load --port P --file FILE.ndjson [--devices 1000] [--inflight 20] [--subscribe]
#include <mosquitto.h>
#include <poll.h>
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace {

double Now() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

struct Client {
  std::string id, topic;
  mosquitto* m = nullptr;
  std::vector<std::string_view> payloads;
  size_t next = 0;
  int inflight = 0;
  bool connected = false;
  std::unordered_map<int, double> sent_at;
};

std::vector<double> g_latencies;
size_t g_acked = 0, g_received = 0;
bool g_subscribed = false;

void OnConnect(mosquitto*, void* obj, int rc) {
  if (rc != 0) {
    std::fprintf(stderr, "connect refused: %d\n", rc);
    std::exit(1);
  }
  static_cast<Client*>(obj)->connected = true;
}

void OnPublish(mosquitto*, void* obj, int mid) {
  auto* c = static_cast<Client*>(obj);
  auto it = c->sent_at.find(mid);
  if (it != c->sent_at.end()) {
    g_latencies.push_back(Now() - it->second);
    c->sent_at.erase(it);
  }
  --c->inflight;
  ++g_acked;
}

void OnMessage(mosquitto*, void*, const mosquitto_message*) { ++g_received; }
void OnSubscribe(mosquitto*, void*, int, int, const int*) { g_subscribed = true; }

void Pump(std::vector<mosquitto*>& all, std::vector<pollfd>& fds) {
  fds.resize(all.size());
  for (size_t i = 0; i < all.size(); ++i) {
    fds[i].fd = mosquitto_socket(all[i]);
    fds[i].events = static_cast<short>(POLLIN | (mosquitto_want_write(all[i]) ? POLLOUT : 0));
    fds[i].revents = 0;
  }
  if (poll(fds.data(), fds.size(), 5) < 0) return;
  for (size_t i = 0; i < all.size(); ++i) {
    if (fds[i].revents & (POLLIN | POLLERR | POLLHUP)) {
      int rc = mosquitto_loop_read(all[i], 1000);
      if (rc != MOSQ_ERR_SUCCESS) {
        std::fprintf(stderr, "read failed on connection %zu: %s\n", i, mosquitto_strerror(rc));
        std::exit(1);
      }
    }
    if (fds[i].revents & POLLOUT) mosquitto_loop_write(all[i], 1000);
  }
}

}  // namespace

int main(int argc, char** argv) {
  int port = 1883, inflight = 20;
  size_t devices = 1000;
  bool subscribe = false;
  const char* file = nullptr;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? argv[++i] : (std::exit(2), argv[0]); };
    if (a == "--port")
      port = std::atoi(next());
    else if (a == "--file")
      file = next();
    else if (a == "--devices")
      devices = std::strtoul(next(), nullptr, 10);
    else if (a == "--inflight")
      inflight = std::atoi(next());
    else if (a == "--subscribe")
      subscribe = true;
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  if (file == nullptr) return 2;
  std::ifstream in(file, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string data = ss.str();
  std::vector<Client> clients;
  clients.reserve(devices);
  std::unordered_map<std::string_view, size_t> index;
  constexpr std::string_view kKey = "\"device_id\":\"";
  size_t total = 0;
  for (size_t pos = 0; pos < data.size();) {
    size_t nl = data.find('\n', pos);
    if (nl == std::string::npos) nl = data.size();
    std::string_view line(data.data() + pos, nl - pos);
    pos = nl + 1;
    size_t k = line.find(kKey);
    if (k == std::string_view::npos) continue;
    size_t s = k + kKey.size();
    std::string_view id = line.substr(s, line.find('"', s) - s);
    auto it = index.find(id);
    if (it == index.end()) {
      if (clients.size() == devices) continue;
      it = index.emplace(id, clients.size()).first;
      clients.emplace_back();
      clients.back().id = std::string(id);
      clients.back().topic = "devices/" + std::string(id) + "/telemetry";
    }
    clients[it->second].payloads.push_back(line);
    ++total;
  }
  mosquitto_lib_init();
  std::vector<mosquitto*> all;
  for (Client& c : clients) {
    c.m = mosquitto_new(c.id.c_str(), true, &c);
    mosquitto_username_pw_set(c.m, c.id.c_str(), "bench");
    mosquitto_max_inflight_messages_set(c.m, static_cast<unsigned>(inflight));
    mosquitto_connect_callback_set(c.m, OnConnect);
    mosquitto_publish_callback_set(c.m, OnPublish);
    if (mosquitto_connect(c.m, "127.0.0.1", port, 600) != MOSQ_ERR_SUCCESS) {
      std::fprintf(stderr, "cannot connect %s\n", c.id.c_str());
      return 1;
    }
    all.push_back(c.m);
  }
  Client sub;
  if (subscribe) {
    sub.id = "bench-subscriber";
    sub.m = mosquitto_new(sub.id.c_str(), true, &sub);
    mosquitto_connect_callback_set(sub.m, OnConnect);
    mosquitto_message_callback_set(sub.m, OnMessage);
    mosquitto_subscribe_callback_set(sub.m, OnSubscribe);
    if (mosquitto_connect(sub.m, "127.0.0.1", port, 600) != MOSQ_ERR_SUCCESS) return 1;
    all.push_back(sub.m);
  }
  std::vector<pollfd> fds;
  const double deadline = Now() + 600;
  auto all_connected = [&] {
    for (const Client& c : clients)
      if (!c.connected) return false;
    return !subscribe || sub.connected;
  };
  while (!all_connected()) {
    Pump(all, fds);
    if (Now() > deadline) return 1;
  }
  if (subscribe) {
    mosquitto_subscribe(sub.m, nullptr, "devices/+/telemetry", 1);
    while (!g_subscribed) Pump(all, fds);
  }
  g_latencies.reserve(total);
  const double t0 = Now();
  size_t published = 0;
  while (g_acked < total || (subscribe && g_received < total)) {
    for (Client& c : clients) {
      while (c.inflight < inflight && c.next < c.payloads.size()) {
        std::string_view p = c.payloads[c.next];
        int mid = 0;
        int rc = mosquitto_publish(c.m, &mid, c.topic.c_str(), static_cast<int>(p.size()), p.data(),
                                   1, false);
        if (rc != MOSQ_ERR_SUCCESS) {
          std::fprintf(stderr, "publish failed: %s\n", mosquitto_strerror(rc));
          return 1;
        }
        c.sent_at[mid] = Now();
        ++c.inflight;
        ++c.next;
        ++published;
      }
    }
    Pump(all, fds);
    for (mosquitto* m : all) mosquitto_loop_misc(m);
    if (Now() > deadline) {
      std::fprintf(stderr, "timeout: acked %zu received %zu of %zu\n", g_acked, g_received, total);
      return 1;
    }
  }
  const double wall = Now() - t0;
  std::sort(g_latencies.begin(), g_latencies.end());
  auto pct = [&](double p) {
    if (g_latencies.empty()) return 0.0;
    return g_latencies[std::min(g_latencies.size() - 1,
                                static_cast<size_t>(p * static_cast<double>(g_latencies.size())))] *
           1e3;
  };
  std::printf(
      "{\"connections\": %zu, \"published\": %zu, \"acked\": %zu, \"received\": %zu, "
      "\"wall_s\": %.6f, \"ack_p50_ms\": %.3f, \"ack_p99_ms\": %.3f}\n",
      clients.size(), published, g_acked, g_received, wall, pct(0.5), pct(0.99));
  for (mosquitto* m : all) {
    mosquitto_disconnect(m);
    mosquitto_destroy(m);
  }
  mosquitto_lib_cleanup();
  return 0;
}

// Feeds 100k random and mutated byte strings through the decoder under the normal build, so
// that CI exercises what the libFuzzer target (fuzz/mqtt_codec_fuzz.cc) explores further:
// the decoder must never crash, never read out of bounds (run under the asan preset), and
// every packet it accepts must re-encode to bytes that decode to the same packet.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "net/mqtt/codec.h"

namespace joule::net::mqtt {
namespace {

using V = ProtocolVersion;

std::vector<std::string> Seeds() {
  std::vector<std::string> seeds;
  for (V v : {V::kV311, V::kV5}) {
    std::string s;
    Packet c;
    c.type = PacketType::kConnect;
    c.connect.version = v;
    c.connect.client_id = "c";
    c.connect.username = "plug-1";
    c.connect.password = "token";
    c.connect.keep_alive = 30;
    if (v == V::kV5) c.connect.properties.maximum_packet_size = 1000;
    Encode(c, v, &s);
    Packet p;
    p.type = PacketType::kPublish;
    p.publish.qos = 1;
    p.publish.packet_id = 3;
    p.publish.topic = "devices/plug-1/telemetry";
    p.publish.payload = R"({"timestamp":1,"metrics":{"power_w":2}})";
    if (v == V::kV5) {
      p.publish.properties.topic_alias = 1;
      p.publish.properties.payload_format_indicator = 1;
      p.publish.properties.user_properties = {{"k", "v"}};
    }
    Encode(p, v, &s);
    Packet sub;
    sub.type = PacketType::kSubscribe;
    sub.subscribe.packet_id = 4;
    sub.subscribe.subscriptions = {{"a/#", 1}};
    Encode(sub, v, &s);
    Packet ping;
    ping.type = PacketType::kPingreq;
    Encode(ping, v, &s);
    Packet d;
    d.type = PacketType::kDisconnect;
    Encode(d, v, &s);
    seeds.push_back(std::move(s));
  }
  return seeds;
}

// Decodes everything in `data` (fed in chunks); checks re-encoding of accepted packets.
void Exercise(const std::string& data, V version, std::mt19937_64& rng) {
  Decoder d(DecoderOptions{4096, version});
  size_t pos = 0;
  Packet p;
  while (true) {
    Decoder::State s = d.Next(&p);
    if (s == Decoder::State::kError) {
      ASSERT_NE(d.error().reason_code, 0);
      return;
    }
    if (s == Decoder::State::kPacket) {
      std::string wire;
      Encode(p, d.version(), &wire);
      Decoder again(
          DecoderOptions{1 << 20, p.type == PacketType::kConnect ? V::kUnknown : d.version()});
      again.Feed(wire);
      Packet q;
      ASSERT_EQ(again.Next(&q), Decoder::State::kPacket) << again.error().message;
      ASSERT_EQ(p, q);
      continue;
    }
    if (pos >= data.size()) return;
    size_t n = std::min<size_t>(data.size() - pos, 1 + rng() % 64);
    d.Feed(std::string_view(data).substr(pos, n));
    pos += n;
  }
}

TEST(MqttCodecRandom, HundredThousandRandomAndMutatedInputs) {
  std::mt19937_64 rng(20261128);
  const std::vector<std::string> seeds = Seeds();
  constexpr int kIterations = 100000;
  for (int i = 0; i < kIterations; ++i) {
    std::string data;
    if (i % 4 == 0) {
      data.resize(rng() % 96);
      for (char& c : data) c = static_cast<char>(rng());
    } else {
      data = seeds[rng() % seeds.size()];
      const int mutations = 1 + static_cast<int>(rng() % 4);
      for (int m = 0; m < mutations && !data.empty(); ++m) {
        size_t at = rng() % data.size();
        switch (rng() % 4) {
          case 0:
            data[at] = static_cast<char>(rng());
            break;
          case 1:
            data[at] = static_cast<char>(data[at] ^ (1 << (rng() % 8)));
            break;
          case 2:
            data.erase(at, 1 + rng() % 3);
            break;
          default:
            data.insert(at, 1, static_cast<char>(rng()));
            break;
        }
      }
    }
    // Random inputs mostly start with something other than CONNECT: also decode them as a
    // connected stream of either version.
    const V version = i % 3 == 0 ? V::kUnknown : (i % 3 == 1 ? V::kV311 : V::kV5);
    Exercise(data, version, rng);
    if (HasFatalFailure()) {
      ADD_FAILURE() << "iteration " << i;
      return;
    }
  }
}

}  // namespace
}  // namespace joule::net::mqtt

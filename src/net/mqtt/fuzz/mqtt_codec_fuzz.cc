// libFuzzer target over arbitrary bytes for the MQTT decoder (docs/formats/mqtt.md).
//   scripts/fuzz.sh build && scripts/fuzz.sh run mqtt_codec_fuzz 60
// The first byte picks the decoder's starting version and the chunking of the rest.
// Invariants: no crash / out-of-bounds read; an accepted packet re-encodes to bytes that
// decode to the same packet.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "net/mqtt/codec.h"

using joule::net::mqtt::Decoder;
using joule::net::mqtt::DecoderOptions;
using joule::net::mqtt::Packet;
using joule::net::mqtt::PacketType;
using joule::net::mqtt::ProtocolVersion;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t control = data[0];
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  const ProtocolVersion start = (control & 3) == 0   ? ProtocolVersion::kUnknown
                                : (control & 3) == 1 ? ProtocolVersion::kV311
                                                     : ProtocolVersion::kV5;
  const size_t chunk = 1 + (control >> 2);
  Decoder d(DecoderOptions{1 << 16, start});
  size_t pos = 0;
  Packet p;
  while (true) {
    Decoder::State s = d.Next(&p);
    if (s == Decoder::State::kError) break;
    if (s == Decoder::State::kPacket) {
      std::string wire;
      joule::net::mqtt::Encode(p, d.version(), &wire);
      Decoder again(DecoderOptions{
          1 << 20, p.type == PacketType::kConnect ? ProtocolVersion::kUnknown : d.version()});
      again.Feed(wire);
      Packet q;
      if (again.Next(&q) != Decoder::State::kPacket || !(q == p)) std::abort();
      continue;
    }
    if (pos >= in.size()) break;
    const size_t n = std::min(chunk, in.size() - pos);
    d.Feed(in.substr(pos, n));
    pos += n;
  }
  return 0;
}

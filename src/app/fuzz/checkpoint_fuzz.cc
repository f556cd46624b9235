// libFuzzer target: the two checkpoint decoders a restart trusts — the window engine's
// state (stream::WindowEngine::RestoreState, "JSWE") and the processor checkpoint file
// (app::DecodeCheckpoint, "JOULECKP"); docs/formats/checkpoint.md.
// Build and run: scripts/fuzz.sh.
//
// The first input byte picks the decoder (bit 0) and whether the rest is the raw file
// (bit 1 clear) or a body that the harness wraps in a valid header and CRC (bit 1 set),
// so that mutations reach the body decoders behind the CRC check; the byte's upper six bits
// pick the engine state's format version (1, 2, 3 or the current 4) for the wrapped header.
// Invariants: no crash or sanitizer report and no huge allocation; an accepted state saves
// to bytes that restore and save again identically; an accepted processor checkpoint
// re-encodes to bytes that decode to the same checkpoint.
// Not checked: that a restored engine can go on processing. The decoders check structure
// (lengths, counts, kinds) and the CRC rejects corruption, but a CRC-valid file with
// forged contents (say, unsorted sample times near INT64_MIN) is trusted like the engine's
// own output — a forger with write access to the data dir is outside the threat model
// (docs/RELIABILITY.md).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "app/processor_checkpoint.h"
#include "common/crc32c.h"
#include "stream/window_engine.h"

namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "guarantee violated: %s\n", what);
    std::abort();
  }
}

template <typename T>
void Put(std::string* out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out->append(b, sizeof(T));
}

constexpr int64_t kSecond = 1'000'000'000;

void FuzzEngineState(std::string_view body, bool wrap, uint32_t version) {
  std::string data;
  if (wrap) {
    // magic, version, payload length, payload (window_ns and max_gap_ns of the default
    // options first, so the option check passes), masked CRC of everything before it.
    std::string payload;
    Put<int64_t>(&payload, 60 * kSecond);
    Put<int64_t>(&payload, 300 * kSecond);
    payload.append(body);
    data.append("JSWE", 4);
    Put<uint32_t>(&data, version);
    Put<uint64_t>(&data, payload.size());
    data += payload;
    Put<uint32_t>(&data, joule::crc32c::Mask(joule::crc32c::Value(data)));
  } else {
    data.assign(body);
  }
  joule::stream::WindowEngine engine(joule::stream::EngineOptions{});
  if (!engine.RestoreState(data).ok()) return;
  std::string saved;
  Check(engine.SaveState(&saved).ok(), "restored state saves");
  joule::stream::WindowEngine again(joule::stream::EngineOptions{});
  Check(again.RestoreState(saved).ok(), "saved state restores");
  std::string saved2;
  Check(again.SaveState(&saved2).ok(), "state saves twice");
  Check(saved == saved2, "save/restore/save is stable");
}

void FuzzProcessorCheckpoint(std::string_view body, bool wrap) {
  std::string data;
  if (wrap) {
    data.append("JOULECKP", 8);
    Put<uint32_t>(&data, 1);
    Put<uint64_t>(&data, body.size());
    Put<uint32_t>(&data, joule::crc32c::Mask(joule::crc32c::Value(body)));
    data.append(body);
  } else {
    data.assign(body);
  }
  joule::app::ProcessorCheckpoint c;
  if (!joule::app::DecodeCheckpoint(data, &c).ok()) return;
  std::string again = joule::app::EncodeCheckpoint(c);
  joule::app::ProcessorCheckpoint c2;
  Check(joule::app::DecodeCheckpoint(again, &c2).ok(), "re-encoded checkpoint decodes");
  // (Bytes, not Event ==, compare the readings: a NaN sample is not equal to itself.)
  Check(c2.offsets == c.offsets && c2.engine_state == c.engine_state &&
            c2.readings.size() == c.readings.size() && c2.replay_applied == c.replay_applied,
        "checkpoint round trip");
  Check(joule::app::EncodeCheckpoint(c2) == again, "encoding is stable");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  const bool wrap = (data[0] & 2) != 0;
  if ((data[0] & 1) == 0) {
    FuzzEngineState(body, wrap, 1 + (data[0] >> 2) % 4);
  } else {
    FuzzProcessorCheckpoint(body, wrap);
  }
  return 0;
}

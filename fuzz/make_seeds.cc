// Writes the binary seed inputs of the fuzz corpora: log segments (src/log/fuzz/corpus)
// and checkpoints (src/app/fuzz/corpus), made with the real encoders so the fuzzers start
// from valid files. Usage: make_seeds <path of src/>. The outputs are committed.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "app/processor_checkpoint.h"
#include "log/segment_format.h"
#include "model/event.h"
#include "stream/window_engine.h"

namespace {

constexpr int64_t kSecond = 1'000'000'000;
constexpr int64_t kT0 = 1'795'888'800'000'000'000;  // 2026-11-28T18:00:00Z

void Write(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f) {
    std::fprintf(stderr, "cannot write %s\n", path.c_str());
    std::exit(1);
  }
}

joule::model::Event MakeEvent(const std::string& device, int64_t t, double w) {
  joule::model::Event e;
  e.device_id = device;
  e.event_id = device + "-" + std::to_string(t / kSecond);
  e.timestamp_ns = t;
  e.received_at_ns = t + 5'000'000;
  e.metrics.push_back({"power_w", w});
  e.metrics.push_back({"energy_wh", w / 60});
  e.meta_json = R"({"fw":"1.2"})";
  return e;
}

class NullSink : public joule::stream::RecordSink {
 public:
  void Emit(const joule::model::AggregateRecord&) override {}
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seeds <src dir>\n");
    return 2;
  }
  const std::string src = argv[1];

  // Log segments: three events as records 0..2, raw (mode 0) and framed (mode 1).
  std::string segment;
  std::string lines;
  for (int i = 0; i < 3; ++i) {
    std::string payload;
    joule::model::EncodeEvent(MakeEvent("plug-" + std::to_string(i), kT0 + i * kSecond, 10 + i),
                              &payload);
    joule::log::EncodeRecord(static_cast<uint64_t>(i), kT0 + i, payload, &segment);
    if (i > 0) lines += '\n';
    lines += payload;
  }
  const std::string log_dir = src + "/log/fuzz/corpus/";
  Write(log_dir + "segment_3_records", std::string(1, '\0') + segment);
  Write(log_dir + "segment_torn_tail",
        std::string(1, '\0') + segment.substr(0, segment.size() - 7));
  Write(log_dir + "framed_events", std::string("\x01\xff\xff\xff\xff", 5) + lines);
  Write(log_dir + "framed_cut_and_flip", std::string("\x01\x40\x00\x13\x00", 5) + lines);

  // Checkpoints: an engine with open windows, late samples and dedup keys.
  joule::stream::WindowEngine engine(joule::stream::EngineOptions{});
  NullSink sink;
  for (int i = 0; i < 40; ++i) {
    auto e = MakeEvent("plug-" + std::to_string(i % 3), kT0 + i * 7 * kSecond, 5 + i % 11);
    engine.Process(e, e.timestamp_ns, &sink);
    if (i % 5 == 0) engine.Process(e, e.timestamp_ns, &sink);  // a duplicate
  }
  engine.Tick(kT0 + 300 * kSecond, &sink);
  auto late = MakeEvent("plug-1", kT0 + 20 * kSecond, 99);
  engine.Process(late, kT0 + 301 * kSecond, &sink);
  std::string state;
  if (!engine.SaveState(&state).ok()) return 1;
  const std::string ckp_dir = src + "/app/fuzz/corpus/";
  Write(ckp_dir + "engine_state", std::string(1, '\0') + state);
  // Wrapped: the payload after window_ns and max_gap_ns, without the CRC (see the harness).
  uint64_t payload_len;
  std::memcpy(&payload_len, state.data() + 8, 8);
  Write(ckp_dir + "engine_state_body",
        std::string(1, '\2') + state.substr(16 + 16, payload_len - 16));

  joule::app::ProcessorCheckpoint c;
  c.offsets = {{0, 41}, {3, 7}};
  c.engine_state = state;
  c.readings.push_back(MakeEvent("plug-0", kT0 + 273 * kSecond, 12));
  c.readings.push_back(MakeEvent("plug-2", kT0 + 266 * kSecond, 7));
  const std::string file = joule::app::EncodeCheckpoint(c);
  Write(ckp_dir + "processor_checkpoint", std::string(1, '\1') + file);
  Write(ckp_dir + "processor_checkpoint_body", std::string(1, '\3') + file.substr(8 + 16));
  return 0;
}

// libFuzzer target: the window engine fed a stream of events, ticks and checkpoint round
// trips decoded from the input (a few devices in zones with 30- and 45-minute offsets and
// DST; power, counter and gauge metrics, names new and old, in any order; timestamps
// jumping back and forth across windows, the out-of-orderness bound, allowed lateness and
// max_gap; duplicates with and without event ids). Build and run: scripts/fuzz.sh.
// Invariants: no crash or sanitizer report; every emission of a record key carries a
// higher version than the previous one (CONTRACT §2, "keep the highest version" keeps the
// newest); a record's metric counts never exceed its event count; a state saves, restores
// and saves again to the same bytes, and the restored engine goes on emitting exactly what
// the original emits.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "common/clock.h"
#include "model/event.h"
#include "stream/window_engine.h"

namespace {

using joule::kNanosPerSecond;
using joule::model::AggregateRecord;
using joule::stream::EngineOptions;
using joule::stream::WindowEngine;

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "guarantee violated: %s\n", what);
    std::abort();
  }
}

struct Zones : joule::stream::TimezoneProvider {
  std::optional<std::string> TimezoneOf(std::string_view id) override {
    static const char* kZones[] = {"UTC", "America/New_York", "Asia/Kathmandu",
                                   "Australia/Lord_Howe"};
    return kZones[id.empty() ? 0 : static_cast<unsigned char>(id.back()) % 4];
  }
};

struct VersionCheck : joule::stream::RecordSink {
  std::map<std::tuple<std::string, int, int64_t>, uint64_t> last;
  std::vector<AggregateRecord> out;
  bool keep = false;
  void Emit(const AggregateRecord& r) override {
    auto key = std::make_tuple(r.device_id, static_cast<int>(r.resolution), r.window_start_ns);
    auto it = last.find(key);
    if (it != last.end()) Check(r.version > it->second, "versions increase per key");
    last[key] = r.version;
    for (const auto& m : r.metrics) Check(m.count <= r.count, "metric count <= event count");
    Check(r.window_end_ns > r.window_start_ns, "windows are not empty");
    if (keep) out.push_back(r);
  }
};

class Input {
 public:
  Input(const uint8_t* data, size_t size) : p_(data), end_(data + size) {}
  bool done() const { return p_ >= end_; }
  uint8_t Byte() { return p_ < end_ ? *p_++ : 0; }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
};

EngineOptions Options() {
  EngineOptions o;
  o.window_ns = 10 * kNanosPerSecond;
  o.out_of_orderness_ns = 3 * kNanosPerSecond;
  o.allowed_lateness_ns = 60 * kNanosPerSecond;
  o.idle_timeout_ns = 20 * kNanosPerSecond;
  o.early_fire_interval_ns = 2 * kNanosPerSecond;
  o.max_gap_ns = 30 * kNanosPerSecond;
  return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const char* kNames[] = {"power_w", "energy_wh", "voltage_v", "x_total",
                                 "pv_w",    "temp_c",    "a",         "n_wh"};
  Zones zones;
  auto engine = std::make_unique<WindowEngine>(Options(), &zones);
  VersionCheck sink;
  Input in(data, size);
  // 2026-11-01 04:00 UTC: New York's DST ends a few hours later, Lord Howe is in DST.
  int64_t now = 1793505600LL * kNanosPerSecond;
  int64_t device_time[4] = {now, now, now, now};
  uint64_t next_id = 0;
  while (!in.done()) {
    const uint8_t op = in.Byte();
    if ((op & 3) != 3) {  // an event
      const int dev = (op >> 2) & 3;
      const int8_t step = static_cast<int8_t>(in.Byte());  // ± 64 s in 0.5 s steps
      device_time[dev] += static_cast<int64_t>(step) * (kNanosPerSecond / 2);
      joule::model::Event e;
      e.device_id = "dev-" + std::to_string(dev);
      e.timestamp_ns = device_time[dev];
      e.received_at_ns = now;
      const uint8_t shape = in.Byte();
      if (shape & 0x80) e.event_id = "id-" + std::to_string(shape & 0x40 ? next_id : next_id++);
      uint32_t used = 0;
      for (int k = 0, n = 1 + (shape & 3); k < n; ++k) {
        const uint8_t which = in.Byte();
        const int name = which & 7;
        if (used & (1u << name)) continue;  // names are unique within an event
        used |= 1u << name;
        const int16_t raw = static_cast<int16_t>(in.Byte() << 8 | in.Byte());
        double v = raw / 16.0;
        if (which & 0x80) v = static_cast<double>(raw) * 1e6;
        e.metrics.push_back({kNames[name], v});
      }
      if (e.metrics.empty()) continue;
      engine->Process(e, now, &sink);
    } else if ((op & 0x80) == 0) {  // processing time passes
      now += static_cast<int64_t>(op >> 2) * (kNanosPerSecond / 4);
      engine->Tick(now, &sink);
    } else {  // checkpoint: save, restore into a new engine, save again
      std::string state, again;
      Check(engine->SaveState(&state).ok(), "state saves");
      auto restored = std::make_unique<WindowEngine>(Options(), &zones);
      Check(restored->RestoreState(state).ok(), "saved state restores");
      Check(restored->SaveState(&again).ok(), "restored state saves");
      Check(state == again, "save/restore/save is stable");
      // Both go on identically over the same tick; the restored one carries on.
      sink.keep = true;
      engine->Tick(now + 70 * kNanosPerSecond, &sink);
      VersionCheck twin;
      twin.keep = true;
      restored->Tick(now + 70 * kNanosPerSecond, &twin);
      Check(sink.out == twin.out, "a restored engine emits what the original emits");
      sink.keep = false;
      sink.out.clear();
      engine = std::move(restored);
      now += 70 * kNanosPerSecond;
    }
  }
  engine->Tick(now + 3600 * kNanosPerSecond, &sink);
  return 0;
}

// SaveState/RestoreState: round trip, and rejection of damaged or mismatched checkpoints.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "common/clock.h"
#include "stream/window_engine.h"

namespace joule::stream {
namespace {

struct Collect : RecordSink {
  void Emit(const model::AggregateRecord& r) override { out.push_back(r); }
  std::vector<model::AggregateRecord> out;
};

void Feed(WindowEngine& e, int from_s, int to_s, Collect* sink) {
  const int64_t base = 1795000000LL * kNanosPerSecond;
  for (int s = from_s; s < to_s; ++s) {
    model::Event ev;
    ev.device_id = s % 2 ? "a" : "b";
    ev.timestamp_ns = base + s * kNanosPerSecond;
    ev.received_at_ns = ev.timestamp_ns;
    ev.event_id = s % 3 ? "" : "id" + std::to_string(s);
    ev.metrics = {{"power_w", 100.0 + s % 7}, {"energy_wh", 1000.0 + s}, {"voltage_v", 230}};
    e.Process(ev, ev.timestamp_ns, sink);
  }
}

TEST(CheckpointTest, RoundTripContinuesIdentically) {
  WindowEngine a{EngineOptions{}};
  Collect ca;
  Feed(a, 0, 500, &ca);
  std::string bytes;
  ASSERT_TRUE(a.SaveState(&bytes).ok());
  WindowEngine b{EngineOptions{}};
  ASSERT_TRUE(b.RestoreState(bytes).ok());
  std::string again;
  ASSERT_TRUE(b.SaveState(&again).ok());
  EXPECT_EQ(bytes, again);
  Collect ra, rb;
  Feed(a, 500, 1000, &ra);
  Feed(b, 500, 1000, &rb);
  EXPECT_EQ(ra.out, rb.out);
  EXPECT_GT(ra.out.size(), 10u);
  auto sa = a.stats(), sb = b.stats();
  EXPECT_EQ(sa.events, sb.events);
  EXPECT_EQ(sa.devices, 2u);
  // Replaying already-seen events after a restore: all duplicates.
  Feed(b, 900, 1000, &rb);
  EXPECT_EQ(b.stats().duplicates, 100u);
}

// SaveStateTo streams exactly SaveState's bytes, announced at their size before the first
// piece, in pieces of about the asked size, whatever that size; a failing sink stops it.
struct Pieces : StateSink {
  Status Begin(uint64_t total) override {
    ++begins;
    announced = total;
    return Status::Ok();
  }
  Status Write(std::string_view piece) override {
    if (fail_at >= 0 && static_cast<int>(sizes.size()) == fail_at) {
      return Status::IoError("disk full");
    }
    sizes.push_back(piece.size());
    bytes.append(piece);
    return Status::Ok();
  }
  int begins = 0;
  uint64_t announced = 0;
  int fail_at = -1;
  std::vector<size_t> sizes;
  std::string bytes;
};

TEST(CheckpointTest, StreamedStateIsTheSameBytes) {
  WindowEngine e{EngineOptions{}};
  Collect c;
  Feed(e, 0, 700, &c);
  std::string want;
  ASSERT_TRUE(e.SaveState(&want).ok());
  for (size_t chunk : {size_t{1}, size_t{100}, size_t{4096}, size_t{1} << 20}) {
    Pieces p;
    std::string buffer = "left over";
    ASSERT_TRUE(e.SaveStateTo(p, &buffer, chunk).ok()) << chunk;
    EXPECT_EQ(p.begins, 1);
    EXPECT_EQ(p.announced, want.size());
    EXPECT_TRUE(p.bytes == want) << chunk;
    if (chunk >= want.size()) {
      EXPECT_EQ(p.sizes.size(), 2u);  // the state, then its CRC
    }
    if (chunk == 100) {
      EXPECT_GT(p.sizes.size(), 3u);
    }
  }
  Pieces failing;
  failing.fail_at = 1;
  std::string buffer;
  Status st = e.SaveStateTo(failing, &buffer, 100);
  EXPECT_EQ(st.code(), StatusCode::kIoError);
  EXPECT_EQ(failing.sizes.size(), 1u);
  // An empty engine too.
  WindowEngine empty{EngineOptions{}};
  ASSERT_TRUE(empty.SaveState(&want).ok());
  Pieces p;
  ASSERT_TRUE(empty.SaveStateTo(p, &buffer).ok());
  EXPECT_TRUE(p.bytes == want);
  WindowEngine back{EngineOptions{}};
  EXPECT_TRUE(back.RestoreState(p.bytes).ok());
}

// Health's last_seen is when ingest accepted the device's latest event (received_at), also
// when the event is processed much later — replayed from the log after a restart — and
// across a checkpoint (found by a black-box test: health showed the restart time for every
// device of the replayed log tail).
TEST(CheckpointTest, LastSeenIsTheIngestTimeAlsoForReplayedEvents) {
  const int64_t base = 1795000000LL * kNanosPerSecond;
  const int64_t restart = base + 3600 * kNanosPerSecond;
  WindowEngine e{EngineOptions{}};
  Collect sink;
  for (int s = 0; s < 20; ++s) {  // in order (pended rows), then one out of order
    model::Event ev;
    ev.device_id = "d";
    ev.timestamp_ns = base + (s == 19 ? 3 : s) * kNanosPerSecond;
    ev.received_at_ns = base + s * kNanosPerSecond + 250'000'000;
    ev.metrics = {{"power_w", 100.0 + s}};
    e.Process(ev, restart + s, &sink);
  }
  WindowEngine::DeviceHealth h;
  ASSERT_TRUE(e.Health("d", &h));
  EXPECT_EQ(h.last_seen_ns, base + 19 * kNanosPerSecond + 250'000'000);
  std::string bytes;
  ASSERT_TRUE(e.SaveState(&bytes).ok());
  WindowEngine restored{EngineOptions{}};
  ASSERT_TRUE(restored.RestoreState(bytes).ok());
  WindowEngine::DeviceHealth hr;
  ASSERT_TRUE(restored.Health("d", &hr));
  EXPECT_EQ(hr.last_seen_ns, h.last_seen_ns);
}

// Health's last_seen is the received_at of the event that arrived last, also when the
// server's clock stepped back between two events (found by a black-box test: after a
// step back, last_seen stayed at the earlier, future time).
TEST(CheckpointTest, LastSeenFollowsTheClockBack) {
  const int64_t base = 1795000000LL * kNanosPerSecond;
  WindowEngine e{EngineOptions{}};
  Collect sink;
  for (int s = 0; s < 4; ++s) {
    model::Event ev;
    ev.device_id = "d";
    ev.timestamp_ns = base + s * kNanosPerSecond;
    // Received with the server's clock 10 min ahead, then (s >= 2) corrected.
    ev.received_at_ns = ev.timestamp_ns + (s < 2 ? 10 * kNanosPerMinute : 0);
    ev.metrics = {{"power_w", 100.0 + s}};
    e.Process(ev, base + s * kNanosPerSecond, &sink);
  }
  WindowEngine::DeviceHealth h;
  ASSERT_TRUE(e.Health("d", &h));
  EXPECT_EQ(h.last_seen_ns, base + 3 * kNanosPerSecond);
}

// A checkpoint written while the server's clock was ahead holds processing times from the
// future (last_seen, next_early, the last tick). Restored with an earlier clock, they are
// clamped to the restore time: early firings and idle finalization go on from there
// (found by a black-box test: after a restart with the clock 2 h earlier, a silent device's
// window stayed open, and a sending one's was not published, for 2 h).
TEST(CheckpointTest, ProcessingTimesFromTheFutureAreClampedOnRestore) {
  const int64_t base = 1795000000LL * kNanosPerSecond;  // :40 in a minute
  const int64_t ahead = 2 * kNanosPerHour;
  auto event = [&](int s) {
    model::Event ev;
    ev.device_id = "d";
    ev.timestamp_ns = base + s * kNanosPerSecond;
    ev.received_at_ns = ev.timestamp_ns + ahead;
    ev.metrics = {{"power_w", 100.0 + s}};
    return ev;
  };
  WindowEngine e{EngineOptions{}};
  Collect sink;
  for (int s = 0; s < 5; ++s) e.Process(event(s), base + ahead + s * kNanosPerSecond, &sink);
  std::string bytes;
  ASSERT_TRUE(e.SaveState(&bytes).ok());

  const int64_t restart = base + 10 * kNanosPerSecond;  // the clock is right again
  WindowEngine restored{EngineOptions{}};
  ASSERT_TRUE(restored.RestoreState(bytes, restart).ok());
  Collect out;
  restored.Process(event(6), restart, &out);
  restored.Tick(restart + 6 * kNanosPerSecond, &out);  // past early_fire_interval
  auto base_window = [&](bool final) {
    for (const auto& r : out.out) {
      if (r.resolution == model::Resolution::kBase && r.final == final) return r.count;
    }
    return uint64_t{0};
  };
  EXPECT_EQ(base_window(false), 6u) << "no early firing after the restore";
  out.out.clear();
  restored.Tick(restart + 70 * kNanosPerSecond, &out);  // silent for more than idle_timeout
  EXPECT_EQ(base_window(true), 6u) << "the silent device's window was not finalized";
}

// A format-version-2 checkpoint (written by the engine of 2026-11-29 after Feed(0, 500);
// it stored the last early firing's full content, version 3 its fingerprint) restores to an
// engine that continues exactly as one that saw those events live: same records, same
// suppressed early firings.
TEST(CheckpointTest, ReadsFormatVersion2) {
  std::ifstream in(std::string(JOULE_STREAM_TESTDATA_DIR) + "/checkpoint_v2.bin", std::ios::binary);
  ASSERT_TRUE(in.good());
  const std::string v2((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_EQ(v2.substr(0, 5), std::string("JSWE\x02", 5));
  WindowEngine restored{EngineOptions{}};
  ASSERT_TRUE(restored.RestoreState(v2).ok());
  WindowEngine live{EngineOptions{}};
  Collect ignored;
  Feed(live, 0, 500, &ignored);
  std::string from_v2, from_live;
  ASSERT_TRUE(restored.SaveState(&from_v2).ok());
  ASSERT_TRUE(live.SaveState(&from_live).ok());
  // Now in format version 6. (Not the same bytes: the version-2 engine kept no gauge
  // samples, so the restored histories are complete only from the next window on.)
  EXPECT_EQ(from_v2.substr(4, 1), std::string("\x06", 1));
  Collect ra, rb;
  live.Tick(1795000000LL * kNanosPerSecond + 502 * kNanosPerSecond, &ra);
  restored.Tick(1795000000LL * kNanosPerSecond + 502 * kNanosPerSecond, &rb);
  Feed(live, 500, 1000, &ra);
  Feed(restored, 500, 1000, &rb);
  EXPECT_EQ(ra.out, rb.out);
  EXPECT_GT(ra.out.size(), 10u);
}

TEST(CheckpointTest, RejectsDamage) {
  WindowEngine a{EngineOptions{}};
  Collect c;
  Feed(a, 0, 300, &c);
  std::string bytes;
  ASSERT_TRUE(a.SaveState(&bytes).ok());
  WindowEngine b{EngineOptions{}};
  for (size_t pos : {size_t{0}, size_t{5}, size_t{9}, bytes.size() / 2, bytes.size() - 1}) {
    std::string bad = bytes;
    bad[pos] ^= 0x10;
    Status st = b.RestoreState(bad);
    EXPECT_EQ(st.code(), StatusCode::kCorruption) << pos;
    EXPECT_EQ(b.stats().devices, 0u);
  }
  EXPECT_EQ(b.RestoreState(bytes.substr(0, bytes.size() - 7)).code(), StatusCode::kCorruption);
  EXPECT_EQ(b.RestoreState("").code(), StatusCode::kCorruption);
  EngineOptions other;
  other.window_ns = 30 * kNanosPerSecond;
  WindowEngine c30(other);
  Status changed = c30.RestoreState(bytes);
  EXPECT_EQ(changed.code(), StatusCode::kInvalidArgument);
  // The key that changed and its old value (found by a black-box test: it named neither).
  ASSERT_EQ(EngineOptions().window_ns, kNanosPerMinute);
  EXPECT_EQ(changed.message(), "checkpoint: written with stream.window = \"1m\" (now \"30s\")");
  EXPECT_TRUE(b.RestoreState(bytes).ok());
  EXPECT_EQ(b.stats().devices, 2u);
}

// A metric's kind is fixed per device in the state (histories, counter baselines): a
// [metrics.kinds] change is refused like a window change, naming the metric and the key
// (it was applied to new devices only: found by a black-box test).
TEST(CheckpointTest, RefusesAChangedMetricKind) {
  WindowEngine a{EngineOptions{}};
  Collect c;
  Feed(a, 0, 300, &c);
  std::string bytes;
  ASSERT_TRUE(a.SaveState(&bytes).ok());

  EngineOptions gauge;
  gauge.kinds["power_w"] = model::MetricKind::kGauge;
  WindowEngine g(gauge);
  Status st = g.RestoreState(bytes);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("metric power_w of kind power"), std::string::npos) << st.ToString();
  EXPECT_NE(st.message().find("now of kind gauge (metrics.kinds.power_w)"), std::string::npos)
      << st.ToString();
  EXPECT_EQ(g.stats().devices, 0u);

  // Set in the config when the checkpoint was written, unset now: back to the name's kind.
  EngineOptions counter;
  counter.kinds["voltage_v"] = model::MetricKind::kCounter;
  WindowEngine k(counter);
  Collect kc;
  Feed(k, 0, 300, &kc);
  bytes.clear();
  ASSERT_TRUE(k.SaveState(&bytes).ok());
  WindowEngine d{EngineOptions{}};
  st = d.RestoreState(bytes);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("now of kind gauge (by its name, metrics.kinds.voltage_v not set)"),
            std::string::npos)
      << st.ToString();

  // An override that says what the name says changes nothing.
  EngineOptions same;
  same.kinds["power_w"] = model::MetricKind::kPower;
  same.kinds["voltage_v"] = model::MetricKind::kCounter;
  WindowEngine s(same);
  EXPECT_TRUE(s.RestoreState(bytes).ok());
  EXPECT_EQ(s.stats().devices, 2u);
}

// After a restore, a recovery epoch makes every later emission outrank anything the crashed
// run can have emitted after the checkpoint (its early firings are not reproduced one for one).
TEST(CheckpointTest, RecoveryEpochRaisesVersions) {
  WindowEngine a{EngineOptions{}};
  Collect ca;
  Feed(a, 0, 500, &ca);
  std::string bytes;
  ASSERT_TRUE(a.SaveState(&bytes).ok());
  EXPECT_EQ(a.version_epoch(), 0u);
  Collect after_crash;  // what the "crashed" run emits after its checkpoint
  Feed(a, 500, 1000, &after_crash);

  WindowEngine b{EngineOptions{}};
  ASSERT_TRUE(b.RestoreState(bytes).ok());
  b.BeginRecoveryEpoch();
  EXPECT_EQ(b.version_epoch(), 1u);
  Collect replay;
  Feed(b, 500, 1000, &replay);
  ASSERT_FALSE(replay.out.empty());
  uint64_t max_before = 0;
  for (const auto& r : ca.out) max_before = std::max(max_before, r.version);
  for (const auto& r : after_crash.out) max_before = std::max(max_before, r.version);
  for (const auto& r : replay.out) {
    EXPECT_GT(r.version, max_before);
    EXPECT_GT(r.version, uint64_t{1} << 32);
  }
  // The epoch is saved; a second recovery goes higher again.
  std::string again;
  ASSERT_TRUE(b.SaveState(&again).ok());
  WindowEngine c{EngineOptions{}};
  ASSERT_TRUE(c.RestoreState(again).ok());
  EXPECT_EQ(c.version_epoch(), 1u);
  c.BeginRecoveryEpoch();
  Collect replay2;
  Feed(c, 1000, 1200, &replay2);
  ASSERT_FALSE(replay2.out.empty());
  for (const auto& r : replay2.out) EXPECT_GT(r.version, uint64_t{2} << 32);
}

}  // namespace
}  // namespace joule::stream

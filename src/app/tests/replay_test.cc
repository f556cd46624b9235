// ReplayArchive (src/app/replay.h): which windows it writes (settled ones only), with
// which versions, and that a second run writes nothing. Archive written with the real
// ArchiveWriter into a temp dir; history in the in-memory store.
#include "app/replay.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <string>
#include <vector>

#include "app/processor_checkpoint.h"
#include "app/restore_seed.h"
#include "model/partition.h"
#include "store/archive/archive_writer.h"
#include "store/history_memory/memory_history_store.h"

namespace joule::app {
namespace {

constexpr int64_t kS = kNanosPerSecond;
// A minute boundary well inside the history store's retention horizon.
const int64_t kT0 = (SystemClock::Default()->NowNanos() / kNanosPerHour - 2) * kNanosPerHour;

stream::EngineOptions Options() {
  stream::EngineOptions o;
  o.window_ns = 60 * kS;
  o.out_of_orderness_ns = 1 * kS;
  o.allowed_lateness_ns = 10 * kS;
  o.max_gap_ns = 30 * kS;
  o.idle_timeout_ns = 2 * kS;
  return o;
}

model::Event Ev(int64_t t, double power) {
  model::Event e;
  e.device_id = "plug-1";
  e.timestamp_ns = t;
  e.received_at_ns = t;
  e.metrics = {{"power_w", power}};
  return e;
}

class ReplayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/joule-replay-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Archives `events` (in this order) in one sealed round.
  void Archive(const std::vector<model::Event>& events) {
    store::ArchiveWriterOptions o;
    o.root = dir_ + "/archive";
    o.partitions = 1;
    auto writer = store::ArchiveWriter::Open(o);
    ASSERT_TRUE(writer.ok()) << writer.status().ToString();
    for (const auto& e : events) ASSERT_TRUE((*writer)->Add(0, offset_++, e).ok());
    ASSERT_TRUE((*writer)->Seal().ok());
  }

  ReplayStats Replay(store::HistoryStore* history, int64_t live_watermark = 0,
                     std::vector<BaseCorrection>* corrections = nullptr, bool dry_run = false) {
    ReplayRequest req;
    req.dry_run = dry_run;
    if (corrections) {
      req.hand_over = [corrections](uint64_t, const std::vector<BaseCorrection>& c) {
        corrections->insert(corrections->end(), c.begin(), c.end());
        return Result<bool>(true);
      };
    }
    req.archive_dir = dir_ + "/archive";
    req.from_ns = from_ns_;
    req.to_ns = kT0 + 30 * 60 * kS;
    req.engine = Options();
    if (seed_) {
      req.device_events = [this](std::string_view device, const std::vector<model::Event>& events,
                                 int64_t settled_end) {
        seed_->AddDevice(device, events, settled_end);
      };
    }
    if (live_watermark) {
      req.live_watermark = [live_watermark](std::string_view, int64_t* wm) {
        *wm = live_watermark;
        return true;
      };
    }
    std::vector<std::string> phases;
    ReplayProgress last_reading, last_computing;
    auto stats = ReplayArchive(req, history, nullptr, nullptr, [&](const ReplayProgress& p) {
      if (phases.empty() || phases.back() != p.phase) phases.push_back(p.phase);
      if (p.phase == "reading") last_reading = p;
      if (p.phase == "computing") last_computing = p;
    });
    EXPECT_TRUE(stats.ok()) << stats.status().ToString();
    EXPECT_EQ(phases, (std::vector<std::string>{"reading", "computing", "done"}));
    // Each phase's last report is complete.
    EXPECT_GT(last_reading.files_total, 0u);
    EXPECT_EQ(last_reading.files_done, last_reading.files_total);
    EXPECT_EQ(last_computing.devices_done, last_computing.devices_total);
    return stats.ok() ? *stats : ReplayStats();
  }

  std::string dir_;
  uint64_t offset_ = 0;
  int64_t from_ns_ = kT0;       // the range replayed: [from_ns_, kT0 + 30 min)
  EngineSeed* seed_ = nullptr;  // set: the replay of a data dir with no engine state
};

// 20 minutes every 10 s, the last sample at kT0 + 1190 s; one too-late event in minute 1.
std::vector<model::Event> Series() {
  std::vector<model::Event> v;
  for (int i = 0; i < 120; ++i) v.push_back(Ev(kT0 + i * 10 * kS, 100 + i % 7));
  v.push_back(Ev(kT0 + 95 * kS + kS / 2, 1000));  // archive order: after the others
  return v;
}

TEST_F(ReplayTest, WritesOnlySettledWindowsWithReplayVersionsAndIsIdempotent) {
  Archive(Series());
  store::MemoryHistoryStore history;
  // A live record of minute 1 without the too-late event.
  model::AggregateRecord live;
  live.device_id = "plug-1";
  live.window_start_ns = kT0 + 60 * kS;
  live.window_end_ns = kT0 + 120 * kS;
  live.final = true;
  live.version = 5;
  live.count = 6;
  ASSERT_TRUE(history.Put({live}).ok());

  ReplayStats first = Replay(&history);
  EXPECT_EQ(first.events_read, 121u);
  EXPECT_EQ(first.devices, 1u);
  EXPECT_GT(first.records_written, 0u);
  EXPECT_GT(first.records_live, 0u);
  // H = 1190 s − 1 s; settled: window_end <= H − 10 s − 30 s = 1149 s → minutes 0..18.
  const int64_t settled_end = kT0 + 1149 * kS;
  for (int m = 0; m < 20; ++m) {
    auto r = history.Get("plug-1", model::Resolution::kBase, kT0 + m * 60 * kS);
    ASSERT_TRUE(r.ok());
    const bool settled = kT0 + (m + 1) * 60 * kS <= settled_end;
    ASSERT_EQ(r->has_value(), settled) << "minute " << m;
    if (!settled) continue;
    EXPECT_EQ((*r)->version, kReplayVersionBase) << "minute " << m;
    EXPECT_EQ((*r)->count, m == 1 ? 7u : 6u) << "minute " << m;
  }

  ReplayStats second = Replay(&history);
  EXPECT_EQ(second.records_written, 0u);
  EXPECT_EQ(second.records_unchanged, first.records_written);
  EXPECT_EQ(second.records_live, first.records_live);

  // A newer too-late event: rewritten with stored + 1.
  Archive({Ev(kT0 + 125 * kS + kS / 2, 2000)});
  ReplayStats third = Replay(&history);
  EXPECT_GE(third.records_written, 1u);
  auto m2 = history.Get("plug-1", model::Resolution::kBase, kT0 + 120 * kS);
  ASSERT_TRUE(m2.ok() && m2->has_value());
  EXPECT_EQ((*m2)->count, 7u);
  EXPECT_EQ((*m2)->version, kReplayVersionBase + 1);
}

// The first copy received wins (CONTRACT §1), also when a later copy of the event_id has
// an earlier event time in the hour before, which the archive holds first (found by a
// black-box test: replay kept the later copy).
TEST_F(ReplayTest, TheFirstCopyReceivedWinsAcrossArchiveHours) {
  std::vector<model::Event> events = Series();
  model::Event original = Ev(kT0 + 2 * kS, 500);
  original.event_id = "b";
  original.received_at_ns = kT0 + 2 * kS;
  model::Event copy = Ev(kT0 - kS, 999);  // the hour before kT0
  copy.event_id = "b";
  copy.received_at_ns = kT0 + 60 * kS;
  events.push_back(original);
  events.push_back(copy);
  Archive(events);
  store::MemoryHistoryStore history;
  ReplayStats stats = Replay(&history);
  EXPECT_EQ(stats.duplicates, 1u);
  auto m0 = history.Get("plug-1", model::Resolution::kBase, kT0);
  ASSERT_TRUE(m0.ok() && m0->has_value());
  EXPECT_EQ((*m0)->count, 7u);
  const model::MetricAggregate* p = (*m0)->FindMetric("power_w");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->max, 500);
}

TEST_F(ReplayTest, LiveWatermarkSettlesMoreWindowsAndFewerEventsAreLeftAlone) {
  Archive(Series());
  store::MemoryHistoryStore history;
  // The live engine is further (events not in the range): every minute is settled.
  ReplayStats s = Replay(&history, kT0 + 3 * kNanosPerDay);
  EXPECT_EQ(s.records_live, 0u);
  auto last = history.Get("plug-1", model::Resolution::kBase, kT0 + 19 * 60 * kS);
  ASSERT_TRUE(last.ok() && last->has_value());

  // A stored record with more events than the archive has: left alone.
  model::AggregateRecord more = **last;
  more.count = 99;
  more.version = kReplayVersionBase + 7;
  ASSERT_TRUE(history.Put({more}).ok());
  ReplayStats again = Replay(&history, kT0 + 3 * kNanosPerDay);
  EXPECT_EQ(again.records_incomplete, 1u);
  EXPECT_EQ(again.records_written, 0u);
  auto kept = history.Get("plug-1", model::Resolution::kBase, kT0 + 19 * 60 * kS);
  ASSERT_TRUE(kept.ok() && kept->has_value());
  EXPECT_EQ((*kept)->count, 99u);
}

// A window past the history store's retention is neither written nor handed to the rollups:
// the store drops the write and its Get answers nothing, so the replay took the expired
// minute for a new one, counted it as written on every run and added its whole content to
// the open 1h/1d rollups again each time (found by a black-box test: 1h count 12 → 45 after
// three replays).
TEST_F(ReplayTest, WindowsPastRetentionAreNeitherWrittenNorCorrected) {
  Archive(Series());
  store::HistoryRetention retention = store::HistoryRetention::Forever();
  retention.base_ns = kNanosPerHour;  // every minute of the range (≥ 2 h old) is expired
  store::MemoryHistoryStore history(retention);
  for (int run = 0; run < 2; ++run) {
    std::vector<BaseCorrection> corrections;
    ReplayStats s = Replay(&history, 0, &corrections);
    EXPECT_EQ(s.records_expired, 20u) << "run " << run;  // the 20 minutes of the series
    EXPECT_EQ(s.records_written, 0u) << "run " << run;
    EXPECT_TRUE(corrections.empty()) << "run " << run;
  }
  ReplayStats dry = Replay(&history, 0, nullptr, /*dry_run=*/true);
  EXPECT_EQ(dry.records_expired, 20u);
  EXPECT_EQ(dry.records_written, 0u);
  EXPECT_EQ(history.size(), 0u);

  // The hour and day are kept longer: settled (the live engine is far ahead), they are
  // written from the archive as usual.
  ReplayStats settled = Replay(&history, kT0 + 3 * kNanosPerDay);
  EXPECT_EQ(settled.records_expired, 20u);
  EXPECT_EQ(settled.records_written, 2u);
  auto hour = history.Get("plug-1", model::Resolution::kHour, kT0);
  ASSERT_TRUE(hour.ok() && hour->has_value());
  EXPECT_EQ((*hour)->count, 121u);
}

// A stored record the recomputation keeps the event count of but has less coverage of: the
// archive lacks a neighbour whose interval reached into it (found by a black-box test: one
// archive hour removed, the replay rewrote the minute and the hour before it with less energy
// and coverage — records_incomplete compared event counts only).
TEST_F(ReplayTest, LessCoverageThanStoredIsLeftAloneAsIncomplete) {
  const int64_t far = kT0 + 3 * kNanosPerDay;  // every window settled
  Archive(Series());
  store::MemoryHistoryStore history;
  ReplayStats full = Replay(&history, far);
  EXPECT_GT(full.records_written, 0u);
  auto stored9 = history.Get("plug-1", model::Resolution::kBase, kT0 + 9 * 60 * kS);
  ASSERT_TRUE(stored9.ok() && stored9->has_value());
  ASSERT_NE((*stored9)->FindMetric("power_w"), nullptr);
  EXPECT_EQ((*stored9)->FindMetric("power_w")->covered_ns, 60 * kS);

  // The archive now lacks minute 10 (events 600..650 s): minute 9 keeps its six events but
  // loses the interval 590–600 s to the first sample of minute 10.
  std::filesystem::remove_all(dir_ + "/archive");
  std::vector<model::Event> partial;
  for (const model::Event& e : Series()) {
    if (e.timestamp_ns < kT0 + 600 * kS || e.timestamp_ns >= kT0 + 660 * kS) partial.push_back(e);
  }
  Archive(partial);
  ReplayStats again = Replay(&history, far);
  EXPECT_EQ(again.records_written, 0u);
  EXPECT_EQ(again.records_incomplete, 3u);  // minute 9, the hour and the day
  auto kept = history.Get("plug-1", model::Resolution::kBase, kT0 + 9 * 60 * kS);
  ASSERT_TRUE(kept.ok() && kept->has_value());
  EXPECT_EQ(**kept, **stored9);

  // Fewer samples of a metric with the same event count: also incomplete.
  model::AggregateRecord more = **stored9;
  more.version = kReplayVersionBase + 3;
  model::MetricAggregate extra;
  extra.name = "voltage";
  extra.count = 6;
  more.metrics.push_back(extra);
  ASSERT_TRUE(history.Put({more}).ok());
  std::filesystem::remove_all(dir_ + "/archive");
  Archive(Series());
  ReplayStats third = Replay(&history, far);
  EXPECT_EQ(third.records_written, 0u);
  EXPECT_EQ(third.records_incomplete, 1u);
}

// A too-late event's energy interval reaches up to max_gap into the window before it: a
// replay starting at the event's minute recomputes that neighbour too (found by a black-box
// test: a narrow replay left it with the energy the live engine had computed without the event).
TEST_F(ReplayTest, TheRangeWidensByMaxGapToTheNeighbouringWindows) {
  std::vector<model::Event> events;
  for (const model::Event& e : Series()) {
    if (e.timestamp_ns != kT0 + 120 * kS && e.metrics[0].value != 1000) events.push_back(e);
  }
  // Minute 1's last sample at 110 s, minute 2's first at 130 s: the interval spans both. A
  // too-late 1000 W at 125 s changes minute 1's energy (110–120 s now rises towards it).
  events.push_back(Ev(kT0 + 125 * kS, 1000));
  Archive(events);
  store::MemoryHistoryStore history;
  from_ns_ = kT0 + 120 * kS;  // minute 2 on
  ReplayStats s = Replay(&history, kT0 + 3 * kNanosPerDay);
  EXPECT_GT(s.records_written, 0u);
  auto m1 = history.Get("plug-1", model::Resolution::kBase, kT0 + 60 * kS);
  ASSERT_TRUE(m1.ok() && m1->has_value());
  const model::MetricAggregate* p = (*m1)->FindMetric("power_w");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->covered_ns, 60 * kS);
  // Samples k = 6..11 (60..110 s, 100 + k % 7 W), then 110–120 s rising towards 1000 W at 125 s.
  auto w = [](int k) { return 100.0 + k % 7; };
  double want = 0;
  for (int k = 6; k < 11; ++k) want += (w(k) + w(k + 1)) / 2 * 10 / 3600;
  const double at120 = w(11) + (1000 - w(11)) * (10.0 / 15.0);
  want += (w(11) + at120) / 2 * 10 / 3600;
  EXPECT_NEAR(p->energy_wh, want, 1e-9);
  // Minute 0 is further than max_gap from the range: left alone.
  auto m0 = history.Get("plug-1", model::Resolution::kBase, kT0);
  ASSERT_TRUE(m0.ok());
  EXPECT_FALSE(m0->has_value());
}

// Restoring from the archive alone (app/restore_seed.h): the replay writes the settled
// windows, and the seed puts the engine state of every device into the checkpoint of the
// processor that will read its partition (p % threads), at offset 0, with its newest reading;
// the windows not settled go to history as the engine emitted them (not final, versions below
// a recovery epoch's), and the restored engine continues them (found by a black-box test:
// session 33 wrote them final with version 2^52, and the server's later versions were
// refused).
TEST_F(ReplayTest, SeedingAnEmptyDataDirContinuesTheOpenWindowsInTheServersLayout) {
  const std::vector<std::string> devices = {"plug-a", "plug-b", "plug-c", "plug-d", "plug-e"};
  std::vector<model::Event> events;
  for (int i = 0; i < 120; ++i) {
    for (const std::string& d : devices) {
      model::Event e = Ev(kT0 + i * 10 * kS, 100 + i % 7);
      e.device_id = d;
      e.event_id = fmt::format("{}-{}", d, i);
      events.push_back(e);
    }
  }
  Archive(events);
  store::MemoryHistoryStore history;
  constexpr uint32_t kPartitions = 4;
  EngineSeed seed(Options(), kPartitions, 2, nullptr);
  seed_ = &seed;
  ReplayStats stats = Replay(&history);
  EXPECT_GT(stats.records_live, 0u);
  const std::string ckpt_dir = dir_ + "/checkpoints";
  EXPECT_FALSE(CheckpointsHoldEngineState(ckpt_dir, Options(), nullptr));
  Result<SeedStats> seeded = seed.Finish(ckpt_dir, &history, nullptr);
  ASSERT_TRUE(seeded.ok()) << seeded.status().ToString();
  EXPECT_EQ(seeded->devices, devices.size());
  EXPECT_EQ(seeded->events, events.size());
  EXPECT_EQ(seeded->checkpoints, 2u);
  EXPECT_GT(seeded->records_written, 0u);
  EXPECT_TRUE(CheckpointsHoldEngineState(ckpt_dir, Options(), nullptr));
  EXPECT_FALSE(std::filesystem::exists(ckpt_dir + "/processor-0.ckpt.seed"));
  {
    // A seed killed between its renames leaves a .seed file: seeded again.
    std::filesystem::copy_file(ckpt_dir + "/processor-1.ckpt", ckpt_dir + "/processor-1.ckpt.seed");
    EXPECT_FALSE(CheckpointsHoldEngineState(ckpt_dir, Options(), nullptr));
    std::filesystem::remove(ckpt_dir + "/processor-1.ckpt.seed");
  }

  // Settled minutes are the replay's; the open ones the engine's, not final.
  const int64_t settled_end = kT0 + 1149 * kS;  // as in the first test
  for (const std::string& d : devices) {
    for (int m = 0; m < 20; ++m) {
      auto r = history.Get(d, model::Resolution::kBase, kT0 + m * 60 * kS);
      ASSERT_TRUE(r.ok() && r->has_value()) << d << " minute " << m;
      EXPECT_EQ((*r)->count, 6u) << d << " minute " << m;
      if (kT0 + (m + 1) * 60 * kS <= settled_end) {
        EXPECT_EQ((*r)->version, kReplayVersionBase) << d << " minute " << m;
      } else {
        EXPECT_LT((*r)->version, uint64_t{1} << 32) << d << " minute " << m;
      }
    }
    auto hour = history.Get(d, model::Resolution::kHour, kT0);
    ASSERT_TRUE(hour.ok() && hour->has_value()) << d;
    EXPECT_FALSE((*hour)->final);
    EXPECT_LT((*hour)->version, uint64_t{1} << 32);
  }

  for (int i = 0; i < 2; ++i) {
    auto ckpt = ReadCheckpointFile(fmt::format("{}/processor-{}.ckpt", ckpt_dir, i));
    ASSERT_TRUE(ckpt.ok() && ckpt->has_value()) << i;
    const std::vector<std::pair<uint32_t, uint64_t>> offsets = {{static_cast<uint32_t>(i), 0},
                                                                {static_cast<uint32_t>(i + 2), 0}};
    EXPECT_EQ((*ckpt)->offsets, offsets);
    size_t mine = 0;
    for (const std::string& d : devices) {
      // As the server's processor restores it.
      stream::WindowEngine engine(Options());
      ASSERT_TRUE(engine.RestoreState((*ckpt)->engine_state).ok());
      engine.BeginRecoveryEpoch(1);
      const bool owned = model::PartitionOf(d, kPartitions) % 2 == static_cast<uint32_t>(i);
      stream::WindowEngine::DeviceHealth health;
      ASSERT_EQ(engine.Health(d, &health), owned) << d << " in processor " << i;
      if (!owned) continue;
      ++mine;
      EXPECT_EQ(health.events, 120u);
      // The newest reading of each of its devices.
      bool reading = false;
      for (const model::Event& e : (*ckpt)->readings) {
        if (e.device_id == d) reading = e.timestamp_ns == kT0 + 1190 * kS;
      }
      EXPECT_TRUE(reading) << d;
      // The engine continues the open hour: a copy of an archived event is a duplicate, a
      // new event is added to the 120 archived ones.
      struct Sink final : stream::RecordSink {
        void Emit(const model::AggregateRecord& r) override {
          if (r.resolution == model::Resolution::kHour) hour = r;
        }
        model::AggregateRecord hour;
      } sink;
      model::Event copy = Ev(kT0 + 1190 * kS, 100 + 119 % 7);
      copy.device_id = d;
      copy.event_id = fmt::format("{}-119", d);
      engine.Process(copy, kT0 + 1200 * kS, &sink);
      model::Event next = Ev(kT0 + 1200 * kS, 500);
      next.device_id = d;
      engine.Process(next, kT0 + 1201 * kS, &sink);
      engine.Tick(kT0 + 1300 * kS, &sink);
      EXPECT_EQ(sink.hour.count, 121u) << d;
      EXPECT_GT(sink.hour.version, uint64_t{1} << 32) << d;
    }
    EXPECT_EQ((*ckpt)->readings.size(), mine);
  }
}

}  // namespace
}  // namespace joule::app

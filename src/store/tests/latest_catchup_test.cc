// LatestCatchUp and LatestStoreHealth with a latest store that can be switched off (a
// MemoryLatestStore behind a switch) and the in-memory history store. The Redis-backed
// end-to-end version is tests/integration/test_outages.py.
#include "store/latest_catchup.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "common/clock.h"
#include "common/metrics.h"
#include "store/history_memory/memory_history_store.h"
#include "store/latest_health.h"
#include "store/memory/memory_latest_store.h"

namespace joule::store {
namespace {

// A latest store that answers Unavailable (or `failure`) while switched off.
class SwitchedStore final : public LatestStore {
 public:
  std::string_view backend() const override { return "switched"; }
  Status PutRecord(const model::AggregateRecord& record) override {
    if (Status st = Check(); !st.ok()) return st;
    ++writes;
    return inner.PutRecord(record);
  }
  Status PutReading(const model::Event& event) override {
    if (Status st = Check(); !st.ok()) return st;
    ++writes;
    return inner.PutReading(event);
  }
  Result<bool> Get(std::string_view id, size_t n, LatestSnapshot* out) override {
    if (Status st = Check(); !st.ok()) return st;
    return inner.Get(id, n, out);
  }
  Status Ping() override { return Check(); }

  Status Check() const {
    if (!on.load()) return failure;
    return Status::Ok();
  }

  std::atomic<bool> on{true};
  Status failure = Status::Unavailable("switched off");
  std::atomic<int> writes{0};
  MemoryLatestStore inner{1000};
};

model::AggregateRecord Rec(std::string device, int minute, uint64_t version) {
  model::AggregateRecord r;
  r.device_id = std::move(device);
  r.window_start_ns = minute * kNanosPerMinute;
  r.window_end_ns = (minute + 1) * kNanosPerMinute;
  r.version = version;
  r.count = version * 10;
  return r;
}

model::Event Reading(std::string device, int second, double power) {
  model::Event e;
  e.device_id = std::move(device);
  e.timestamp_ns = second * kNanosPerSecond;
  e.received_at_ns = e.timestamp_ns;
  e.metrics.push_back({"power_w", power});
  return e;
}

class LatestCatchUpTest : public ::testing::Test {
 protected:
  LatestCatchUpTest() : health(&store, FastProbe(), SystemClock::Default(), &metrics) {
    health.Start();
  }

  static LatestStoreHealthOptions FastProbe() {
    LatestStoreHealthOptions o;
    o.probe_interval_ns = kNanosPerMilli;
    o.max_probe_interval_ns = 5 * kNanosPerMilli;
    return o;
  }

  // Switches the store back on and waits for the prober to notice (bounded).
  void ComeBack() {
    store.on = true;
    for (int i = 0; i < 5000 && !health.up(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ASSERT_TRUE(health.up());
  }

  std::vector<model::AggregateRecord> Stored(const std::string& device) {
    LatestSnapshot snap;
    Result<bool> found = store.inner.Get(device, 1000, &snap);
    EXPECT_TRUE(found.ok());
    return snap.records;  // newest first
  }

  double Metric(const std::string& name) {
    const std::string text = metrics.Render();
    size_t at = text.find("\n" + name + " ");
    if (at == std::string::npos) return -1;
    return std::stod(text.substr(at + name.size() + 2));
  }

  SwitchedStore store;
  MetricsRegistry metrics;
  MemoryHistoryStore history;
  LatestStoreHealth health;
};

TEST_F(LatestCatchUpTest, WritesAtOnceWhileUp) {
  LatestCatchUp c(&store, &health, &history, {}, &metrics);
  c.PutRecord(Rec("d", 1, 1));
  c.PutReading(Reading("d", 5, 1.5));
  EXPECT_FALSE(c.pending());
  EXPECT_EQ(store.writes.load(), 2);
  EXPECT_EQ(Stored("d").size(), 1u);
}

TEST_F(LatestCatchUpTest, BuffersTheHighestVersionPerWindowAndCatchesUp) {
  LatestCatchUp c(&store, &health, &history, {}, &metrics);
  c.PutRecord(Rec("d", 1, 1));
  store.on = false;
  c.PutRecord(Rec("d", 1, 2));  // fails: the store goes down, the record is kept
  EXPECT_FALSE(health.up());
  c.PutRecord(Rec("d", 1, 4));
  c.PutRecord(Rec("d", 1, 3));  // an older version does not replace a newer one
  c.PutRecord(Rec("d", 2, 1));
  c.PutRecord(Rec("e", 7, 5));
  model::AggregateRecord hour = Rec("d", 0, 9);
  hour.resolution = model::Resolution::kHour;  // not kept by latest stores
  c.PutRecord(hour);
  model::Event reading = Reading("d", 130, 42.0);
  c.PutReading(reading);
  EXPECT_EQ(c.pending_records(), 3u);
  EXPECT_EQ(c.pending_devices(), 2u);

  auto lookup = [&](std::string_view id) -> const model::Event* {
    return id == "d" ? &reading : nullptr;
  };
  c.Drain(lookup);  // still down: nothing happens
  EXPECT_TRUE(c.pending());
  ComeBack();
  c.Drain(lookup);
  EXPECT_FALSE(c.pending());
  EXPECT_EQ(c.pending_records(), 0u);
  auto d = Stored("d");
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0].window_start_ns, 2 * kNanosPerMinute);
  EXPECT_EQ(d[1].version, 4u);
  ASSERT_EQ(Stored("e").size(), 1u);
  EXPECT_EQ(Stored("e")[0].version, 5u);
  LatestSnapshot snap;
  ASSERT_TRUE(*store.inner.Get("d", 10, &snap));
  ASSERT_TRUE(snap.has_reading);
  EXPECT_EQ(snap.reading.timestamp_ns, reading.timestamp_ns);
  EXPECT_EQ(Metric("joule_latest_catchup_written_total"), 4);  // 3 records + 1 reading
  EXPECT_EQ(Metric("joule_latest_outages_total"), 1);
  EXPECT_EQ(Metric("joule_latest_recoveries_total"), 1);
}

// The processors write a batch's records in one PutRecords call: while the store is up
// they go out in order; when the call fails, every base record of the batch is kept (the
// highest version per window) and caught up like single writes.
TEST_F(LatestCatchUpTest, PutRecordsWritesInOrderAndDefersTheBatchWhileDown) {
  LatestCatchUp c(&store, &health, &history, {}, &metrics);
  model::AggregateRecord hour = Rec("d", 0, 9);
  hour.resolution = model::Resolution::kHour;  // not kept by latest stores
  std::vector<model::AggregateRecord> up = {Rec("d", 1, 1), hour, Rec("d", 1, 2), Rec("d", 1, 1)};
  c.PutRecords(up);
  c.PutRecords({});
  EXPECT_FALSE(c.pending());
  ASSERT_EQ(Stored("d").size(), 1u);
  EXPECT_EQ(Stored("d")[0].version, 2u);

  store.on = false;
  std::vector<model::AggregateRecord> down = {Rec("d", 1, 4), Rec("d", 1, 3), hour, Rec("d", 2, 1),
                                              Rec("e", 7, 5)};
  c.PutRecords(down);  // fails: the store goes down, the batch is kept
  EXPECT_FALSE(health.up());
  c.PutRecords(std::vector<model::AggregateRecord>{Rec("e", 7, 6)});  // down: kept, not tried
  EXPECT_EQ(c.pending_records(), 3u);
  EXPECT_EQ(c.pending_devices(), 2u);
  EXPECT_EQ(Metric("joule_latest_deferred_total"), 5);  // base records only

  ComeBack();
  c.Drain(nullptr);
  EXPECT_FALSE(c.pending());
  auto d = Stored("d");
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0].window_start_ns, 2 * kNanosPerMinute);
  EXPECT_EQ(d[1].version, 4u);
  ASSERT_EQ(Stored("e").size(), 1u);
  EXPECT_EQ(Stored("e")[0].version, 6u);

  store.failure = Status::Internal("bad script");  // other errors: counted, not deferred
  store.on = false;
  const double errors = Metric("joule_sink_errors_total{sink=\"switched\"}");
  c.PutRecords(std::vector<model::AggregateRecord>{Rec("d", 3, 1)});
  EXPECT_FALSE(c.pending());
  EXPECT_TRUE(health.up());
  EXPECT_EQ(Metric("joule_sink_errors_total{sink=\"switched\"}"), errors + 1);
}

TEST_F(LatestCatchUpTest, PastTheBoundDevicesAreReReadFromHistory) {
  LatestCatchUpOptions o;
  o.max_records = 3;
  o.drain_batch = 2;  // several Drain calls
  LatestCatchUp c(&store, &health, &history, o, &metrics);
  store.on = false;
  health.ReportFailure(Status::Unavailable("test"));
  std::vector<model::AggregateRecord> in_history;
  for (int m = 10; m < 16; ++m) {
    model::AggregateRecord r = Rec("big", m, 2);
    in_history.push_back(r);
    c.PutRecord(r);
  }
  // The fourth record of "big" did not fit: its windows now come from history.
  EXPECT_EQ(c.pending_records(), 0u);
  c.PutRecord(Rec("small", 1, 1));  // fits again
  in_history.push_back(Rec("small", 1, 1));
  c.PutRecord(Rec("big", 5, 3));  // older than the marker: the marker moves back
  in_history.push_back(Rec("big", 5, 3));
  in_history.push_back(Rec("big", 16, 1));  // emitted and in history, never offered
  ASSERT_TRUE(history.Put(in_history).ok());
  EXPECT_EQ(c.pending_records(), 1u);
  EXPECT_EQ(c.pending_devices(), 2u);
  EXPECT_EQ(Metric("joule_latest_catchup_overflows_total"), 1);

  ComeBack();
  for (int i = 0; i < 100 && c.pending(); ++i) c.Drain(nullptr);
  EXPECT_FALSE(c.pending());
  auto big = Stored("big");
  ASSERT_EQ(big.size(), 8u);  // minute 5, 10..16
  EXPECT_EQ(big.back().window_start_ns, 5 * kNanosPerMinute);
  EXPECT_EQ(big.back().version, 3u);
  EXPECT_EQ(big.front().window_start_ns, 16 * kNanosPerMinute);
  EXPECT_EQ(Stored("small").size(), 1u);
  EXPECT_EQ(Metric("joule_latest_catchup_history_records_total"), 8);
}

TEST_F(LatestCatchUpTest, AFailedDrainKeepsTheBacklogAndMarksTheStoreDown) {
  LatestCatchUp c(&store, &health, &history, {}, &metrics);
  store.on = false;
  health.ReportFailure(Status::Unavailable("test"));
  c.PutRecord(Rec("d", 1, 1));
  c.PutRecord(Rec("d", 2, 1));
  ComeBack();
  store.on = false;  // gone again before the drain
  c.Drain(nullptr);
  EXPECT_FALSE(health.up());
  EXPECT_EQ(c.pending_records(), 2u);
  ComeBack();
  c.Drain(nullptr);
  EXPECT_FALSE(c.pending());
  EXPECT_EQ(Stored("d").size(), 2u);
}

TEST_F(LatestCatchUpTest, OtherErrorsAreCountedNotDeferred) {
  LatestCatchUp c(&store, &health, &history, {}, &metrics);
  store.failure = Status::Internal("bad script");
  store.on = false;
  c.PutRecord(Rec("d", 1, 1));
  EXPECT_FALSE(c.pending());
  EXPECT_TRUE(health.up());
  EXPECT_EQ(Metric("joule_sink_errors_total{sink=\"switched\"}"), 1);
}

TEST_F(LatestCatchUpTest, MarkersCarryTheBacklogToANewInstance) {
  ASSERT_TRUE(history.Put({Rec("d", 3, 2), Rec("d", 4, 1), Rec("d", 1, 7)}).ok());
  std::vector<LatestCatchUp::Marker> markers;
  {
    LatestCatchUp c(&store, &health, &history, {}, &metrics);
    store.on = false;
    health.ReportFailure(Status::Unavailable("test"));
    c.PutRecord(Rec("d", 3, 2));
    c.PutRecord(Rec("d", 4, 1));
    c.PutReading(Reading("r", 1, 1));
    markers = c.Markers();
  }
  ASSERT_EQ(markers.size(), 2u);
  LatestCatchUp next(&store, &health, &history, {}, &metrics);
  next.AddMarkers(markers);
  EXPECT_EQ(next.pending_devices(), 2u);
  ComeBack();
  model::Event r = Reading("r", 9, 3);
  next.Drain([&](std::string_view id) { return id == "r" ? &r : nullptr; });
  EXPECT_FALSE(next.pending());
  auto d = Stored("d");
  ASSERT_EQ(d.size(), 2u);  // minutes 3 and 4 (re-read from 3 on), not minute 1
  EXPECT_EQ(d[1].window_start_ns, 3 * kNanosPerMinute);
  LatestSnapshot snap;
  ASSERT_TRUE(*store.inner.Get("r", 1, &snap));
  EXPECT_EQ(snap.reading.timestamp_ns, r.timestamp_ns);
}

TEST_F(LatestCatchUpTest, ResyncRewritesTheNewestWindowsOfAStoreThatLostItsData) {
  std::vector<model::AggregateRecord> in_history;
  for (int m = 0; m < 10; ++m) in_history.push_back(Rec("d", m, 1));
  ASSERT_TRUE(history.Put(in_history).ok());
  LatestCatchUpOptions o;
  o.resync_windows = 4;
  LatestCatchUp c(&store, &health, &history, o, &metrics);
  model::Event r = Reading("d", 600, 7);
  c.Resync("d");
  EXPECT_EQ(c.Markers().size(), 1u);
  EXPECT_TRUE(c.Markers()[0].newest);
  c.Drain([&](std::string_view) { return &r; });
  EXPECT_FALSE(c.pending());
  auto d = Stored("d");
  ASSERT_EQ(d.size(), 4u);  // minutes 9, 8, 7, 6
  EXPECT_EQ(d.front().window_start_ns, 9 * kNanosPerMinute);
  EXPECT_EQ(d.back().window_start_ns, 6 * kNanosPerMinute);
  EXPECT_EQ(Metric("joule_latest_resync_devices_total"), 1);
}

}  // namespace
}  // namespace joule::store

#include "store/memory/memory_latest_store.h"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "common/clock.h"

namespace joule::store {
namespace {

model::AggregateRecord Rec(int minute, uint64_t version, uint64_t count) {
  model::AggregateRecord r;
  r.device_id = "d1";
  r.window_start_ns = minute * kNanosPerMinute;
  r.window_end_ns = (minute + 1) * kNanosPerMinute;
  r.version = version;
  r.count = count;
  return r;
}

TEST(MemoryLatestStoreTest, KeepsHighestVersion) {
  MemoryLatestStore s;
  ASSERT_TRUE(s.PutRecord(Rec(1, 2, 20)).ok());
  ASSERT_TRUE(s.PutRecord(Rec(1, 1, 10)).ok());  // stale: ignored
  LatestSnapshot snap;
  ASSERT_TRUE(*s.Get("d1", 10, &snap));
  ASSERT_EQ(snap.records.size(), 1u);
  EXPECT_EQ(snap.records[0].version, 2u);
  EXPECT_EQ(snap.records[0].count, 20u);
  ASSERT_TRUE(s.PutRecord(Rec(1, 3, 30)).ok());
  ASSERT_TRUE(*s.Get("d1", 10, &snap));
  EXPECT_EQ(snap.records[0].count, 30u);
}

TEST(MemoryLatestStoreTest, NewestFirstAndBounded) {
  MemoryLatestStore s(3);
  for (int m = 0; m < 5; ++m) ASSERT_TRUE(s.PutRecord(Rec(m, 1, m)).ok());
  LatestSnapshot snap;
  ASSERT_TRUE(*s.Get("d1", 10, &snap));
  ASSERT_EQ(snap.records.size(), 3u);
  EXPECT_EQ(snap.records[0].count, 4u);
  EXPECT_EQ(snap.records[2].count, 2u);
  ASSERT_TRUE(*s.Get("d1", 2, &snap));
  EXPECT_EQ(snap.records.size(), 2u);
}

TEST(MemoryLatestStoreTest, UnknownDeviceAndNewestReading) {
  MemoryLatestStore s;
  LatestSnapshot snap;
  EXPECT_FALSE(*s.Get("nope", 10, &snap));
  model::Event e;
  e.device_id = "d1";
  e.timestamp_ns = 200;
  e.metrics = {{"power_w", 5}};
  ASSERT_TRUE(s.PutReading(e).ok());
  e.timestamp_ns = 100;  // older: ignored
  e.metrics = {{"power_w", 1}};
  ASSERT_TRUE(s.PutReading(e).ok());
  e.timestamp_ns = 200;  // the same time: a duplicate the engine drops, so ignored too
  e.metrics = {{"power_w", 2}};
  ASSERT_TRUE(s.PutReading(e).ok());
  ASSERT_TRUE(*s.Get("d1", 10, &snap));
  ASSERT_TRUE(snap.has_reading);
  EXPECT_EQ(snap.reading.timestamp_ns, 200);
  EXPECT_EQ(snap.reading.metrics[0].value, 5);
}

// The batch call (shard grouping, prefetching) leaves exactly what PutReading per event
// leaves: the newest event time per device, the last of equal times.
TEST(MemoryLatestStoreTest, PutReadingsEqualsPutReadingPerEvent) {
  MemoryLatestStore batched, single;
  std::vector<model::Event> events;
  for (int i = 0; i < 5000; ++i) {
    model::Event e;
    e.device_id = "dev-" + std::to_string((i * 7919) % 700);
    e.timestamp_ns = (i * 31) % 97;  // out of order, with ties
    e.received_at_ns = i;
    e.metrics = {{"power_w", static_cast<double>(i)}};
    events.push_back(e);
  }
  for (size_t off = 0; off < events.size(); off += 1000) {
    std::span<const model::Event> part(events.data() + off, 1000);
    ASSERT_TRUE(batched.PutReadings(part).ok());
    for (const auto& e : part) ASSERT_TRUE(single.PutReading(e).ok());
  }
  ASSERT_TRUE(batched.PutReadings({}).ok());
  EXPECT_EQ(batched.DeviceCount(), 700u);
  EXPECT_EQ(single.DeviceCount(), 700u);
  for (int d = 0; d < 700; ++d) {
    const std::string id = "dev-" + std::to_string(d);
    LatestSnapshot a, b;
    ASSERT_TRUE(*batched.Get(id, 1, &a));
    ASSERT_TRUE(*single.Get(id, 1, &b));
    ASSERT_TRUE(a.has_reading);
    EXPECT_EQ(a.reading.timestamp_ns, b.reading.timestamp_ns) << id;
    EXPECT_EQ(a.reading.received_at_ns, b.reading.received_at_ns) << id;
    EXPECT_EQ(a.reading.metrics, b.reading.metrics) << id;
  }
}

// What the store must hold after a sequence of record writes: per device and window the
// highest version (the first of equal ones), the newest `windows` windows; non-base
// records ignored. Written as plainly as possible: insert, then trim the oldest.
struct LatestModel {
  explicit LatestModel(size_t windows) : windows(windows) {}
  void Put(const model::AggregateRecord& r) {
    if (r.resolution != model::Resolution::kBase) return;
    auto& w = devices[r.device_id];
    auto [it, inserted] = w.try_emplace(r.window_start_ns, r);
    if (!inserted && it->second.version < r.version) it->second = r;
    while (w.size() > windows) w.erase(w.begin());
  }
  size_t windows;
  std::map<std::string, std::map<int64_t, model::AggregateRecord>> devices;
};

// PutRecord per record and PutRecords in batches (shard grouping, node reuse when full)
// both leave exactly what the model leaves: late windows older than the kept ones, stale
// and equal versions, other resolutions, windows that fill and overflow the bound.
TEST(MemoryLatestStoreTest, PutRecordsAndPutRecordEqualTheModel) {
  for (size_t windows : {0u, 1u, 3u, 8u}) {
    MemoryLatestStore batched(windows), single(windows);
    LatestModel model(windows);
    std::mt19937_64 rng(windows + 1);
    std::vector<model::AggregateRecord> records;
    for (int i = 0; i < 20000; ++i) {
      model::AggregateRecord r =
          Rec(static_cast<int>(i / 400 + rng() % 12) - 6, 1 + rng() % 6, static_cast<uint64_t>(i));
      r.device_id = "dev-" + std::to_string(rng() % 97);
      const uint64_t kind = rng() % 10;
      if (kind == 0) r.resolution = model::Resolution::kHour;
      if (kind == 1) r.resolution = model::Resolution::kDay;
      r.final = rng() % 2 == 0;
      r.metrics.resize(rng() % 3);
      for (auto& m : r.metrics) m.sum = static_cast<double>(rng() % 1000);
      records.push_back(r);
    }
    for (size_t off = 0; off < records.size();) {
      const size_t n = std::min<size_t>(1 + rng() % 700, records.size() - off);
      std::span<const model::AggregateRecord> part(records.data() + off, n);
      ASSERT_TRUE(batched.PutRecords(part).ok());
      for (const auto& r : part) {
        ASSERT_TRUE(single.PutRecord(r).ok());
        model.Put(r);
      }
      off += n;
    }
    for (int d = 0; d < 97; ++d) {
      const std::string id = "dev-" + std::to_string(d);
      std::vector<model::AggregateRecord> want;
      for (auto it = model.devices[id].rbegin(); it != model.devices[id].rend(); ++it) {
        want.push_back(it->second);
      }
      for (MemoryLatestStore* s : {&batched, &single}) {
        LatestSnapshot snap;
        Result<bool> found = s->Get(id, 100, &snap);
        ASSERT_TRUE(found.ok());
        if (!*found) {
          EXPECT_TRUE(want.empty()) << id;
          continue;
        }
        EXPECT_EQ(snap.records, want) << id << " windows=" << windows;
      }
    }
  }
}

}  // namespace
}  // namespace joule::store

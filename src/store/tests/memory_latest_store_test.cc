#include "store/memory/memory_latest_store.h"

#include <gtest/gtest.h>

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
  ASSERT_TRUE(*s.Get("d1", 10, &snap));
  ASSERT_TRUE(snap.has_reading);
  EXPECT_EQ(snap.reading.timestamp_ns, 200);
  EXPECT_EQ(snap.reading.metrics[0].value, 5);
}

}  // namespace
}  // namespace joule::store

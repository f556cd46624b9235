// HistoryVersionCache on its own: what it may claim without a read (frontiers, recent
// windows), and that forgetting (eviction, failed writes) only ever makes it claim less.
#include "store/rocksdb/history_version_cache.h"

#include <gtest/gtest.h>

namespace joule::store {
namespace {

using Known = HistoryVersionCache::Known;
using model::Resolution;

constexpr std::array<int64_t, 3> kEmpty = {
    HistoryVersionCache::kNothing, HistoryVersionCache::kNothing, HistoryVersionCache::kNothing};
constexpr std::array<int64_t, 3> kUnknownFloor = {
    HistoryVersionCache::kUnknown, HistoryVersionCache::kUnknown, HistoryVersionCache::kUnknown};

TEST(HistoryVersionCacheTest, AnEmptyStoreKnowsEveryKeyIsAbsent) {
  HistoryVersionCache c(100, 4, kEmpty);
  EXPECT_EQ(c.Find(0, Resolution::kBase, "d", 0).known, Known::kAbsent);
  EXPECT_EQ(c.Find(0, Resolution::kBase, "d", HistoryVersionCache::kNothing).known,
            Known::kUnknown);  // a key at the very floor is still read
  c.Wrote(0, Resolution::kBase, "d", 600, 3);
  HistoryVersionCache::Answer a = c.Find(0, Resolution::kBase, "d", 600);
  EXPECT_EQ(a.known, Known::kStored);
  EXPECT_EQ(a.version, 3u);
  EXPECT_EQ(c.Find(0, Resolution::kBase, "d", 660).known, Known::kAbsent);   // after the frontier
  EXPECT_EQ(c.Find(0, Resolution::kBase, "d", 540).known, Known::kUnknown);  // before it
  EXPECT_EQ(c.Find(0, Resolution::kHour, "d", 0).known, Known::kAbsent);     // other resolution
  EXPECT_EQ(c.Find(0, Resolution::kBase, "e", 0).known, Known::kAbsent);     // other device
}

TEST(HistoryVersionCacheTest, AnUnknownFloorAnswersOnlyWhatWasReadOrWritten) {
  HistoryVersionCache c(100, 4, kUnknownFloor);
  EXPECT_EQ(c.Find(1, Resolution::kDay, "d", 0).known, Known::kUnknown);
  c.Learn(1, Resolution::kDay, "d", 0, /*present=*/false, 0);
  EXPECT_EQ(c.Find(1, Resolution::kDay, "d", 0).known, Known::kAbsent);
  c.Learn(1, Resolution::kDay, "d", 86400, /*present=*/true, 9);
  EXPECT_EQ(c.Find(1, Resolution::kDay, "d", 86400).version, 9u);
  EXPECT_EQ(c.Find(1, Resolution::kDay, "d", 2 * 86400).known, Known::kUnknown);
  c.Wrote(1, Resolution::kDay, "d", 0, 1);
  EXPECT_EQ(c.Find(1, Resolution::kDay, "d", 0).known, Known::kStored);
}

TEST(HistoryVersionCacheTest, KeepsTheNewestWindowsOfEachDevice) {
  HistoryVersionCache c(100, 1, kEmpty);
  for (int64_t w = 1; w <= 6; ++w) c.Wrote(0, Resolution::kBase, "d", w * 60, 10 + w);
  for (int64_t w = 1; w <= 6; ++w) {
    HistoryVersionCache::Answer a = c.Find(0, Resolution::kBase, "d", w * 60);
    if (w <= 6 - static_cast<int64_t>(HistoryVersionCache::kRecent)) {
      EXPECT_EQ(a.known, Known::kUnknown) << w;  // forgotten: the oldest go first
    } else {
      EXPECT_EQ(a.known, Known::kStored) << w;
      EXPECT_EQ(a.version, static_cast<uint64_t>(10 + w));
    }
  }
  // A late update of an old window takes the oldest slot.
  c.Wrote(0, Resolution::kBase, "d", 60, 30);
  EXPECT_EQ(c.Find(0, Resolution::kBase, "d", 60).version, 30u);
  EXPECT_EQ(c.Find(0, Resolution::kBase, "d", 180).known, Known::kUnknown);
  EXPECT_EQ(c.Find(0, Resolution::kBase, "d", 360).version, 16u);
}

TEST(HistoryVersionCacheTest, AFailedWriteForgetsTheKeyAndMovesTheFrontier) {
  HistoryVersionCache c(100, 1, kEmpty);
  c.Wrote(0, Resolution::kBase, "d", 60, 1);
  c.Wrote(0, Resolution::kBase, "d", 120, 1);
  c.MaybeWrote(0, Resolution::kBase, "d", 60);
  c.MaybeWrote(0, Resolution::kBase, "d", 600);
  EXPECT_EQ(c.Find(0, Resolution::kBase, "d", 60).known, Known::kUnknown);
  EXPECT_EQ(c.Find(0, Resolution::kBase, "d", 120).version, 1u);
  EXPECT_EQ(c.Find(0, Resolution::kBase, "d", 600).known, Known::kUnknown);
  EXPECT_EQ(c.Find(0, Resolution::kBase, "d", 300).known, Known::kUnknown);
  EXPECT_EQ(c.Find(0, Resolution::kBase, "d", 660).known, Known::kAbsent);
  c.MaybeWrote(0, Resolution::kHour, "x", 7200);  // a device it did not know
  EXPECT_EQ(c.Find(0, Resolution::kHour, "x", 3600).known, Known::kUnknown);
  EXPECT_EQ(c.Find(0, Resolution::kHour, "x", 10800).known, Known::kAbsent);
}

TEST(HistoryVersionCacheTest, EvictionRaisesTheFloorToWhatTheDeviceKnew) {
  HistoryVersionCache c(/*max_devices=*/2, /*stripes=*/2, kEmpty);  // one device per stripe
  c.Wrote(0, Resolution::kBase, "a", 600, 1);
  c.Wrote(0, Resolution::kHour, "a", 3600, 1);
  EXPECT_EQ(c.devices(), 1u);
  c.Wrote(0, Resolution::kBase, "b", 60, 1);  // evicts "a"
  EXPECT_EQ(c.devices(), 1u);
  EXPECT_EQ(c.evictions(), 1u);
  EXPECT_EQ(c.floor(Resolution::kBase), 600);
  EXPECT_EQ(c.floor(Resolution::kHour), 3600);
  EXPECT_EQ(c.floor(Resolution::kDay), HistoryVersionCache::kNothing);
  // "a" is unknown up to its old frontier, and so is every new device (of any stripe).
  EXPECT_EQ(c.Find(0, Resolution::kBase, "a", 600).known, Known::kUnknown);
  EXPECT_EQ(c.Find(0, Resolution::kBase, "a", 660).known, Known::kAbsent);
  EXPECT_EQ(c.Find(1, Resolution::kBase, "c", 300).known, Known::kUnknown);
  EXPECT_EQ(c.Find(1, Resolution::kHour, "c", 3600).known, Known::kUnknown);
  EXPECT_EQ(c.Find(1, Resolution::kDay, "c", 0).known, Known::kAbsent);
  // "b" keeps what it knew, though its own frontier (60) is below the new floor.
  EXPECT_EQ(c.Find(0, Resolution::kBase, "b", 60).version, 1u);
  EXPECT_EQ(c.Find(0, Resolution::kBase, "b", 120).known, Known::kAbsent);
  // The floor never goes down.
  c.Wrote(1, Resolution::kBase, "c", 0, 1);
  c.Wrote(1, Resolution::kBase, "e", 0, 1);  // evicts "c" (frontier max(600, 0))
  EXPECT_EQ(c.floor(Resolution::kBase), 600);
}

}  // namespace
}  // namespace joule::store

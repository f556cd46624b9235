// FlatKeySet: the de-duplication keys. Checked against std::map under random inserts with a
// moving expiry horizon, and for the memory a steady stream of keys holds.
#include "stream/flat_key_set.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <random>

namespace joule::stream {
namespace {

TEST(FlatKeySetTest, DuplicatesAreFoundAndKeyZeroIsAKey) {
  FlatKeySet s;
  EXPECT_TRUE(s.Insert(42, 1, 0));
  EXPECT_FALSE(s.Insert(42, 2, 0));
  EXPECT_TRUE(s.Insert(0, 3, 0));  // stored as 1
  EXPECT_FALSE(s.Insert(1, 4, 0));
  EXPECT_EQ(s.size(), 2u);
}

// Every key at or after the horizon is remembered; a key before it may or may not be (it
// goes when the table is rebuilt), exactly as the engine relies on.
TEST(FlatKeySetTest, MatchesAMapUnderAMovingHorizon) {
  std::mt19937_64 rng(7);
  FlatKeySet s;
  std::map<uint64_t, int64_t> ref;  // every key ever inserted → its time
  int64_t now = 0;
  for (int i = 0; i < 200000; ++i) {
    now += 1;
    const int64_t horizon = now - 3000;
    // Mostly new keys; some repeats of recent ones; a few repeats of old ones.
    uint64_t key;
    const int r = static_cast<int>(rng() % 100);
    if (r < 90 || ref.empty()) {
      key = rng() % 400000 + 2;
    } else {
      auto it = ref.lower_bound(rng() % 400000 + 2);
      if (it == ref.end()) it = ref.begin();
      key = it->first;
    }
    const auto it = ref.find(key);
    const bool fresh = s.Insert(key, now, horizon);
    if (it == ref.end()) {
      ASSERT_TRUE(fresh) << i;
      ref.emplace(key, now);
    } else if (it->second >= horizon) {
      ASSERT_FALSE(fresh) << i;  // within the horizon: always a duplicate
    } else if (fresh) {
      it->second = now;  // expired and forgotten: stored again with the new time
    }
  }
}

TEST(FlatKeySetTest, ASteadyStreamHoldsAtMostFortyBytesPerLiveKey) {
  // 3,600 live keys (an hour at 1 Hz), keys arriving and expiring for several hours.
  FlatKeySet s;
  std::mt19937_64 rng(11);
  size_t max_capacity = 0;
  for (int64_t t = 0; t < 5 * 3600; ++t) {
    ASSERT_TRUE(s.Insert(rng() | 1, t, t - 3600));
    if (t >= 3600) max_capacity = std::max(max_capacity, s.capacity());
  }
  EXPECT_LE(max_capacity * sizeof(FlatKeySet::Entry), 40u * 3601);
  EXPECT_GE(max_capacity * 7, (3600 + 1) * 10u - 10);  // room for the live keys at 70 %
}

TEST(FlatKeySetTest, ShrinksWhenMostKeysExpire) {
  FlatKeySet s;
  for (int64_t t = 0; t < 10000; ++t) s.Insert(static_cast<uint64_t>(t) * 7919 + 3, t, 0);
  const size_t big = s.capacity();
  // Then the horizon is 100 keys long: the next rebuild keeps only those.
  for (int64_t t = 10000; t < 20000; ++t) s.Insert(static_cast<uint64_t>(t) * 7919 + 3, t, t - 100);
  EXPECT_LT(s.capacity(), big / 10);
}

}  // namespace
}  // namespace joule::stream

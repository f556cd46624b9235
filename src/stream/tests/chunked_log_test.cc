// ChunkedLog: the sample histories' container. Checked against std::vector under random
// appends, inserts and front erasures across chunk boundaries.
#include "stream/chunked_log.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <set>
#include <thread>
#include <utility>
#include <vector>

namespace joule::stream {
namespace {

template <typename T>
void ExpectSame(const ChunkedLog<T>& log, const std::vector<T>& ref) {
  ASSERT_EQ(log.size(), ref.size());
  for (size_t i = 0; i < ref.size(); ++i) ASSERT_EQ(log[i], ref[i]) << i;
  if (!ref.empty()) {
    EXPECT_EQ(log.back(), ref.back());
    EXPECT_EQ(*log.tail(), ref.back());
  }
  // span() covers the log in contiguous runs that end at chunk boundaries.
  size_t i = 0;
  while (i < ref.size()) {
    size_t n = 0;
    const T* p = log.span(i, &n);
    ASSERT_GT(n, 0u);
    ASSERT_LE(i + n, ref.size());
    for (size_t j = 0; j < n; ++j) ASSERT_EQ(p[j], ref[i + j]) << i + j;
    i += n;
  }
}

TEST(ChunkedLogTest, MatchesVectorUnderRandomOperations) {
  std::mt19937_64 rng(11);
  ChunkedLog<int64_t> log;
  std::vector<int64_t> ref;
  int64_t next = 0;
  for (int step = 0; step < 20000; ++step) {
    const uint64_t op = rng() % 10;
    if (op < 6) {
      log.push_back(next);
      ref.push_back(next++);
    } else if (op < 8) {
      const size_t pos = ref.empty() ? 0 : rng() % (ref.size() + 1);
      log.insert(pos, -next);
      ref.insert(ref.begin() + static_cast<ptrdiff_t>(pos), -next++);
    } else if (!ref.empty()) {
      const size_t n = rng() % (ref.size() / 2 + 2);
      const size_t drop = n > ref.size() ? ref.size() : n;
      log.erase_front(drop);
      ref.erase(ref.begin(), ref.begin() + static_cast<ptrdiff_t>(drop));
    }
    if (step % 97 == 0) ExpectSame(log, ref);
  }
  ExpectSame(log, ref);
  // Memory follows the content: at most one partly used chunk at each end.
  EXPECT_LE(log.capacity_bytes(), (ref.size() / ChunkedLog<int64_t>::kChunk + 2) *
                                          ChunkedLog<int64_t>::kChunk * sizeof(int64_t) +
                                      1024);
}

TEST(ChunkedLogTest, EraseEverythingThenReuse) {
  ChunkedLog<double> log;
  for (int i = 0; i < 300; ++i) log.push_back(i);
  log.erase_front(300);
  EXPECT_TRUE(log.empty());
  // Every chunk went back to the pool; the chunk table (4 entries) stays for reuse.
  EXPECT_EQ(log.capacity_bytes(), 4 * sizeof(double*));
  log.push_back(7.5);
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log[0], 7.5);
  EXPECT_EQ(log.back(), 7.5);
}

TEST(ChunkedLogTest, MoveLeavesSourceEmpty) {
  ChunkedLog<int64_t> a;
  for (int i = 0; i < 200; ++i) a.push_back(i);
  ChunkedLog<int64_t> b(std::move(a));
  EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move): moved-from state is specified
  ASSERT_EQ(b.size(), 200u);
  EXPECT_EQ(b[199], 199);
  ChunkedLog<int64_t> c;
  c.push_back(1);
  c = std::move(b);
  ASSERT_EQ(c.size(), 200u);
  EXPECT_EQ(c[0], 0);
  a.push_back(5);  // a moved-from log is usable
  EXPECT_EQ(a.back(), 5);
}

TEST(ChunkedLogTest, PartitionPointMatchesTheStandardOne) {
  std::mt19937_64 rng(11);
  for (int round = 0; round < 50; ++round) {
    ChunkedLog<int64_t> log;
    std::vector<int64_t> ref;
    const size_t n = round < 5 ? static_cast<size_t>(round) : rng() % 300;
    int64_t x = 0;
    for (size_t i = 0; i < n; ++i) {
      x += static_cast<int64_t>(rng() % 3);  // sorted, with repeats
      log.push_back(x);
      ref.push_back(x);
    }
    if (n > 70) {  // a log that does not start at the beginning of its first chunk
      log.erase_front(65);
      ref.erase(ref.begin(), ref.begin() + 65);
    }
    for (int64_t t = -1; t <= x + 1; ++t) {
      auto less = [t](int64_t v) { return v < t; };
      const auto want = std::partition_point(ref.begin(), ref.end(), less) - ref.begin();
      ASSERT_EQ(log.partition_point(less), static_cast<size_t>(want)) << t;
    }
  }
}

// Eviction's rule: whole chunks at the front, all of them before an element (the first of
// the next chunk) for which the predicate holds — so that element and everything after
// it stay, and nothing dropped is one the predicate rejects.
TEST(ChunkedLogTest, WholeChunksBeforeDropsOnlyWholeChunksBeforeAKeptMatch) {
  std::mt19937_64 rng(12);
  for (int round = 0; round < 200; ++round) {
    ChunkedLog<int64_t> log;
    std::vector<int64_t> ref;
    const size_t n = round < 5 ? static_cast<size_t>(round) : rng() % 400;
    for (size_t i = 0; i < n; ++i) {
      log.push_back(static_cast<int64_t>(i));
      ref.push_back(static_cast<int64_t>(i));
    }
    const size_t front = n > 0 ? rng() % (n + 1) : 0;  // a first chunk that is partly used
    log.erase_front(front);
    ref.erase(ref.begin(), ref.begin() + static_cast<ptrdiff_t>(front));
    const int64_t limit = static_cast<int64_t>(rng() % (n + 2));
    auto before = [limit](int64_t v) { return v < limit; };
    const size_t drop = log.WholeChunksBefore(before);
    const size_t first_in_chunk0 = front % ChunkedLog<int64_t>::kChunk;
    const size_t run = ChunkedLog<int64_t>::kChunk - first_in_chunk0;  // chunk 0's elements
    if (drop > 0) {
      ASSERT_LT(drop, ref.size());
      ASSERT_TRUE(before(ref[drop]));                             // a match stays
      ASSERT_EQ((drop - run) % ChunkedLog<int64_t>::kChunk, 0u);  // at a chunk start
    }
    // The largest such chunk start: the next one is past the end or fails the predicate.
    const size_t next = drop == 0 ? run : drop + ChunkedLog<int64_t>::kChunk;
    ASSERT_TRUE(next >= ref.size() || !before(ref[next])) << round;
    log.erase_front(drop);
    ref.erase(ref.begin(), ref.begin() + static_cast<ptrdiff_t>(drop));
    ExpectSame(log, ref);
  }
}

TEST(ChunkPoolTest, ChunksAreDistinctAlignedAndRecycled) {
  using Pool = ChunkPool<4096>;  // a size no log uses: this test sees the pool alone
  std::set<void*> seen;
  std::vector<void*> held;
  for (size_t i = 0; i < 2 * Pool::kSlabChunks + 5; ++i) {  // across slabs
    void* p = Pool::Alloc();
    ASSERT_TRUE(seen.insert(p).second);
    ASSERT_EQ(reinterpret_cast<uintptr_t>(p) % alignof(std::max_align_t), 0u);
    std::memset(p, 0xab, 16);  // its first and last bytes are writable
    std::memset(static_cast<char*>(p) + 4096 - 16, 0xcd, 16);
    held.push_back(p);
  }
  for (void* p : held) Pool::Free(p);
  // The thread's own free list is used before anything new is carved.
  for (size_t i = 0; i < held.size(); ++i) EXPECT_EQ(seen.count(Pool::Alloc()), 1u);
}

TEST(ChunkPoolTest, ChunksOfAnExitedThreadGoToOtherThreads) {
  using Pool = ChunkPool<8192>;
  std::set<void*> freed;
  std::thread t([&] {
    std::vector<void*> held;
    for (size_t i = 0; i < 10; ++i) held.push_back(Pool::Alloc());
    for (void* p : held) {
      Pool::Free(p);
      freed.insert(p);
    }
  });
  t.join();
  // This thread has no list or slab of this size yet: it takes what the other one left
  // (the 10 chunks it freed and the ones it had not carved yet) before anything new.
  size_t reused = 0;
  for (size_t i = 0; i < Pool::kSlabChunks; ++i) reused += freed.count(Pool::Alloc());
  EXPECT_EQ(reused, freed.size());
}

}  // namespace
}  // namespace joule::stream

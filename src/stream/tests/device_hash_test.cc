// The hashes of engine_state.h: the device index's hash spreads ids of every length, and
// the event-id hash (stored in checkpoints) keeps its values.
#include <gtest/gtest.h>

#include <cstdint>
#include <set>
#include <string>

#include "stream/engine_state.h"

namespace joule::stream {
namespace {

// Ids of every length from 0 to 40 that differ in one character at each position (and
// ids that differ only in length, which once collided through the length's xor): no two
// of them share a hash, and the low bits the index uses (a power-of-two table) take many
// values.
TEST(DeviceHashTest, DistinctIdsDistinctHashes) {
  std::set<uint64_t> hashes;
  std::set<uint64_t> low;
  size_t ids = 0;
  for (size_t len = 0; len <= 40; ++len) {
    std::string base(len, 'a');
    hashes.insert(HashDeviceId(base));
    low.insert(HashDeviceId(base) & 1023);
    ++ids;
    for (size_t pos = 0; pos < len; ++pos) {
      for (char c : {'b', 'z', '0', '9', '-'}) {
        std::string id = base;
        id[pos] = c;
        hashes.insert(HashDeviceId(id));
        low.insert(HashDeviceId(id) & 1023);
        ++ids;
      }
    }
  }
  for (int i = 0; i < 20000; ++i) {  // realistic ids: a prefix and a number
    const std::string id = "plug-" + std::to_string(100000 + i);
    hashes.insert(HashDeviceId(id));
    ++ids;
  }
  EXPECT_EQ(hashes.size(), ids);
  EXPECT_GT(low.size(), 1000u);  // of 1024 buckets, from ~4,100 short ids
}

// Checkpoints store event-id hashes: these values must never change.
TEST(DeviceHashTest, EventIdHashIsStable) {
  // (Computed separately: 64-bit FNV-1a, then h ^= h>>33; h *= 0xff51afd7ed558ccd;
  // h ^= h>>33, as docs/formats/checkpoint.md specifies.)
  EXPECT_EQ(HashEventId(""), 0xecba3df2c3383c52ULL);
  EXPECT_EQ(HashEventId("evt-1"), 0xd2d298af2b3968a3ULL);
  EXPECT_NE(HashEventId("evt-1"), HashEventId("evt-2"));
}

}  // namespace
}  // namespace joule::stream

#include "app/processor_checkpoint.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

namespace joule::app {
namespace {

ProcessorCheckpoint Sample() {
  ProcessorCheckpoint c;
  c.offsets = {{1, 100}, {3, 0}, {5, 12345678901}};
  c.engine_state = std::string("engine\0state", 12);
  model::Event e;
  e.device_id = "plug-1";
  e.timestamp_ns = 42;
  e.metrics = {{"power_w", 1.5}};
  c.readings.push_back(e);
  return c;
}

TEST(ProcessorCheckpointTest, RoundTrip) {
  ProcessorCheckpoint in = Sample();
  ProcessorCheckpoint out;
  ASSERT_TRUE(DecodeCheckpoint(EncodeCheckpoint(in), &out).ok());
  EXPECT_EQ(out.offsets, in.offsets);
  EXPECT_EQ(out.engine_state, in.engine_state);
  ASSERT_EQ(out.readings.size(), 1u);
  EXPECT_EQ(out.readings[0], in.readings[0]);
}

TEST(ProcessorCheckpointTest, EveryTruncationAndBitFlipIsDetected) {
  std::string data = EncodeCheckpoint(Sample());
  for (size_t n = 0; n < data.size(); ++n) {
    ProcessorCheckpoint out;
    EXPECT_FALSE(DecodeCheckpoint(std::string_view(data).substr(0, n), &out).ok()) << n;
  }
  for (size_t i = 0; i < data.size(); ++i) {
    std::string bad = data;
    bad[i] = static_cast<char>(bad[i] ^ 0x10);
    ProcessorCheckpoint out;
    EXPECT_FALSE(DecodeCheckpoint(bad, &out).ok()) << i;
  }
}

TEST(ProcessorCheckpointTest, FileIsReplacedAtomically) {
  char tmpl[] = "/tmp/joule-ckpt-XXXXXX";
  std::string dir = mkdtemp(tmpl);
  std::string path = dir + "/p.ckpt";
  auto none = ReadCheckpointFile(path);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  ASSERT_TRUE(WriteCheckpointFile(path, Sample()).ok());
  ProcessorCheckpoint second = Sample();
  second.offsets[0].second = 200;
  ASSERT_TRUE(WriteCheckpointFile(path, second).ok());
  auto read = ReadCheckpointFile(path);
  ASSERT_TRUE(read.ok());
  ASSERT_TRUE(read->has_value());
  EXPECT_EQ((*read)->offsets[0].second, 200u);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  std::ofstream(path, std::ios::trunc) << "garbage";
  EXPECT_EQ(ReadCheckpointFile(path).status().code(), StatusCode::kCorruption);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace joule::app

// storage.log_partitions: 0 = the existing log's count, else one per processor thread; an
// explicit count that disagrees with an existing log is refused.
#include "app/log_partitions.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <string>

#include "app/processor_checkpoint.h"
#include "log/log.h"

namespace joule::app {
namespace {

class LogPartitionsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "joule-log-partitions-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    config_.data_dir = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(config_.data_dir, ec);
  }
  // A log as an earlier server would have left it.
  void CreateLog(uint32_t partitions) {
    log::LogOptions o;
    o.dir = config_.data_dir + "/log";
    o.partitions = partitions;
    ASSERT_TRUE(log::Log::Open(o, nullptr).ok());
  }
  Config config_;
};

TEST_F(LogPartitionsTest, NewLogGetsOnePartitionPerProcessorThread) {
  EXPECT_EQ(config_.log_partitions, 0u);  // the default is "auto"
  EXPECT_EQ(config_.processor_threads, 2);
  auto p = ResolveLogPartitions(config_);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(*p, 2u);
  config_.processor_threads = 3;
  EXPECT_EQ(*ResolveLogPartitions(config_), 3u);
  config_.log_partitions = 8;  // explicit
  EXPECT_EQ(*ResolveLogPartitions(config_), 8u);
}

TEST_F(LogPartitionsTest, ExistingLogKeepsItsCount) {
  CreateLog(8);  // a data dir from before the default changed
  auto p = ResolveLogPartitions(config_);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(*p, 8u);
  config_.log_partitions = 8;
  EXPECT_EQ(*ResolveLogPartitions(config_), 8u);
}

TEST_F(LogPartitionsTest, ExplicitCountThatDisagreesWithTheLogIsRefused) {
  CreateLog(8);
  for (uint32_t wrong : {2u, 16u}) {
    config_.log_partitions = wrong;
    auto p = ResolveLogPartitions(config_);
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(p.status().message().find("has 8 partitions"), std::string::npos)
        << p.status().ToString();
  }
}

// A data dir that has run needs its log: a missing (or empty) log directory is refused
// before the log's opener creates a new one; a new data dir passes (found by a black-box
// test: the refusals that followed blamed the checkpoints).
TEST_F(LogPartitionsTest, ADataDirThatHasRunWithoutItsLogIsRefused) {
  namespace fs = std::filesystem;
  EXPECT_TRUE(CheckLogPresent(config_).ok());  // new
  fs::create_directories(config_.data_dir + "/checkpoints");
  fs::create_directories(config_.data_dir + "/archive");
  EXPECT_TRUE(CheckLogPresent(config_).ok());  // directories alone: nothing has run
  const std::string log_dir = config_.data_dir + "/log";
  for (const std::string marker :
       {"/checkpoints/processor-0.ckpt", "/archive/_archiver.ckpt", "/engine_epoch"}) {
    SCOPED_TRACE(marker);
    const std::string path = config_.data_dir + marker;
    ASSERT_TRUE(WriteCheckpointFile(path, ProcessorCheckpoint{}).ok());
    for (bool empty_dir : {false, true}) {
      if (empty_dir) fs::create_directories(log_dir);
      Status st = CheckLogPresent(config_);
      ASSERT_FALSE(st.ok());
      EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
      EXPECT_NE(st.message().find("the log directory " + log_dir + " is missing"),
                std::string::npos)
          << st.ToString();
      EXPECT_NE(st.message().find(path), std::string::npos) << st.ToString();
      EXPECT_EQ(fs::exists(log_dir), empty_dir);
    }
    CreateLog(2);
    EXPECT_TRUE(CheckLogPresent(config_).ok());
    fs::remove_all(log_dir);
    fs::remove(path);
  }
}

// Partition directories without their segment files (`rm log/p-*/*.seg`) where a checkpoint
// had read records are refused as a missing log, naming the directory; a restore's seeded
// data dir (empty partition directories, checkpoints at offset 0) passes (found by a
// black-box test: the opener created empty segments and the archive's checkpoint was blamed).
TEST_F(LogPartitionsTest, APartitionWithoutItsSegmentsIsRefusedWhenACheckpointReadIt) {
  namespace fs = std::filesystem;
  CreateLog(2);
  const std::string path = config_.data_dir + "/checkpoints/processor-0.ckpt";
  fs::create_directories(config_.data_dir + "/checkpoints");
  ProcessorCheckpoint seeded;
  seeded.offsets = {{0, 0}, {1, 0}};
  ASSERT_TRUE(WriteCheckpointFile(path, seeded).ok());
  const std::string p0 = config_.data_dir + "/log/p-000";
  for (const auto& e : fs::directory_iterator(p0)) fs::remove(e.path());
  EXPECT_TRUE(CheckLogPresent(config_).ok()) << "seeded: nothing read";
  ProcessorCheckpoint ran;
  ran.offsets = {{0, 5}, {1, 0}};
  ASSERT_TRUE(WriteCheckpointFile(path, ran).ok());
  Status st = CheckLogPresent(config_);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("the log partition directory " + p0 + " holds no segment file"),
            std::string::npos)
      << st.ToString();
  EXPECT_NE(st.message().find(path), std::string::npos) << st.ToString();
  EXPECT_TRUE(fs::is_empty(p0));
}

// The log's recovery knows how far the consumers' durable checkpoints got, so that it does
// not cut acknowledged records below them (docs/formats/log.md, "Recovery").
TEST_F(LogPartitionsTest, RecoveryOptionsCarryTheProcessorCheckpointsAndTheDamagePolicy) {
  std::filesystem::create_directories(config_.data_dir + "/checkpoints");
  ProcessorCheckpoint ckpt;
  ckpt.offsets = {{1, 40}, {3, 7}};
  const std::string path = config_.data_dir + "/checkpoints/processor-1.ckpt";
  ASSERT_TRUE(WriteCheckpointFile(path, ckpt).ok());
  log::LogOptions o;
  SetLogRecoveryOptions(config_, 4, &o);
  EXPECT_EQ(o.tail_damage, log::LogOptions::TailDamage::kRefuse);
  ASSERT_EQ(o.checkpoints.size(), 1u);
  EXPECT_EQ(o.checkpoints[0].name, path);
  EXPECT_EQ(o.checkpoints[0].offsets, (std::vector<uint64_t>{0, 40, 0, 7}));
  config_.log_damage = "cut";
  SetLogRecoveryOptions(config_, 4, &o);
  EXPECT_EQ(o.tail_damage, log::LogOptions::TailDamage::kCut);
  EXPECT_EQ(o.checkpoints.size(), 1u);
}

}  // namespace
}  // namespace joule::app

// PartitionProcessor::WaitForCorrections while the processor starts: the server's journal
// cleaner and replay jobs wait on processors that its starter thread is still starting.
// It read thread_.joinable() — a data race with Start's assignment of thread_ (found by
// ThreadSanitizer) — and answered false at once for a processor not started yet.
#include "app/partition_processor.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "common/metrics.h"
#include "log/log.h"
#include "model/aggregate_record.h"
#include "store/memory/memory_latest_store.h"

namespace joule::app {
namespace {

class PartitionProcessorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/joule-processor-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    log::LogOptions lo;
    lo.dir = dir_ + "/log";
    lo.partitions = 1;
    lo.fsync = false;
    auto log = log::Log::Open(lo, nullptr);
    ASSERT_TRUE(log.ok()) << log.status().ToString();
    log_ = std::move(*log);
  }
  void TearDown() override {
    processor_.reset();
    log_.reset();
    std::filesystem::remove_all(dir_);
  }

  void MakeProcessor(bool accept_partial_rebuild = false) {
    PartitionProcessorOptions o;
    o.partitions = {0};
    o.checkpoint_path = dir_ + "/processor-0.ckpt";
    o.accept_partial_rebuild = accept_partial_rebuild;
    o.tick_interval_ns = 10'000'000;
    processor_ = std::make_unique<PartitionProcessor>(std::move(o), log_.get(), &latest_, nullptr,
                                                      SystemClock::Default(), &metrics_, nullptr);
  }

  // A base-window correction of a device the engine does not know (applied as a no-op, but
  // counted and checkpointed like any other).
  static std::vector<std::pair<model::AggregateRecord, model::AggregateRecord>> Correction() {
    model::AggregateRecord before;
    before.device_id = "plug-1";
    before.window_start_ns = 60 * kNanosPerSecond;
    before.window_end_ns = 120 * kNanosPerSecond;
    before.final = true;
    before.count = 1;
    model::AggregateRecord after = before;
    after.count = 2;
    after.version = 2;
    return {{before, after}};
  }

  std::string dir_;
  std::unique_ptr<log::Log> log_;
  store::MemoryLatestStore latest_;
  MetricsRegistry metrics_;
  std::unique_ptr<PartitionProcessor> processor_;
};

TEST_F(PartitionProcessorTest, WaitForCorrectionsWaitsForAProcessorStartedMeanwhile) {
  MakeProcessor();
  processor_->RegisterWithLog();
  processor_->CorrectBaseWindows(1, Correction());  // as the server does with a journal
  std::atomic<int> waited{-1};
  std::thread waiter([&] { waited = processor_->WaitForCorrections(60 * kNanosPerSecond); });
  // The waiter is waiting (or about to) while the processor starts on this thread.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(processor_->Start().ok());
  waiter.join();
  EXPECT_EQ(waited.load(), 1) << "gave up on a processor that was starting";
  EXPECT_TRUE(processor_->Stop().ok());
}

TEST_F(PartitionProcessorTest, WaitForCorrectionsOfAStoppedProcessorAnswersAtOnce) {
  MakeProcessor();
  ASSERT_TRUE(processor_->Start().ok());
  ASSERT_TRUE(processor_->Stop().ok());
  processor_->CorrectBaseWindows(2, Correction());  // nobody will apply it
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(processor_->WaitForCorrections(60 * kNanosPerSecond));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
}

// The server abandons the processors that did not start (one failed, or a stop came during
// the start): a replay's hand-over waiting for their corrections gave up only after its 30 s,
// holding the shutdown that long.
TEST_F(PartitionProcessorTest, WaitForCorrectionsOfAnAbandonedProcessorGivesUp) {
  MakeProcessor();
  processor_->RegisterWithLog();
  processor_->CorrectBaseWindows(3, Correction());
  std::atomic<int> waited{-1};
  const auto t0 = std::chrono::steady_clock::now();
  std::thread waiter([&] { waited = processor_->WaitForCorrections(60 * kNanosPerSecond); });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  processor_->Abandon();  // never started
  waiter.join();
  EXPECT_EQ(waited.load(), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  EXPECT_TRUE(processor_->Stop().ok());  // nothing to stop
}

TEST_F(PartitionProcessorTest, AbandonLeavesAStartedProcessorAlone) {
  MakeProcessor();
  ASSERT_TRUE(processor_->Start().ok());
  processor_->Abandon();
  processor_->CorrectBaseWindows(4, Correction());
  EXPECT_TRUE(processor_->WaitForCorrections(60 * kNanosPerSecond));
  EXPECT_TRUE(processor_->Stop().ok());
}

// Without a checkpoint, a log whose first records retention deleted is refused: the state
// rebuilt from it would overwrite complete history with partial windows (found by a
// black-box test: 1h and 1d counts fell from 7200 to 5200 after the checkpoints were moved
// away). --accept-partial-rebuild rebuilds anyway.
TEST_F(PartitionProcessorTest, NoCheckpointAndATruncatedLogIsRefused) {
  log_.reset();
  log::LogOptions lo;
  lo.dir = dir_ + "/log";
  lo.partitions = 1;
  lo.fsync = false;
  lo.segment_bytes = 4096;
  lo.retention_bytes = 8192;
  lo.retention_interval_ns = 0;
  auto opened = log::Log::Open(lo, nullptr);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  log_ = std::move(*opened);
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(log_->Append(0, {std::string(500, 'x')}, nullptr).ok());
    ASSERT_TRUE(log_->Flush().ok());
  }
  log_->RegisterConsumer("archiver");
  log_->SetConsumerOffset("archiver", 0, log_->DurableEnd(0));
  ASSERT_TRUE(log_->EnforceRetention().ok());
  const uint64_t first = log_->StartOffset(0).value;
  ASSERT_GT(first, 0u);

  MakeProcessor();
  Status st = processor_->Start();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find(fmt::format("partition 0 starts at offset {}", first)),
            std::string::npos)
      << st.ToString();
  EXPECT_NE(st.message().find("overwrite complete history with partial windows"), std::string::npos)
      << st.ToString();
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/processor-0.ckpt"));
  processor_.reset();

  MakeProcessor(/*accept_partial_rebuild=*/true);
  ASSERT_TRUE(processor_->Start().ok());
  EXPECT_TRUE(processor_->Stop().ok());
  EXPECT_TRUE(std::filesystem::exists(dir_ + "/processor-0.ckpt"));
}

}  // namespace
}  // namespace joule::app

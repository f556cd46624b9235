// Log: refused rounds — a segment that cannot be created (no file descriptor) refuses the
// round without a crash.
#include <gtest/gtest.h>

#include <cerrno>
#include <future>
#include <string>
#include <vector>

#include "common/metrics.h"
#include "log/log.h"
#include "log/tests/fault_file_layer.h"
#include "log/tests/log_test_util.h"

namespace joule::log {
namespace {

using testing::AppendSync;
using testing::FaultFileLayer;
using testing::Payload;
using testing::ReadAll;
using testing::SegmentFiles;
using testing::TempDir;

LogOptions RefusalOptions(const std::string& dir, FaultFileLayer* layer, uint32_t partitions) {
  LogOptions o;
  o.dir = dir;
  o.partitions = partitions;
  o.segment_bytes = 2048;
  o.file_layer = layer;
  return o;
}

// Appends and waits for the callback; returns its status.
Status AppendWait(Log* log, uint32_t partition, std::vector<std::string> records) {
  std::promise<Status> done;
  Status st = log->Append(partition, std::move(records),
                          [&](Status s, model::LogOffset) { done.set_value(s); });
  if (!st.ok()) return st;
  return done.get_future().get();
}

std::vector<std::string> Records(uint32_t partition, uint64_t first, uint64_t n) {
  std::vector<std::string> out;
  for (uint64_t i = first; i < first + n; ++i) out.push_back(Payload(partition, i, 90));
  return out;
}

// Record 10 of partition 0, too big for what Records(0, 0, 10) left of a segment.
const std::string kBig = Payload(0, 10, 1500);

// Partition 0 holds Records(0, 0, 10) and then kBig (in a second segment).
void ExpectTenAndBig(Log* log) {
  auto records = ReadAll(log, 0);
  ASSERT_EQ(records.size(), 11u);
  for (uint64_t i = 0; i < 10; ++i) EXPECT_EQ(records[i].payload, Payload(0, i, 90));
  EXPECT_EQ(records[10].payload, kBig);
}

// Out of file descriptors at a segment roll (clients holding them all): the round is
// refused like one on a full disk, not a fail-stop abort, and the next one succeeds.
TEST(LogRefusalTest, NoDescriptorForTheNextSegmentRefusesTheRound) {
  TempDir tmp;
  FaultFileLayer layer;
  MetricsRegistry metrics;
  auto log = Log::Open(RefusalOptions(tmp.path(), &layer, 1), &metrics);
  ASSERT_TRUE(log.ok());
  AppendSync(log->get(), 0, Records(0, 0, 10));  // ~1.2 KB of the 2 KiB segment
  layer.SetCreateError(EMFILE);
  for (int attempt = 0; attempt < 3; ++attempt) {
    Status st = AppendWait(log->get(), 0, {kBig});  // needs a new segment
    EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.ToString();
    EXPECT_NE(st.message().find("out of file descriptors"), std::string::npos) << st.ToString();
    EXPECT_EQ((*log)->DurableEnd(0).value, 10u);
  }
  EXPECT_EQ(metrics.GetCounter("joule_log_no_descriptors_total", "")->Value(), 3u);
  EXPECT_EQ(metrics.GetCounter("joule_log_disk_full_total", "")->Value(), 0u);

  layer.SetCreateError(0);
  EXPECT_EQ(AppendSync(log->get(), 0, {kBig}).value, 10u);
  ExpectTenAndBig(log->get());
  EXPECT_EQ(SegmentFiles(tmp.path(), 0).size(), 2u);
  log->reset();
  auto reopened = Log::Open(RefusalOptions(tmp.path(), nullptr, 1), nullptr);
  ASSERT_TRUE(reopened.ok());
  EXPECT_TRUE((*reopened)->recovery_report().cuts.empty());
  ExpectTenAndBig(reopened->get());
}

// The same when the new segment was created with the last descriptor and the directory
// cannot be opened for its fsync: the creation is undone, and the next roll creates it.
TEST(LogRefusalTest, NoDescriptorForTheDirectoryFsyncUndoesTheRoll) {
  TempDir tmp;
  FaultFileLayer layer;
  auto log = Log::Open(RefusalOptions(tmp.path(), &layer, 1), nullptr);
  ASSERT_TRUE(log.ok());
  AppendSync(log->get(), 0, Records(0, 0, 10));
  layer.SetSyncDirError(EMFILE);
  for (int attempt = 0; attempt < 2; ++attempt) {
    Status st = AppendWait(log->get(), 0, {kBig});
    EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.ToString();
    EXPECT_EQ(SegmentFiles(tmp.path(), 0).size(), 1u);
  }
  layer.SetSyncDirError(0);
  EXPECT_EQ(AppendSync(log->get(), 0, {kBig}).value, 10u);
  EXPECT_EQ(SegmentFiles(tmp.path(), 0).size(), 2u);
  ExpectTenAndBig(log->get());
}

}  // namespace
}  // namespace joule::log

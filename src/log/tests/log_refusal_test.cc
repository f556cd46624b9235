// Log: refused rounds — a segment that cannot be created (no file descriptor, a
// full disk) refuses the round without a crash, and a refused round or group
// stores nothing.
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
using testing::Gate;
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

Status GroupWait(Log* log, std::vector<Log::PartitionBatch> batches) {
  std::promise<Status> done;
  Status st = log->AppendGroup(std::move(batches), [&](Status s) { done.set_value(s); });
  if (!st.ok()) return st;
  return done.get_future().get();
}

RecordBatch Batch(uint32_t partition, uint64_t first, uint64_t n) {
  RecordBatch b;
  for (uint64_t i = first; i < first + n; ++i) b.Add(Payload(partition, i, 90));
  return b;
}

std::vector<std::string> Records(uint32_t partition, uint64_t first, uint64_t n) {
  std::vector<std::string> out;
  for (uint64_t i = first; i < first + n; ++i) out.push_back(Payload(partition, i, 90));
  return out;
}

// Record 10 of partition 0, too big for what Records(0, 0, 10) left of a
// segment.
const std::string kBig = Payload(0, 10, 1500);

// Partition 0 holds Records(0, 0, 10) and then kBig (in a second segment).
void ExpectTenAndBig(Log* log) {
  auto records = ReadAll(log, 0);
  ASSERT_EQ(records.size(), 11u);
  for (uint64_t i = 0; i < 10; ++i) EXPECT_EQ(records[i].payload, Payload(0, i, 90));
  EXPECT_EQ(records[10].payload, kBig);
}

// Appends kBig (it needs a new segment) `attempts` times while `fail` makes the roll fail
// with EMFILE: refused each time, nothing of it stored, the segment not rolled; then, with
// descriptors back, it is stored in a new segment.
void ExpectRefusedWhileOutOfDescriptors(Log* log, FaultFileLayer* layer,
                                        void (FaultFileLayer::*fail)(int), int attempts,
                                        const std::string& dir) {
  AppendSync(log, 0, Records(0, 0, 10));  // ~1.2 KB of the 2 KiB segment
  (layer->*fail)(EMFILE);
  for (int attempt = 0; attempt < attempts; ++attempt) {
    Status st = AppendWait(log, 0, {kBig});
    EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.ToString();
    EXPECT_NE(st.message().find("out of file descriptors"), std::string::npos) << st.ToString();
    EXPECT_EQ(log->DurableEnd(0).value, 10u);
    EXPECT_EQ(SegmentFiles(dir, 0).size(), 1u);
  }
  (layer->*fail)(0);
  EXPECT_EQ(AppendSync(log, 0, {kBig}).value, 10u);
  EXPECT_EQ(SegmentFiles(dir, 0).size(), 2u);
  ExpectTenAndBig(log);
}

// Out of file descriptors at a segment roll (clients holding them all): the round is
// refused like one on a full disk, not a fail-stop abort, and the next one succeeds.
TEST(LogRefusalTest, NoDescriptorForTheNextSegmentRefusesTheRound) {
  TempDir tmp;
  FaultFileLayer layer;
  MetricsRegistry metrics;
  auto log = Log::Open(RefusalOptions(tmp.path(), &layer, 1), &metrics);
  ASSERT_TRUE(log.ok());
  ExpectRefusedWhileOutOfDescriptors(log->get(), &layer, &FaultFileLayer::SetCreateError, 3,
                                     tmp.path());
  EXPECT_EQ(metrics.GetCounter("joule_log_no_descriptors_total", "")->Value(), 3u);
  EXPECT_EQ(metrics.GetCounter("joule_log_disk_full_total", "")->Value(), 0u);
  log->reset();
  auto reopened = Log::Open(RefusalOptions(tmp.path(), nullptr, 1), nullptr);
  ASSERT_TRUE(reopened.ok());
  EXPECT_TRUE((*reopened)->recovery_report().cuts.empty());
  ExpectTenAndBig(reopened->get());
}

// The same when the new segment was created with the last descriptor and the directory
// cannot be opened for its fsync: the creation is undone (else the next roll's O_EXCL
// creation would fail), and the next roll creates it.
TEST(LogRefusalTest, NoDescriptorForTheDirectoryFsyncUndoesTheRoll) {
  TempDir tmp;
  FaultFileLayer layer;
  auto log = Log::Open(RefusalOptions(tmp.path(), &layer, 1), nullptr);
  ASSERT_TRUE(log.ok());
  ExpectRefusedWhileOutOfDescriptors(log->get(), &layer, &FaultFileLayer::SetSyncDirError, 2,
                                     tmp.path());
}

// A batch that does not fit in the active segment starts a new one before any
// of it is written: when that creation fails, none of the batch is stored (it
// was: the records before the roll were sealed, durable, and kept although the
// batch was refused).
TEST(LogRefusalTest, ARefusedBatchLeavesNothingInASealedSegment) {
  TempDir tmp;
  FaultFileLayer layer;
  auto log = Log::Open(RefusalOptions(tmp.path(), &layer, 1), nullptr);
  ASSERT_TRUE(log.ok());
  AppendSync(log->get(), 0, Records(0, 0, 10));
  layer.SetCreateError(ENOSPC);
  EXPECT_EQ(AppendWait(log->get(), 0, Records(0, 10, 10)).code(), StatusCode::kUnavailable);
  EXPECT_EQ((*log)->DurableEnd(0).value, 10u);
  EXPECT_EQ(ReadAll(log->get(), 0).size(), 10u);
  layer.SetCreateError(0);
  log->reset();
  auto reopened = Log::Open(RefusalOptions(tmp.path(), nullptr, 1), nullptr);
  ASSERT_TRUE(reopened.ok());
  EXPECT_EQ(ReadAll(reopened->get(), 0).size(), 10u);
}

// Partition 1 holds Records(1, 0, 10), near its segment's end (its next batch needs a new
// segment), and creating that segment fails with EMFILE from now on.
void FillPartitionOneThenRunOutOfDescriptors(Log* log, FaultFileLayer* layer) {
  AppendSync(log, 1, Records(1, 0, 10));
  layer->SetCreateError(EMFILE);
}

// An ingest request is one group over its partitions: a refusal on one
// partition (here its segment cannot be created) refuses the others too, and
// stores nothing of any.
TEST(LogRefusalTest, AGroupIsStoredWholeOrNotAtAll) {
  TempDir tmp;
  FaultFileLayer layer;
  auto log = Log::Open(RefusalOptions(tmp.path(), &layer, 2), nullptr);
  ASSERT_TRUE(log.ok());
  FillPartitionOneThenRunOutOfDescriptors(log->get(), &layer);
  std::vector<Log::PartitionBatch> group;
  group.push_back({0, Batch(0, 0, 3)});  // room in partition 0
  group.push_back({1, Batch(1, 10, 10)});
  EXPECT_EQ(GroupWait(log->get(), std::move(group)).code(), StatusCode::kUnavailable);
  EXPECT_EQ((*log)->DurableEnd(0).value, 0u);
  EXPECT_EQ((*log)->DurableEnd(1).value, 10u);
  EXPECT_TRUE(ReadAll(log->get(), 0).empty());

  layer.SetCreateError(0);
  group.clear();
  group.push_back({0, Batch(0, 0, 3)});
  group.push_back({1, Batch(1, 10, 10)});
  ASSERT_TRUE(GroupWait(log->get(), std::move(group)).ok());
  auto p0 = ReadAll(log->get(), 0);
  auto p1 = ReadAll(log->get(), 1);
  ASSERT_EQ(p0.size(), 3u);
  ASSERT_EQ(p1.size(), 20u);
  for (uint64_t i = 0; i < 3; ++i) EXPECT_EQ(p0[i].payload, Payload(0, i, 90));
  for (uint64_t i = 0; i < 20; ++i) EXPECT_EQ(p1[i].payload, Payload(1, i, 90));
}

// A group of one batch (one device's events: every MQTT message) takes its own path in the
// log: refused with the round, its callback called once with the error, offsets reused.
TEST(LogRefusalTest, AGroupOfOneBatchIsRefusedWithItsRound) {
  TempDir tmp;
  FaultFileLayer layer;
  auto log = Log::Open(RefusalOptions(tmp.path(), &layer, 2), nullptr);
  ASSERT_TRUE(log.ok());
  FillPartitionOneThenRunOutOfDescriptors(log->get(), &layer);
  std::vector<Log::PartitionBatch> group;
  group.push_back({1, Batch(1, 10, 10)});
  int calls = 0;
  std::promise<Status> refused;
  ASSERT_TRUE((*log)
                  ->AppendGroup(std::move(group),
                                [&](Status s) {
                                  ++calls;
                                  refused.set_value(s);
                                })
                  .ok());
  EXPECT_EQ(refused.get_future().get().code(), StatusCode::kUnavailable);
  EXPECT_EQ((*log)->DurableEnd(1).value, 10u);

  layer.SetCreateError(0);
  group.clear();
  group.push_back({1, Batch(1, 10, 10)});
  ASSERT_TRUE(GroupWait(log->get(), std::move(group)).ok());
  ASSERT_TRUE((*log)->Flush().ok());
  EXPECT_EQ(calls, 1);
  auto p1 = ReadAll(log->get(), 1);
  ASSERT_EQ(p1.size(), 20u);
  for (uint64_t i = 0; i < 20; ++i) EXPECT_EQ(p1[i].payload, Payload(1, i, 90));
  // A partition out of range is refused at once.
  group.clear();
  group.push_back({2, Batch(0, 0, 1)});
  EXPECT_EQ((*log)->AppendGroup(std::move(group), nullptr).code(), StatusCode::kInvalidArgument);
}

// Backpressure admits a group whole or not at all, and a group names a
// partition once.
TEST(LogRefusalTest, AGroupIsAdmittedWholeOrNotAtAll) {
  TempDir tmp;
  MetricsRegistry metrics;
  LogOptions o = RefusalOptions(tmp.path(), nullptr, 2);
  o.max_pending_bytes = 1000;
  auto log = Log::Open(o, &metrics);
  ASSERT_TRUE(log.ok());
  Gate gate;
  ASSERT_TRUE((*log)->Append(0, {"x"}, [&](Status, model::LogOffset) { gate.Wait(); }).ok());
  gate.WaitEntered();  // the writer is stuck; nothing else becomes durable
  ASSERT_TRUE((*log)->Append(0, {std::string(76, 'p')}, nullptr).ok());  // 100 bytes pending
  std::vector<Log::PartitionBatch> group;
  group.push_back({0, Batch(0, 1, 2)});  // would fit alone
  group.push_back({1, Batch(1, 0, 8)});
  EXPECT_EQ((*log)->AppendGroup(std::move(group), nullptr).code(), StatusCode::kUnavailable);
  EXPECT_EQ(metrics.GetGauge("joule_log_pending_bytes", "")->Value(), 100);
  gate.Open();
  ASSERT_TRUE((*log)->Flush().ok());
  // Nothing of the refused group took an offset.
  EXPECT_EQ(AppendSync(log->get(), 0, {"y"}).value, 2u);
  EXPECT_EQ(AppendSync(log->get(), 1, {"z"}).value, 0u);

  group.clear();
  group.push_back({1, Batch(1, 0, 1)});
  group.push_back({1, Batch(1, 1, 1)});
  EXPECT_EQ((*log)->AppendGroup(std::move(group), nullptr).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*log)->AppendGroup({}, nullptr).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace joule::log

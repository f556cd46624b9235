// The pre-written tail of the active segment (LogOptions::prewrite_bytes,
// docs/formats/log.md "Pre-written tail"): zeros after the last record are the end of the
// data, not a torn tail; a torn record before them is still cut; a log left with a tail
// (killed, power lost) reopens and appends over it; readers that follow the active segment
// read across the pre-written region; sealed segments and a cleanly closed log have no
// tail.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

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

LogOptions Options(const std::string& dir) {
  LogOptions o;
  o.dir = dir;
  o.partitions = 1;
  o.fsync = true;
  o.prewrite_bytes = 16 * 1024;
  o.segment_bytes = 64 * 1024;
  return o;
}

uint64_t RecordSize(uint64_t i) { return kRecordHeaderBytes + Payload(0, i).size(); }

uint64_t RecordBytes(uint64_t from, uint64_t to) {
  uint64_t n = 0;
  for (uint64_t i = from; i < to; ++i) n += RecordSize(i);
  return n;
}

uint64_t Size(const std::string& path) { return std::filesystem::file_size(path); }

void AppendBytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::app);
  f << bytes;
}

uint64_t Prewritten(MetricsRegistry* m) {
  return m->GetCounter("joule_log_prewritten_bytes_total", "")->Value();
}

// Appends records [from, to) one batch each.
void Fill(Log* log, uint64_t from, uint64_t to) {
  for (uint64_t i = from; i < to; ++i) ASSERT_EQ(AppendSync(log, 0, {Payload(0, i)}).value, i);
}

void ExpectRecords(Log* log, uint64_t n) {
  auto records = ReadAll(log, 0);
  ASSERT_EQ(records.size(), n);
  for (uint64_t i = 0; i < n; ++i) ASSERT_EQ(records[i].payload, Payload(0, i)) << i;
}

TEST(LogPrewriteTest, ActiveSegmentIsPrewrittenAheadAndCleanCloseCutsTheTail) {
  TempDir tmp;
  MetricsRegistry metrics;
  std::string seg;
  {
    auto log = Log::Open(Options(tmp.path()), &metrics);
    ASSERT_TRUE(log.ok()) << log.status().ToString();
    // A pre-write is taken over by the round after it ended; append until one was.
    uint64_t n = 0;
    while (Prewritten(&metrics) == 0 && n < 100000) {
      ASSERT_NO_FATAL_FAILURE(Fill(log->get(), n, n + 1));
      ++n;
    }
    ASSERT_GT(Prewritten(&metrics), 0u);
    seg = SegmentFiles(tmp.path(), 0).back();
    EXPECT_GT(Size(seg), RecordBytes(0, n));  // zeros after the records
    EXPECT_LE(Size(seg), 64u * 1024);         // never past segment_bytes
    ExpectRecords(log->get(), n);
  }
  // Closed cleanly: the file ends at its last record.
  auto files = SegmentFiles(tmp.path(), 0);
  ASSERT_EQ(files.size(), 1u);
  uint64_t records = 0;
  {
    auto log = Log::Open(Options(tmp.path()), nullptr);
    ASSERT_TRUE(log.ok());
    records = (*log)->DurableEnd(0).value;
    EXPECT_TRUE((*log)->recovery_report().cuts.empty());
  }
  EXPECT_EQ(Size(seg), RecordBytes(0, records));
}

TEST(LogPrewriteTest, ZeroTailIsTheEndOfTheDataNotACut) {
  TempDir tmp;
  {
    auto log = Log::Open(Options(tmp.path()), nullptr);
    ASSERT_TRUE(log.ok());
    Fill(log->get(), 0, 3);
  }
  // What a killed writer leaves: the records, then the pre-written zeros.
  const std::string seg = SegmentFiles(tmp.path(), 0).back();
  AppendBytes(seg, std::string(8192, '\0'));
  MetricsRegistry metrics;
  auto log = Log::Open(Options(tmp.path()), &metrics);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  EXPECT_TRUE((*log)->recovery_report().cuts.empty());
  EXPECT_EQ(metrics.GetCounter("joule_log_recovery_truncated_bytes_total", "")->Value(), 0u);
  EXPECT_EQ((*log)->recovery_report().records_recovered, 3u);
  EXPECT_EQ((*log)->DurableEnd(0).value, 3u);
  EXPECT_GE(Size(seg), RecordBytes(0, 3) + 8192);  // the tail was kept, not cut
  // Appends go over the zeros, where the data ended.
  ASSERT_NO_FATAL_FAILURE(Fill(log->get(), 3, 10));
  ExpectRecords(log->get(), 10);
  log->reset();
  auto again = Log::Open(Options(tmp.path()), nullptr);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE((*again)->recovery_report().cuts.empty());
  ExpectRecords(again->get(), 10);
}

TEST(LogPrewriteTest, TornRecordBeforeTheZeroTailIsCut) {
  TempDir tmp;
  {
    auto log = Log::Open(Options(tmp.path()), nullptr);
    ASSERT_TRUE(log.ok());
    Fill(log->get(), 0, 5);
  }
  const std::string seg = SegmentFiles(tmp.path(), 0).back();
  ASSERT_EQ(Size(seg), RecordBytes(0, 5));
  // Record 4 torn 10 bytes short of its end (its payload is letters), then zeros.
  std::filesystem::resize_file(seg, RecordBytes(0, 5) - 10);
  AppendBytes(seg, std::string(8192, '\0'));
  MetricsRegistry metrics;
  auto log = Log::Open(Options(tmp.path()), &metrics);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  ASSERT_EQ((*log)->recovery_report().cuts.size(), 1u);
  // The torn bytes are reported, not the zeros after them.
  EXPECT_EQ((*log)->recovery_report().cuts[0].bytes_cut, RecordSize(4) - 10);
  EXPECT_EQ(metrics.GetCounter("joule_log_recovery_truncated_bytes_total", "")->Value(),
            RecordSize(4) - 10);
  EXPECT_EQ((*log)->DurableEnd(0).value, 4u);
  ExpectRecords(log->get(), 4);
  ASSERT_NO_FATAL_FAILURE(Fill(log->get(), 4, 8));
  ExpectRecords(log->get(), 8);
}

TEST(LogPrewriteTest, NonZeroBytesAfterAZeroGapAreCut) {
  // A record whose first page never reached the disk but whose later bytes did: zeros,
  // then non-zero bytes. Never acknowledged (its fdatasync did not return), so cut.
  TempDir tmp;
  {
    auto log = Log::Open(Options(tmp.path()), nullptr);
    ASSERT_TRUE(log.ok());
    Fill(log->get(), 0, 4);
  }
  const std::string seg = SegmentFiles(tmp.path(), 0).back();
  AppendBytes(seg,
              std::string(4096, '\0') + "stray bytes of a lost record" + std::string(100, '\0'));
  auto log = Log::Open(Options(tmp.path()), nullptr);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  ASSERT_EQ((*log)->recovery_report().cuts.size(), 1u);
  EXPECT_EQ((*log)->recovery_report().cuts[0].bytes_cut, 4096u + 28);
  EXPECT_EQ(Size(seg), RecordBytes(0, 4));  // cut at the last record (before new appends)
  ExpectRecords(log->get(), 4);
  ASSERT_NO_FATAL_FAILURE(Fill(log->get(), 4, 6));
  ExpectRecords(log->get(), 6);
}

TEST(LogPrewriteTest, PowerLossLeavesATailAndTheLogContinuesOverIt) {
  TempDir tmp;
  FaultFileLayer layer;
  MetricsRegistry metrics;
  LogOptions o = Options(tmp.path());
  o.file_layer = &layer;
  uint64_t acked = 0;
  std::string seg;
  {
    auto log = Log::Open(o, &metrics);
    ASSERT_TRUE(log.ok());
    while (Prewritten(&metrics) == 0 && acked < 100000) {
      ASSERT_NO_FATAL_FAILURE(Fill(log->get(), acked, acked + 1));
      ++acked;
    }
    ASSERT_GT(Prewritten(&metrics), 0u);
    seg = SegmentFiles(tmp.path(), 0).back();
    // The power fails: only what was fdatasynced stays, and the log cannot cut its tail on
    // close (every call fails).
    layer.PowerLoss();
  }
  ASSERT_GT(Size(seg), RecordBytes(0, acked));
  LogOptions plain = Options(tmp.path());
  auto log = Log::Open(plain, nullptr);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  EXPECT_TRUE((*log)->recovery_report().cuts.empty());
  EXPECT_EQ((*log)->DurableEnd(0).value, acked);
  ExpectRecords(log->get(), acked);
  ASSERT_NO_FATAL_FAILURE(Fill(log->get(), acked, acked + 20));
  ExpectRecords(log->get(), acked + 20);
}

TEST(LogPrewriteTest, ReaderFollowsTheActiveSegmentAcrossThePrewrittenRegion) {
  // A reader that caught up has buffered the zeros after the last record; later records
  // are written over them. It must read them (never the stale zeros, never Corruption),
  // across pre-writes and rolls.
  TempDir tmp;
  MetricsRegistry metrics;
  LogOptions o = Options(tmp.path());
  o.segment_bytes = 32 * 1024;
  o.prewrite_bytes = 8 * 1024;
  auto log = Log::Open(o, &metrics);
  ASSERT_TRUE(log.ok());
  auto reader = (*log)->NewReader(0, model::LogOffset{0});
  ASSERT_TRUE(reader.ok());
  std::vector<LogRecord> got;
  const uint64_t kRecords = 600;  // ~120 KiB: several segments and pre-writes
  for (uint64_t i = 0; i < kRecords; ++i) {
    ASSERT_EQ(AppendSync(log->get(), 0, {Payload(0, i)}).value, i);
    auto n = (*reader)->Next(1000, &got);
    ASSERT_TRUE(n.ok()) << "after record " << i << ": " << n.status().ToString();
    ASSERT_EQ(*n, 1u) << "after record " << i;
  }
  ASSERT_EQ(got.size(), kRecords);
  for (uint64_t i = 0; i < kRecords; ++i) ASSERT_EQ(got[i].payload, Payload(0, i));
  EXPECT_GT(Prewritten(&metrics), 0u);
  EXPECT_GE(SegmentFiles(tmp.path(), 0).size(), 3u);
  EXPECT_TRUE((*log)->corruptions().empty());
}

TEST(LogPrewriteTest, ConcurrentReaderWhileWriting) {
  TempDir tmp;
  MetricsRegistry metrics;
  LogOptions o = Options(tmp.path());
  o.segment_bytes = 64 * 1024;
  o.prewrite_bytes = 16 * 1024;
  o.group_commit_window_ns = 0;
  auto log = Log::Open(o, &metrics);
  ASSERT_TRUE(log.ok());
  constexpr uint64_t kRecords = 3000;
  std::atomic<bool> failed{false};
  std::vector<LogRecord> got;
  std::thread reader_thread([&] {
    auto reader = (*log)->NewReader(0, model::LogOffset{0});
    if (!reader.ok()) {
      failed = true;
      return;
    }
    while (got.size() < kRecords) {
      (*log)->WaitForData(0, model::LogOffset{got.size()}, 100'000'000);
      auto n = (*reader)->Next(64, &got);
      if (!n.ok()) {
        ADD_FAILURE() << n.status().ToString();
        failed = true;
        return;
      }
    }
  });
  for (uint64_t i = 0; i < kRecords; i += 5) {
    std::vector<std::string> batch;
    for (uint64_t k = i; k < i + 5; ++k) batch.push_back(Payload(0, k));
    // Mostly not waiting for durability: the writer works while the reader reads.
    if (i % 50 == 0) {
      ASSERT_EQ(AppendSync(log->get(), 0, batch).value, i);
    } else {
      ASSERT_TRUE((*log)->Append(0, batch, nullptr).ok());
    }
  }
  ASSERT_TRUE((*log)->Flush().ok());
  reader_thread.join();
  ASSERT_FALSE(failed.load());
  ASSERT_EQ(got.size(), kRecords);
  for (uint64_t i = 0; i < kRecords; ++i) ASSERT_EQ(got[i].payload, Payload(0, i)) << i;
  EXPECT_TRUE((*log)->corruptions().empty());
  EXPECT_GT(Prewritten(&metrics), 0u);
}

TEST(LogPrewriteTest, SealedSegmentsEndAtTheirLastRecord) {
  TempDir tmp;
  LogOptions o = Options(tmp.path());
  o.segment_bytes = 8 * 1024;
  o.prewrite_bytes = 4 * 1024;
  {
    auto log = Log::Open(o, nullptr);
    ASSERT_TRUE(log.ok());
    Fill(log->get(), 0, 300);
    auto files = SegmentFiles(tmp.path(), 0);
    ASSERT_GE(files.size(), 4u);
    // Every sealed segment: exactly its records (the bytes of the offsets up to the next
    // segment's base), no zeros after them.
    for (size_t i = 0; i + 1 < files.size(); ++i) {
      const uint64_t base =
          *ParseSegmentFileName(std::filesystem::path(files[i]).filename().string());
      const uint64_t next =
          *ParseSegmentFileName(std::filesystem::path(files[i + 1]).filename().string());
      EXPECT_EQ(Size(files[i]), RecordBytes(base, next)) << files[i];
    }
  }
  o.verify_on_open = true;  // checks every sealed segment
  auto log = Log::Open(o, nullptr);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  ExpectRecords(log->get(), 300);
}

TEST(LogPrewriteTest, SegmentsWithoutATailFromBeforeKeepWorkingBothWays) {
  // A data dir written by a log that never pre-writes (every data dir before the
  // pre-written tail): opened with it, appended to, killed with a tail, then opened again
  // by a log that does not pre-write: every record, no cut.
  TempDir tmp;
  LogOptions old_log = Options(tmp.path());
  old_log.prewrite_bytes = 0;
  old_log.segment_bytes = 16 * 1024;
  {
    auto log = Log::Open(old_log, nullptr);
    ASSERT_TRUE(log.ok());
    Fill(log->get(), 0, 150);  // several sealed segments, none with a tail
  }
  FaultFileLayer layer;
  MetricsRegistry metrics;
  LogOptions new_log = old_log;
  new_log.prewrite_bytes = 16 * 1024;
  new_log.segment_bytes = 1 << 20;  // no roll: the tail stays on the active segment
  new_log.file_layer = &layer;
  uint64_t acked = 150;
  {
    auto log = Log::Open(new_log, &metrics);
    ASSERT_TRUE(log.ok()) << log.status().ToString();
    EXPECT_TRUE((*log)->recovery_report().cuts.empty());
    while (Prewritten(&metrics) == 0 && acked < 100000) {
      ASSERT_NO_FATAL_FAILURE(Fill(log->get(), acked, acked + 1));
      ++acked;
    }
    ASSERT_NO_FATAL_FAILURE(Fill(log->get(), acked, acked + 5));
    acked += 5;
    layer.PowerLoss();  // leaves the tail behind
  }
  {
    // The active segment ends in zeros: the tail is there for the old log to meet.
    const std::string seg = SegmentFiles(tmp.path(), 0).back();
    std::ifstream f(seg, std::ios::binary);
    f.seekg(-static_cast<std::streamoff>(kRecordHeaderBytes), std::ios::end);
    std::string last(kRecordHeaderBytes, 'x');
    f.read(last.data(), static_cast<std::streamsize>(last.size()));
    EXPECT_EQ(last, std::string(kRecordHeaderBytes, '\0'));
  }
  old_log.verify_on_open = true;
  auto log = Log::Open(old_log, nullptr);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  EXPECT_TRUE((*log)->recovery_report().cuts.empty());
  ExpectRecords(log->get(), acked);
  ASSERT_NO_FATAL_FAILURE(Fill(log->get(), acked, acked + 10));
  ExpectRecords(log->get(), acked + 10);
}

TEST(LogPrewriteTest, OffWithoutFsyncOrWhenDisabled) {
  for (bool fsync : {false, true}) {
    TempDir tmp;
    LogOptions o = Options(tmp.path());
    o.fsync = fsync;
    if (fsync) o.prewrite_bytes = 0;
    MetricsRegistry metrics;
    auto log = Log::Open(o, &metrics);
    ASSERT_TRUE(log.ok());
    Fill(log->get(), 0, 200);
    EXPECT_EQ(Size(SegmentFiles(tmp.path(), 0).back()), RecordBytes(0, 200));
    EXPECT_EQ(Prewritten(&metrics), 0u);
  }
}

}  // namespace
}  // namespace joule::log

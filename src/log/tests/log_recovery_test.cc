// Log recovery: torn and corrupt tails are cut and reported; corruption in sealed segments
// is an error, never skipped.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "common/metrics.h"
#include "log/log.h"
#include "log/segment_format.h"
#include "log/tests/log_test_util.h"

namespace joule::log {
namespace {

using testing::AppendSync;
using testing::Payload;
using testing::ReadAll;
using testing::SegmentFiles;
using testing::TempDir;

LogOptions Options(const std::string& dir, uint64_t segment_bytes = 64ull << 20) {
  LogOptions o;
  o.dir = dir;
  o.partitions = 2;
  o.segment_bytes = segment_bytes;
  return o;
}

// Writes `n` records to partition 1, one round each (so that they fill several segments:
// a round is never split across two), and closes the log.
void Fill(const LogOptions& options, uint64_t n) {
  auto log = Log::Open(options, nullptr);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  for (uint64_t i = 0; i < n; ++i) AppendSync(log->get(), 1, {Payload(1, i)});
}

uint64_t RecordSize(uint64_t i) { return kRecordHeaderBytes + Payload(1, i).size(); }

uint64_t FileSize(const std::string& path) { return std::filesystem::file_size(path); }

void AppendBytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::app);
  f << bytes;
}

void FlipBit(const std::string& path, uint64_t pos) {
  std::fstream f(path, std::ios::binary | std::ios::in | std::ios::out);
  f.seekg(static_cast<std::streamoff>(pos));
  char c;
  f.get(c);
  f.seekp(static_cast<std::streamoff>(pos));
  f.put(static_cast<char>(c ^ 0x10));
}

// Reopens, checks the cut and that records [0, kept) survive and appends continue at `kept`.
void ExpectRecovered(const LogOptions& options, uint64_t kept, uint64_t bytes_cut) {
  MetricsRegistry metrics;
  auto log = Log::Open(options, &metrics);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  const RecoveryReport& report = (*log)->recovery_report();
  ASSERT_EQ(report.cuts.size(), 1u);
  EXPECT_EQ(report.cuts[0].partition, 1u);
  EXPECT_EQ(report.cuts[0].bytes_cut, bytes_cut);
  EXPECT_EQ(report.cuts[0].segment, SegmentFiles(options.dir, 1).back());
  EXPECT_EQ(report.records_recovered, kept);
  EXPECT_EQ(metrics.GetCounter("joule_log_recovery_truncated_bytes_total", "")->Value(), bytes_cut);
  EXPECT_EQ((*log)->DurableEnd(1).value, kept);
  auto records = ReadAll(log->get(), 1);
  ASSERT_EQ(records.size(), kept);
  for (uint64_t i = 0; i < kept; ++i) ASSERT_EQ(records[i].payload, Payload(1, i));
  EXPECT_EQ(AppendSync(log->get(), 1, {"after"}).value, kept);
  records = ReadAll(log->get(), 1, kept);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].payload, "after");
}

TEST(LogRecoveryTest, TruncatedMidRecord) {
  TempDir tmp;
  LogOptions options = Options(tmp.path());
  Fill(options, 20);
  std::string seg = SegmentFiles(tmp.path(), 1).back();
  uint64_t size = FileSize(seg);
  std::filesystem::resize_file(seg, size - 10);
  ExpectRecovered(options, 19, RecordSize(19) - 10);
  // The cut is itself durable: a second open has nothing to cut.
  auto log = Log::Open(options, nullptr);
  ASSERT_TRUE(log.ok());
  EXPECT_TRUE((*log)->recovery_report().cuts.empty());
  EXPECT_EQ((*log)->DurableEnd(1).value, 20u);
}

TEST(LogRecoveryTest, TruncatedInsideHeader) {
  TempDir tmp;
  LogOptions options = Options(tmp.path());
  Fill(options, 5);
  std::string seg = SegmentFiles(tmp.path(), 1).back();
  std::filesystem::resize_file(seg, FileSize(seg) - RecordSize(4) + 7);
  // 7 bytes: the CRC and the length's low 3 bytes; the length is < 256, so its last two
  // of them are zero and the cut reported ends at the last non-zero byte (5).
  ExpectRecovered(options, 4, 5);
}

TEST(LogRecoveryTest, GarbageAppended) {
  TempDir tmp;
  LogOptions options = Options(tmp.path());
  Fill(options, 20);
  std::string garbage = "this is not a record, just some garbage after the tail";
  AppendBytes(SegmentFiles(tmp.path(), 1).back(), garbage);
  ExpectRecovered(options, 20, garbage.size());
}

std::string ReadBytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// Never delete: the bytes a recovery cuts are copied to the quarantine directory first
// (until then a cut torn tail was gone, with no copy to look at or put back).
TEST(LogRecoveryTest, CutBytesAreCopiedToQuarantineFirst) {
  TempDir tmp;
  LogOptions options = Options(tmp.path() + "/log");
  options.quarantine_dir = tmp.path() + "/quarantine";
  Fill(options, 20);
  const std::string seg = SegmentFiles(options.dir, 1).back();
  const uint64_t size = FileSize(seg);
  const std::string garbage = "this is not a record, just some garbage after the tail";
  AppendBytes(seg, garbage);
  ExpectRecovered(options, 20, garbage.size());
  std::vector<std::string> copies;
  for (const auto& e : std::filesystem::directory_iterator(options.quarantine_dir)) {
    copies.push_back(e.path().filename().string());
  }
  std::sort(copies.begin(), copies.end());
  ASSERT_EQ(copies.size(), 2u);
  const std::string stem =
      "p-001-" + SegmentFileName(0).substr(0, 20) + ".cut-at-" + std::to_string(size) + ".";
  EXPECT_EQ(copies[0].rfind(stem, 0), 0u) << copies[0];
  EXPECT_TRUE(copies[0].ends_with(".bin")) << copies[0];
  EXPECT_TRUE(copies[1].ends_with(".json")) << copies[1];
  EXPECT_EQ(ReadBytes(options.quarantine_dir + "/" + copies[0]), garbage);
  const std::string report = ReadBytes(options.quarantine_dir + "/" + copies[1]);
  EXPECT_NE(report.find("\"bytes_cut\":" + std::to_string(garbage.size())), std::string::npos)
      << report;
  EXPECT_NE(report.find("\"offset\":20"), std::string::npos) << report;
}

// A cut is never made without its copy: when the copy cannot be written, Open fails and
// the segment stays as it was.
TEST(LogRecoveryTest, NoCutWithoutTheQuarantineCopy) {
  TempDir tmp;
  LogOptions options = Options(tmp.path() + "/log");
  options.quarantine_dir = tmp.path() + "/not-a-dir";
  Fill(options, 20);
  AppendBytes(options.quarantine_dir, "a file where the directory should be");
  const std::string seg = SegmentFiles(options.dir, 1).back();
  AppendBytes(seg, "garbage");
  const uint64_t size = FileSize(seg);
  auto log = Log::Open(options, nullptr);
  ASSERT_FALSE(log.ok());
  EXPECT_NE(log.status().message().find("nothing was cut"), std::string::npos)
      << log.status().ToString();
  EXPECT_EQ(FileSize(seg), size);
}

TEST(LogRecoveryTest, BitFlipInLastRecord) {
  TempDir tmp;
  LogOptions options = Options(tmp.path());
  Fill(options, 20);
  std::string seg = SegmentFiles(tmp.path(), 1).back();
  FlipBit(seg, FileSize(seg) - 5);  // in the last record's payload
  ExpectRecovered(options, 19, RecordSize(19));
}

// Damage to a record followed by valid records is damage to acknowledged records when no
// torn write explains it: it was cut with every acknowledged record after it up to the
// segment's end (found by a black-box test: 40 acknowledged events gone after a restart).
TEST(LogRecoveryTest, ABadRecordFollowedByValidOnesIsRefused) {
  TempDir tmp;
  LogOptions options = Options(tmp.path() + "/log");
  options.quarantine_dir = tmp.path() + "/quarantine";
  Fill(options, 20);
  const std::string seg = SegmentFiles(options.dir, 1).back();
  uint64_t pos = 0;
  for (uint64_t i = 0; i < 15; ++i) pos += RecordSize(i);
  FlipBit(seg, pos + kRecordHeaderBytes + 3);  // record 15's payload; 16..19 are intact
  const uint64_t size = FileSize(seg);
  auto log = Log::Open(options, nullptr);
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().code(), StatusCode::kCorruption);
  const std::string& m = log.status().message();
  EXPECT_NE(m.find(seg), std::string::npos) << m;
  EXPECT_NE(m.find("byte " + std::to_string(pos) + " (offset 15"), std::string::npos) << m;
  EXPECT_NE(m.find("4 valid records (offsets 16 to 19"), std::string::npos) << m;
  EXPECT_EQ(FileSize(seg), size);
  EXPECT_FALSE(std::filesystem::exists(options.quarantine_dir));
  // The same with its length field damaged: the records after it are found all the same.
  FlipBit(seg, pos + kRecordHeaderBytes + 3);
  FlipBit(seg, pos + 5);
  log = Log::Open(options, nullptr);
  ASSERT_FALSE(log.ok());
  EXPECT_NE(log.status().message().find("4 valid records (offsets 16 to 19"), std::string::npos)
      << log.status().ToString();
  // Cut on purpose: everything from the bad record on, copied first.
  options.tail_damage = LogOptions::TailDamage::kCut;
  uint64_t cut = 0;
  for (uint64_t i = 15; i < 20; ++i) cut += RecordSize(i);
  ExpectRecovered(options, 15, cut);
  EXPECT_TRUE(std::filesystem::exists(options.quarantine_dir));
}

// What a power loss leaves: a batch's pages reach the disk in any order before its
// fdatasync, so valid records can follow a hole of unwritten (zero) sectors. They were
// never acknowledged: cut, as before.
TEST(LogRecoveryTest, ValidRecordsAfterAnUnwrittenSectorAreATornTail) {
  TempDir tmp;
  LogOptions options = Options(tmp.path());
  Fill(options, 20);
  const std::string seg = SegmentFiles(tmp.path(), 1).back();
  const uint64_t sector = 1536;  // a 512-byte sector in the middle of the records
  std::string bytes = ReadBytes(seg);
  ASSERT_GT(bytes.size(), sector + 1024);
  std::fill(bytes.begin() + sector, bytes.begin() + sector + 512, '\0');
  {
    std::ofstream f(seg, std::ios::binary | std::ios::trunc);
    f << bytes;
  }
  uint64_t kept = 0, end = 0;
  while (end + RecordSize(kept) <= sector) end += RecordSize(kept++);
  uint64_t nonzero = bytes.size();
  ExpectRecovered(options, kept, nonzero - end);
}

// A torn tail is at most what the log had written and not yet synced, which never exceeds
// max_pending_bytes: valid records farther than that after a hole were acknowledged.
TEST(LogRecoveryTest, ValidRecordsFartherThanTheUnsyncedBoundAreDamage) {
  TempDir tmp;
  LogOptions options = Options(tmp.path());
  Fill(options, 20);
  const std::string seg = SegmentFiles(tmp.path(), 1).back();
  std::string bytes = ReadBytes(seg);
  std::fill(bytes.begin() + 512, bytes.begin() + 1024, '\0');
  {
    std::ofstream f(seg, std::ios::binary | std::ios::trunc);
    f << bytes;
  }
  options.max_pending_bytes = 1024;
  auto log = Log::Open(options, nullptr);
  ASSERT_FALSE(log.ok());
  EXPECT_NE(log.status().message().find("more than the log ever has written but not synced"),
            std::string::npos)
      << log.status().ToString();
  EXPECT_EQ(ReadBytes(seg), bytes);
}

// A cut below an offset that a consumer's durable checkpoint already passed would delete
// acknowledged records: refused, naming the segment, the byte and the checkpoint, and
// nothing changes (the records were cut, and the processor then refused to start with
// "has no offset 20 (end 19)"; found by a black-box test).
TEST(LogRecoveryTest, ACutBelowACheckpointIsRefused) {
  TempDir tmp;
  LogOptions options = Options(tmp.path() + "/log");
  options.quarantine_dir = tmp.path() + "/quarantine";
  Fill(options, 20);
  const std::string seg = SegmentFiles(options.dir, 1).back();
  const uint64_t size = FileSize(seg);
  FlipBit(seg, size - 5);  // in the last record's payload: alone, it looks torn
  options.checkpoints = {{"processor-0.ckpt", {0, 20}}};
  auto log = Log::Open(options, nullptr);
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().code(), StatusCode::kCorruption);
  const std::string& m = log.status().message();
  EXPECT_NE(m.find(seg), std::string::npos) << m;
  EXPECT_NE(m.find("byte " + std::to_string(size - RecordSize(19))), std::string::npos) << m;
  EXPECT_NE(m.find("offset 19"), std::string::npos) << m;
  EXPECT_NE(m.find("processor-0.ckpt"), std::string::npos) << m;
  EXPECT_NE(m.find("Nothing was changed"), std::string::npos) << m;
  EXPECT_EQ(FileSize(seg), size);
  EXPECT_FALSE(std::filesystem::exists(options.quarantine_dir));
  // A checkpoint at or below the cut does not make it damage: a torn tail is cut.
  options.checkpoints = {{"processor-0.ckpt", {0, 19}}, {"_archiver.ckpt", {5}}};
  ExpectRecovered(options, 19, RecordSize(19));
}

// The operator's explicit choice (TailDamage::kCut): the damage is copied and cut, and the
// offsets the checkpoint passed get empty records, so that its consumer resumes there.
TEST(LogRecoveryTest, AnExplicitCutFillsTheOffsetsACheckpointPassed) {
  TempDir tmp;
  LogOptions options = Options(tmp.path() + "/log");
  options.quarantine_dir = tmp.path() + "/quarantine";
  Fill(options, 20);
  const std::string seg = SegmentFiles(options.dir, 1).back();
  FlipBit(seg, FileSize(seg) - 5);
  options.checkpoints = {{"processor-0.ckpt", {0, 20}}};
  options.tail_damage = LogOptions::TailDamage::kCut;
  {
    MetricsRegistry metrics;
    auto log = Log::Open(options, &metrics);
    ASSERT_TRUE(log.ok()) << log.status().ToString();
    const RecoveryReport& report = (*log)->recovery_report();
    ASSERT_EQ(report.cuts.size(), 1u);
    EXPECT_EQ(report.cuts[0].bytes_cut, RecordSize(19));
    EXPECT_FALSE(report.cuts[0].damage.empty());
    EXPECT_EQ(report.cuts[0].filler_records, 1u);
    EXPECT_FALSE(report.cuts[0].quarantined.empty());
    EXPECT_EQ((*log)->DurableEnd(1).value, 20u);
    auto records = ReadAll(log->get(), 1);
    ASSERT_EQ(records.size(), 20u);
    for (uint64_t i = 0; i < 19; ++i) EXPECT_EQ(records[i].payload, Payload(1, i));
    EXPECT_EQ(records[19].payload, "");  // the filler
    EXPECT_EQ(AppendSync(log->get(), 1, {"after"}).value, 20u);
  }
  // Nothing is left to cut at the next start.
  auto log = Log::Open(options, nullptr);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  EXPECT_TRUE((*log)->recovery_report().cuts.empty());
  EXPECT_EQ((*log)->DurableEnd(1).value, 21u);
}

TEST(LogRecoveryTest, TornTailOfActiveSegmentWithSealedSegmentsBefore) {
  TempDir tmp;
  LogOptions options = Options(tmp.path(), 2048);
  Fill(options, 100);
  auto files = SegmentFiles(tmp.path(), 1);
  ASSERT_GE(files.size(), 5u);
  std::string last = files.back();
  std::filesystem::resize_file(last, FileSize(last) - 1);
  ExpectRecovered(options, 99, RecordSize(99) - 1);
}

TEST(LogRecoveryTest, GarbageOnlyLastSegmentIsRemoved) {
  // A crash right after a roll: the new segment exists but holds only junk.
  TempDir tmp;
  LogOptions options = Options(tmp.path(), 2048);
  Fill(options, 100);
  size_t files_before = SegmentFiles(tmp.path(), 1).size();
  std::string next = tmp.path() + "/p-001/" + SegmentFileName(100);
  AppendBytes(next, "junk");
  MetricsRegistry metrics;
  auto log = Log::Open(options, &metrics);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  ASSERT_EQ((*log)->recovery_report().cuts.size(), 1u);
  EXPECT_EQ((*log)->recovery_report().cuts[0].bytes_cut, 4u);
  EXPECT_FALSE(std::filesystem::exists(next));
  EXPECT_EQ(SegmentFiles(tmp.path(), 1).size(), files_before);
  EXPECT_EQ((*log)->DurableEnd(1).value, 100u);
  EXPECT_EQ(AppendSync(log->get(), 1, {"x"}).value, 100u);
  EXPECT_EQ(ReadAll(log->get(), 1).size(), 101u);
}

TEST(LogRecoveryTest, CorruptionInSealedSegmentIsAnError) {
  TempDir tmp;
  LogOptions options = Options(tmp.path(), 2048);
  Fill(options, 100);
  auto files = SegmentFiles(tmp.path(), 1);
  ASSERT_GE(files.size(), 3u);
  uint64_t size_before = FileSize(files[1]);
  FlipBit(files[1], size_before / 2);

  {
    // The default open checks only the active segment; a reader hits the bad record.
    auto log = Log::Open(options, nullptr);
    ASSERT_TRUE(log.ok()) << log.status().ToString();
    EXPECT_TRUE((*log)->recovery_report().cuts.empty());
    EXPECT_EQ((*log)->DurableEnd(1).value, 100u);
    auto reader = (*log)->NewReader(1, model::LogOffset{0});
    ASSERT_TRUE(reader.ok());
    std::vector<LogRecord> out;
    Result<size_t> n = size_t{0};
    do {
      n = (*reader)->Next(5, &out);
    } while (n.ok() && *n > 0);
    ASSERT_FALSE(n.ok());
    EXPECT_EQ(n.status().code(), StatusCode::kCorruption) << n.status().ToString();
    EXPECT_LT(out.size(), 100u);
    for (uint64_t i = 0; i < out.size(); ++i) EXPECT_EQ(out[i].payload, Payload(1, i));
  }
  // verify_on_open refuses the log outright.
  options.verify_on_open = true;
  auto log = Log::Open(options, nullptr);
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().code(), StatusCode::kCorruption) << log.status().ToString();
  EXPECT_EQ(FileSize(files[1]), size_before);  // nothing was cut
}

TEST(LogRecoveryTest, RunTimeCorruptionIsReportedOnceAndQuarantined) {
  TempDir tmp;
  LogOptions options = Options(tmp.path() + "/log", 2048);
  options.quarantine_dir = tmp.path() + "/quarantine";
  Fill(options, 100);
  MetricsRegistry metrics;
  auto log = Log::Open(options, &metrics);  // opened while the segment is still intact
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  auto files = SegmentFiles(options.dir, 1);
  ASSERT_GE(files.size(), 3u);
  const uint64_t base1 = *ParseSegmentFileName(std::filesystem::path(files[1]).filename().string());
  const uint64_t base2 = *ParseSegmentFileName(std::filesystem::path(files[2]).filename().string());
  FlipBit(files[1], FileSize(files[1]) / 2);  // damaged while the log is open

  // Two readers (two consumers) meet the same record: one report, one quarantine copy.
  for (int consumer = 0; consumer < 2; ++consumer) {
    auto reader = (*log)->NewReader(1, model::LogOffset{0});
    ASSERT_TRUE(reader.ok());
    std::vector<LogRecord> out;
    Result<size_t> n = size_t{0};
    size_t before = 0;
    do {
      before = out.size();
      n = (*reader)->Next(5, &out);
      if (n.ok()) {
        EXPECT_EQ(out.size(), before + *n);
      }
    } while (n.ok() && *n > 0);
    ASSERT_EQ(n.status().code(), StatusCode::kCorruption) << n.status().ToString();
    EXPECT_EQ(out.size(), before) << "an error appends nothing";
    const uint64_t stopped = (*reader)->position().value;
    EXPECT_EQ(out.size(), stopped);
    EXPECT_GE(stopped, base1);
    EXPECT_LT(stopped, base2);
    for (uint64_t i = 0; i < out.size(); ++i) EXPECT_EQ(out[i].payload, Payload(1, i));
    // Sticky: the reader never reads past the damage.
    out.clear();
    EXPECT_EQ((*reader)->Next(5, &out).status().code(), StatusCode::kCorruption);
    EXPECT_TRUE(out.empty());
    EXPECT_EQ((*reader)->position().value, stopped);
  }
  std::vector<CorruptionReport> reports = (*log)->corruptions();
  ASSERT_EQ(reports.size(), 1u);
  const CorruptionReport& r = reports[0];
  EXPECT_EQ(r.partition, 1u);
  EXPECT_EQ(r.segment, files[1]);
  EXPECT_GE(r.offset, base1);
  EXPECT_EQ(r.records_unreadable, base2 - r.offset);
  EXPECT_GT(r.detected_ns, 0);
  ASSERT_FALSE(r.quarantined.empty());
  std::ifstream copy(r.quarantined, std::ios::binary), orig(files[1], std::ios::binary);
  std::string a((std::istreambuf_iterator<char>(copy)), std::istreambuf_iterator<char>());
  std::string b((std::istreambuf_iterator<char>(orig)), std::istreambuf_iterator<char>());
  EXPECT_EQ(a, b);  // the segment as found
  EXPECT_TRUE(
      std::filesystem::exists(std::filesystem::path(r.quarantined).replace_extension(".json")));
  const std::string text = metrics.Render();
  EXPECT_NE(text.find("joule_log_corrupt_records_total 1"), std::string::npos) << text;
  EXPECT_NE(text.find("joule_quarantined_segments_total 1"), std::string::npos) << text;
  // The other partition is unaffected.
  ASSERT_TRUE((*log)->Append(0, {"p0"}, nullptr).ok());
  ASSERT_TRUE((*log)->Flush().ok());
  EXPECT_EQ(ReadAll(log->get(), 0).size(), 1u);
}

TEST(LogRecoveryTest, VerifyOnOpenAcceptsAHealthyLog) {
  TempDir tmp;
  LogOptions options = Options(tmp.path(), 2048);
  Fill(options, 100);
  options.verify_on_open = true;
  auto log = Log::Open(options, nullptr);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  EXPECT_EQ(ReadAll(log->get(), 1).size(), 100u);
}

}  // namespace
}  // namespace joule::log

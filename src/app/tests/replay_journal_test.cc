// The replay journal (src/app/replay_journal.h): its encoding round-trips and detects damage,
// sequence numbers only grow, and recovery redoes the history writes idempotently.
#include "app/replay_journal.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include "common/clock.h"
#include "store/history_memory/memory_history_store.h"

namespace joule::app {
namespace {

const int64_t kT0 = (SystemClock::Default()->NowNanos() / kNanosPerHour - 2) * kNanosPerHour;

model::AggregateRecord Minute(int64_t start, uint64_t count, uint64_t version) {
  model::AggregateRecord r;
  r.device_id = "plug-1";
  r.resolution = model::Resolution::kBase;
  r.window_start_ns = start;
  r.window_end_ns = start + 60 * kNanosPerSecond;
  r.final = true;
  r.version = version;
  r.count = count;
  model::MetricAggregate m;
  m.name = "power_w";
  m.kind = model::MetricKind::kPower;
  m.count = count;
  m.min = 1;
  m.max = 1000;
  m.sum = 1234.5;
  m.first = 1;
  m.last = 2;
  m.energy_wh = 0.25;
  m.covered_ns = 30 * kNanosPerSecond;
  r.metrics.push_back(m);
  return r;
}

ReplayJournal Sample() {
  ReplayJournal j;
  j.seq = 7;
  model::AggregateRecord after = Minute(kT0, 7, uint64_t{1} << 52);
  j.writes.push_back(after);
  j.corrections.push_back({Minute(kT0, 6, 3), after});
  model::AggregateRecord fresh = Minute(kT0 + 60 * kNanosPerSecond, 1, uint64_t{1} << 52);
  j.writes.push_back(fresh);
  j.corrections.push_back({model::AggregateRecord{}, fresh});  // no stored record before
  return j;
}

class ReplayJournalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/joule-journal-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(ReplayJournalTest, RoundTripsAndDetectsDamage) {
  const ReplayJournal in = Sample();
  const std::string data = EncodeReplayJournal(in);
  ReplayJournal out;
  ASSERT_TRUE(DecodeReplayJournal(data, &out).ok());
  EXPECT_EQ(out.seq, 7u);
  EXPECT_EQ(out.writes, in.writes);
  ASSERT_EQ(out.corrections.size(), 2u);
  EXPECT_EQ(out.corrections[0].before, in.corrections[0].before);
  EXPECT_EQ(out.corrections[0].after, in.corrections[0].after);
  EXPECT_TRUE(out.corrections[1].before.device_id.empty());
  EXPECT_EQ(out.corrections[1].before.count, 0u);
  for (size_t n = 0; n < data.size(); ++n) {
    EXPECT_FALSE(DecodeReplayJournal(std::string_view(data).substr(0, n), &out).ok()) << n;
  }
  for (size_t i = 0; i < data.size(); i += 3) {
    std::string bad = data;
    bad[i] = static_cast<char>(bad[i] ^ 0x04);
    EXPECT_FALSE(DecodeReplayJournal(bad, &out).ok()) << i;
  }
}

TEST_F(ReplayJournalTest, SequenceNumbersGrowAcrossRemovals) {
  const std::string dir = ReplayJournalDir(dir_);
  auto a = AllocateReplayJournalSeq(dir);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(*a, 1u);
  ReplayJournal j = Sample();
  j.seq = *a;
  ASSERT_TRUE(WriteReplayJournal(dir, j).ok());
  auto listed = ListReplayJournals(dir);
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->size(), 1u);
  auto read = ReadReplayJournal((*listed)[0]);
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_EQ(read->writes, j.writes);
  ASSERT_TRUE(RemoveReplayJournal(dir, j.seq).ok());
  EXPECT_TRUE(ListReplayJournals(dir)->empty());
  auto b = AllocateReplayJournalSeq(dir);  // never reused, though the journal is gone
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(*b, 2u);
  // A journal found with a higher number than last_seq (written by hand, or last_seq lost):
  // still above it.
  j.seq = 40;
  ASSERT_TRUE(WriteReplayJournal(dir, j).ok());
  EXPECT_EQ(*AllocateReplayJournalSeq(dir), 41u);
}

TEST_F(ReplayJournalTest, RedoWritesHistoryOnceAndKeepsTheJournals) {
  const std::string dir = ReplayJournalDir(dir_);
  store::MemoryHistoryStore history;
  ASSERT_TRUE(history.Put({Minute(kT0, 6, 3)}).ok());  // the live record
  ReplayJournal j = Sample();
  j.seq = 1;
  ASSERT_TRUE(WriteReplayJournal(dir, j).ok());
  for (int run = 0; run < 2; ++run) {  // idempotent
    auto redone = RedoReplayJournals(dir_, &history, nullptr);
    ASSERT_TRUE(redone.ok()) << redone.status().ToString();
    ASSERT_EQ(redone->size(), 1u);
    EXPECT_EQ((*redone)[0].corrections.size(), 2u);
    auto got = history.Get("plug-1", model::Resolution::kBase, kT0);
    ASSERT_TRUE(got.ok() && got->has_value());
    EXPECT_EQ(**got, j.writes[0]);
  }
  // A journal's temp file (a kill before its rename) is removed, not finished.
  const std::string tmp =
      (std::filesystem::path(dir) / "00000000000000000002.journal.tmp").string();
  std::ofstream(tmp) << "partial";
  ASSERT_TRUE(RedoReplayJournals(dir_, &history, nullptr).ok());
  EXPECT_FALSE(std::filesystem::exists(tmp));
  // Without checkpoints there is nothing to correct: recovery removes the journal.
  auto recovered =
      RecoverReplayJournals(dir_, 1, stream::EngineOptions{}, nullptr, &history, nullptr);
  ASSERT_TRUE(recovered.ok()) << recovered.status().ToString();
  EXPECT_EQ(recovered->journals, 1u);
  EXPECT_TRUE(ListReplayJournals(dir)->empty());
  // A damaged journal is an error, and stays.
  ASSERT_TRUE(WriteReplayJournal(dir, j).ok());
  auto path = (*ListReplayJournals(dir))[0];
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(30);
  f.put('\x7f');
  f.close();
  auto bad = RecoverReplayJournals(dir_, 1, stream::EngineOptions{}, nullptr, &history, nullptr);
  EXPECT_EQ(bad.status().code(), StatusCode::kCorruption);
  EXPECT_EQ(ListReplayJournals(dir)->size(), 1u);
}

}  // namespace
}  // namespace joule::app

// Pipelined group commit (LogOptions::max_rounds_in_flight): a round is written and its
// fdatasync started while the previous round's is still in flight; callbacks and durable
// ends still follow round order; a full disk behind a round in flight refuses only the new
// round. The file layer here holds every fdatasync until the test releases it.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <future>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "common/metrics.h"
#include "log/file_layer.h"
#include "log/log.h"
#include "log/tests/fault_file_layer.h"
#include "log/tests/log_test_util.h"

namespace joule::log {
namespace {

using testing::FaultFileLayer;
using testing::ReadAll;
using testing::TempDir;

// Passes every call to `inner`; each DataSync waits until the test releases it (by call
// number, 0 = the first) and records the order of writes and syncs.
class GatedSyncLayer final : public FileLayer {
 public:
  explicit GatedSyncLayer(FileLayer* inner) : inner_(inner) {}

  int OpenForWrite(const std::string& path, bool create, int* fd) override {
    return inner_->OpenForWrite(path, create, fd);
  }
  int WriteAt(int fd, uint64_t offset, const char* data, size_t n) override {
    Record("write");
    return inner_->WriteAt(fd, offset, data, n);
  }
  int WriteZeros(int fd, uint64_t offset, uint64_t n) override {
    return inner_->WriteZeros(fd, offset, n);
  }
  int DataSync(int fd) override {
    int call;
    {
      std::unique_lock<std::mutex> l(mu_);
      call = syncs_started_++;
      events_.push_back("sync" + std::to_string(call));
      cv_.notify_all();
      cv_.wait(l, [&] { return released_.count(call) > 0; });
    }
    int err = inner_->DataSync(fd);
    Record("synced" + std::to_string(call));
    return err;
  }
  int SyncZeros(int fd) override { return inner_->SyncZeros(fd); }
  void StartWriteback(int fd) override { inner_->StartWriteback(fd); }
  int Truncate(int fd, uint64_t size) override { return inner_->Truncate(fd, size); }
  int SyncDir(const std::string& path) override { return inner_->SyncDir(path); }
  void Close(int fd) override { inner_->Close(fd); }

  // Waits until `n` DataSync calls have started (a generous bound, so that a log that
  // never issues them fails the test instead of hanging it).
  bool WaitSyncsStarted(int n) {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, std::chrono::seconds(60), [&] { return syncs_started_ >= n; });
  }
  // Waits until DataSync call `call` returned.
  bool WaitSynced(int call) {
    const std::string e = "synced" + std::to_string(call);
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, std::chrono::seconds(60), [&] {
      return std::find(events_.begin(), events_.end(), e) != events_.end();
    });
  }
  void Release(int call) {
    std::lock_guard<std::mutex> l(mu_);
    released_[call] = true;
    cv_.notify_all();
  }
  std::vector<std::string> events() const {
    std::lock_guard<std::mutex> l(mu_);
    return events_;
  }

 private:
  void Record(std::string e) {
    std::lock_guard<std::mutex> l(mu_);
    events_.push_back(std::move(e));
    cv_.notify_all();
  }

  FileLayer* inner_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  int syncs_started_ = 0;
  std::map<int, bool> released_;
  std::vector<std::string> events_;
};

LogOptions PipelineOptions(const std::string& dir, FileLayer* layer, uint32_t in_flight) {
  LogOptions o;
  o.dir = dir;
  o.partitions = 1;
  o.fsync = true;
  o.group_commit_window_ns = 0;  // one round per append here
  o.max_rounds_in_flight = in_flight;
  o.prewrite_bytes = 0;  // the syncs counted here are the rounds' only
  o.file_layer = layer;
  return o;
}

// Callback order and the durable end each callback saw.
struct Acks {
  std::mutex mu;
  std::vector<std::string> order;
  std::vector<uint64_t> durable_end_seen;
  std::vector<Status> statuses;
  Log::DurableCallback For(Log* log, std::string name) {
    return [this, log, name](Status st, model::LogOffset) {
      std::lock_guard<std::mutex> l(mu);
      order.push_back(name);
      durable_end_seen.push_back(log->DurableEnd(0).value);
      statuses.push_back(st);
    };
  }
};

TEST(LogPipelineTest, NextRoundSyncsWhileOneIsInFlightAndAcksFollowRoundOrder) {
  TempDir tmp;
  GatedSyncLayer layer(PosixFileLayer());
  MetricsRegistry metrics;
  auto opened = Log::Open(PipelineOptions(tmp.path(), &layer, 2), &metrics);
  ASSERT_TRUE(opened.ok());
  Log* log = opened->get();
  Acks acks;

  ASSERT_TRUE(log->Append(0, {"a"}, acks.For(log, "a")).ok());
  ASSERT_TRUE(layer.WaitSyncsStarted(1));  // round 1's fdatasync is held
  ASSERT_TRUE(log->Append(0, {"b1", "b2"}, acks.For(log, "b")).ok());
  // Round 2 is written and its fdatasync issued while round 1's has not returned.
  ASSERT_TRUE(layer.WaitSyncsStarted(2));
  EXPECT_EQ(log->DurableEnd(0).value, 0u);

  // The later round's sync returns first: its batch still waits for the earlier round.
  layer.Release(1);
  ASSERT_TRUE(layer.WaitSynced(1));
  {
    std::lock_guard<std::mutex> l(acks.mu);
    EXPECT_TRUE(acks.order.empty());
  }
  EXPECT_EQ(log->DurableEnd(0).value, 0u);
  layer.Release(0);
  ASSERT_TRUE(log->Flush().ok());

  EXPECT_EQ(acks.order, (std::vector<std::string>{"a", "b"}));
  // Each callback ran when exactly its round was durable.
  EXPECT_EQ(acks.durable_end_seen, (std::vector<uint64_t>{1, 3}));
  for (const Status& st : acks.statuses) EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(layer.events(),
            (std::vector<std::string>{"write", "sync0", "write", "sync1", "synced1", "synced0"}));
  auto records = ReadAll(log, 0);
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[0].payload, "a");
  EXPECT_EQ(records[2].payload, "b2");
  EXPECT_EQ(metrics.GetHistogram("joule_log_fsync_latency_seconds", "", {})->Count(), 2u);
  EXPECT_EQ(metrics.GetGauge("joule_log_pending_bytes", "")->Value(), 0);
}

TEST(LogPipelineTest, OneRoundInFlightWritesTheNextOnlyAfterItIsDurable) {
  TempDir tmp;
  GatedSyncLayer layer(PosixFileLayer());
  auto opened = Log::Open(PipelineOptions(tmp.path(), &layer, 1), nullptr);
  ASSERT_TRUE(opened.ok());
  Log* log = opened->get();
  Acks acks;

  ASSERT_TRUE(log->Append(0, {"a"}, acks.For(log, "a")).ok());
  ASSERT_TRUE(layer.WaitSyncsStarted(1));
  ASSERT_TRUE(log->Append(0, {"b"}, acks.For(log, "b")).ok());
  layer.Release(0);
  ASSERT_TRUE(layer.WaitSyncsStarted(2));
  layer.Release(1);
  ASSERT_TRUE(log->Flush().ok());

  EXPECT_EQ(acks.order, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(acks.durable_end_seen, (std::vector<uint64_t>{1, 2}));
  // Round 2 was written only after round 1's fdatasync returned.
  EXPECT_EQ(layer.events(),
            (std::vector<std::string>{"write", "sync0", "synced0", "write", "sync1", "synced1"}));
}

// Set by FaultFileLayer's no-space hook (possibly more than once).
struct Flag {
  std::mutex mu;
  std::condition_variable cv;
  bool set = false;
  static void Set(void* arg) {
    auto* f = static_cast<Flag*>(arg);
    std::lock_guard<std::mutex> l(f->mu);
    f->set = true;
    f->cv.notify_all();
  }
  bool Wait() {
    std::unique_lock<std::mutex> l(mu);
    return cv.wait_for(l, std::chrono::seconds(60), [&] { return set; });
  }
};

TEST(LogPipelineTest, FullDiskBehindARoundInFlightRefusesOnlyTheNewRound) {
  TempDir tmp;
  FaultFileLayer faults;
  GatedSyncLayer layer(&faults);
  auto opened = Log::Open(PipelineOptions(tmp.path(), &layer, 2), nullptr);
  ASSERT_TRUE(opened.ok());
  Log* log = opened->get();
  Acks acks;

  ASSERT_TRUE(log->Append(0, {"a"}, acks.For(log, "a")).ok());
  ASSERT_TRUE(layer.WaitSyncsStarted(1));  // round 1 in flight
  Flag no_space;
  faults.OnNoSpace(&Flag::Set, &no_space);
  faults.SetDiskFull(true, /*partial=*/3);
  ASSERT_TRUE(log->Append(0, {"b"}, acks.For(log, "b")).ok());
  ASSERT_TRUE(no_space.Wait());  // round 2's write failed while round 1 is in flight
  layer.Release(0);
  // Round 2's bytes are cut off, and the cut is made durable (fdatasync, call 1) before
  // "b" is refused: they may already be on the disk, inside the file's synced size.
  ASSERT_TRUE(layer.WaitSyncsStarted(2));
  layer.Release(1);
  ASSERT_TRUE(log->Flush().ok());

  EXPECT_EQ(acks.order, (std::vector<std::string>{"a", "b"}));
  ASSERT_EQ(acks.statuses.size(), 2u);
  EXPECT_TRUE(acks.statuses[0].ok()) << acks.statuses[0].ToString();
  EXPECT_EQ(acks.statuses[1].code(), StatusCode::kUnavailable);
  EXPECT_EQ(log->DurableEnd(0).value, 1u);

  // Space again: the refused offset is handed out again, after round 1's record.
  faults.SetDiskFull(false);
  layer.Release(2);
  ASSERT_TRUE(log->Append(0, {"c"}, acks.For(log, "c")).ok());
  ASSERT_TRUE(log->Flush().ok());
  auto records = ReadAll(log, 0);
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].payload, "a");
  EXPECT_EQ(records[1].payload, "c");
  EXPECT_EQ(records[1].offset.value, 1u);
}

// A group-commit window is not waited out by Flush() or after EndGroupCommitWindow(): with
// storage.log_group_commit_window = 25s a SIGTERM left an ingest request without an answer
// and the shutdown's Flush() waited the whole window (an hour with 1h; found by the
// operator's black-box test, session 31).
LogOptions LongWindowOptions(const std::string& dir) {
  LogOptions o;
  o.dir = dir;
  o.partitions = 1;
  o.fsync = true;
  o.group_commit_window_ns = 3600'000'000'000;  // an hour: the test would time out
  o.prewrite_bytes = 0;
  return o;
}

TEST(LogWindowTest, FlushCommitsWithoutWaitingOutTheWindow) {
  TempDir tmp;
  MetricsRegistry metrics;
  std::future<Status> flushed;  // (destroyed after the log, which ends any wait)
  std::promise<Status> acked;
  auto opened = Log::Open(LongWindowOptions(tmp.path()), &metrics);
  ASSERT_TRUE(opened.ok());
  Log* log = opened->get();
  ASSERT_TRUE(
      log->Append(0, {"a"}, [&](Status st, model::LogOffset) { acked.set_value(st); }).ok());
  flushed = std::async(std::launch::async, [log] { return log->Flush(); });
  ASSERT_EQ(flushed.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  EXPECT_TRUE(flushed.get().ok());
  EXPECT_TRUE(acked.get_future().get().ok());
  EXPECT_EQ(log->DurableEnd(0).value, 1u);
}

TEST(LogWindowTest, EndGroupCommitWindowAcknowledgesWhatIsQueuedAndWhatFollows) {
  TempDir tmp;
  MetricsRegistry metrics;
  std::promise<Status> first;  // (destroyed after the log, which runs every callback)
  std::promise<Status> second;
  auto opened = Log::Open(LongWindowOptions(tmp.path()), &metrics);
  ASSERT_TRUE(opened.ok());
  Log* log = opened->get();
  ASSERT_TRUE(
      log->Append(0, {"a"}, [&](Status st, model::LogOffset) { first.set_value(st); }).ok());
  log->EndGroupCommitWindow();
  auto f = first.get_future();
  ASSERT_EQ(f.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  EXPECT_TRUE(f.get().ok());
  ASSERT_TRUE(
      log->Append(0, {"b"}, [&](Status st, model::LogOffset) { second.set_value(st); }).ok());
  auto g = second.get_future();
  ASSERT_EQ(g.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  EXPECT_TRUE(g.get().ok());
  EXPECT_EQ(log->DurableEnd(0).value, 2u);
}

}  // namespace
}  // namespace joule::log

// Log: appends, offsets, group commit, backpressure, reopen, readers.
#include "log/log.h"

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "common/metrics.h"
#include "log/tests/log_test_util.h"

namespace joule::log {
namespace {

using testing::AppendSync;
using testing::Gate;
using testing::Payload;
using testing::ReadAll;
using testing::SegmentFiles;
using testing::TempDir;

LogOptions SmallOptions(const std::string& dir, uint32_t partitions = 2) {
  LogOptions o;
  o.dir = dir;
  o.partitions = partitions;
  o.segment_bytes = 2048;
  return o;
}

TEST(LogTest, RoundTripAcrossSegmentRolls) {
  TempDir tmp;
  MetricsRegistry metrics;
  auto log = Log::Open(SmallOptions(tmp.path()), &metrics);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  ASSERT_EQ((*log)->partitions(), 2u);

  uint64_t next = 0;
  for (size_t batch = 1; batch <= 20; ++batch) {
    std::vector<std::string> records;
    for (size_t i = 0; i < batch; ++i) records.push_back(Payload(1, next + i));
    EXPECT_EQ(AppendSync(log->get(), 1, records).value, next);
    next += batch;
  }
  EXPECT_EQ((*log)->DurableEnd(1).value, next);
  EXPECT_EQ((*log)->DurableEnd(0).value, 0u);
  EXPECT_EQ((*log)->StartOffset(1).value, 0u);
  // ~40 KiB in 2 KiB segments.
  EXPECT_GE(SegmentFiles(tmp.path(), 1).size(), 15u);

  for (size_t chunk : {1, 7, 1000}) {
    auto records = ReadAll(log->get(), 1, 0, chunk);
    ASSERT_EQ(records.size(), next);
    for (uint64_t i = 0; i < next; ++i) {
      EXPECT_EQ(records[i].offset.value, i);
      EXPECT_EQ(records[i].payload, Payload(1, i));
    }
  }
  // From the middle of a segment.
  auto tail = ReadAll(log->get(), 1, 101);
  ASSERT_EQ(tail.size(), next - 101);
  EXPECT_EQ(tail.front().offset.value, 101u);
  EXPECT_EQ(tail.front().payload, Payload(1, 101));
  EXPECT_TRUE(ReadAll(log->get(), 0).empty());
  EXPECT_EQ(metrics.GetCounter("joule_log_appended_records_total", "")->Value(), next);
}

std::multiset<std::string> ThreadNames() {
  std::multiset<std::string> names;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream in(task.path() / "comm");
    std::string name;
    if (std::getline(in, name)) names.insert(name);
  }
  return names;
}

// top -H and perf tell the log's threads apart from the I/O threads (src/app/README.md).
TEST(LogTest, ItsThreadsAreNamed) {
  TempDir tmp;
  MetricsRegistry metrics;
  LogOptions o = SmallOptions(tmp.path());
  o.fsync = true;
  o.prewrite_bytes = 64 << 10;
  auto log = Log::Open(o, &metrics);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  AppendSync(log->get(), 0, {Payload(0, 0)});  // every thread has run
  const auto names = ThreadNames();
  EXPECT_EQ(names.count("joule-log-write"), 1u);
  EXPECT_EQ(names.count("joule-sync-0"), 1u);
  EXPECT_EQ(names.count("joule-sync-1"), 1u);
  EXPECT_EQ(names.count("joule-log-pre0"), 1u);
}

TEST(LogTest, OversizedRecordGetsItsOwnSegment) {
  TempDir tmp;
  auto log = Log::Open(SmallOptions(tmp.path(), 1), nullptr);
  ASSERT_TRUE(log.ok());
  std::string big(10000, 'x');
  AppendSync(log->get(), 0, {"a"});
  AppendSync(log->get(), 0, {big});
  AppendSync(log->get(), 0, {"b"});
  // A round over segment_bytes is not split across segments (a roll comes before a
  // round's writes, so that a refused round is cut off whole): it gets one of its own.
  AppendSync(log->get(), 0, {big, "c"});
  AppendSync(log->get(), 0, {"d"});
  auto records = ReadAll(log->get(), 0);
  ASSERT_EQ(records.size(), 6u);
  EXPECT_EQ(records[1].payload, big);
  EXPECT_EQ(records[2].payload, "b");
  EXPECT_EQ(records[4].payload, "c");
  EXPECT_EQ(records[5].payload, "d");
  EXPECT_EQ(SegmentFiles(tmp.path(), 0).size(), 5u);
}

TEST(LogTest, ConcurrentAppendersGetContiguousOffsetsPerPartition) {
  TempDir tmp;
  auto log = Log::Open(SmallOptions(tmp.path(), 4), nullptr);
  ASSERT_TRUE(log.ok());
  std::mutex mu;
  std::map<uint32_t, std::vector<std::pair<uint64_t, size_t>>> acks;  // in callback order
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 100; ++i) {
        uint32_t partition = static_cast<uint32_t>((t + i) % 4);
        size_t n = static_cast<size_t>(1 + (i % 3));
        // (Built with append: GCC 12's -Wrestrict misfires on "literal" + std::string.)
        std::string tag = std::to_string(t);
        tag.append("/").append(std::to_string(i));
        std::vector<std::string> records(n, tag);
        Status st = (*log)->Append(partition, records, [&, partition, n](Status s, auto first) {
          ASSERT_TRUE(s.ok());
          std::lock_guard<std::mutex> l(mu);
          acks[partition].push_back({first.value, n});
        });
        ASSERT_TRUE(st.ok()) << st.ToString();
      }
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_TRUE((*log)->Flush().ok());
  size_t total = 0;
  for (uint32_t p = 0; p < 4; ++p) {
    uint64_t expect = 0;
    for (auto [first, n] : acks[p]) {  // callbacks fire in offset order, without gaps
      EXPECT_EQ(first, expect) << "partition " << p;
      expect = first + n;
    }
    EXPECT_EQ((*log)->DurableEnd(p).value, expect);
    auto records = ReadAll(log->get(), p);
    ASSERT_EQ(records.size(), expect);
    for (const auto& [first, n] : acks[p]) {  // each batch's records are contiguous
      for (size_t k = 1; k < n; ++k) {
        EXPECT_EQ(records[first + k].payload, records[first].payload);
      }
    }
    total += expect;
  }
  size_t expected_total = 0;
  for (int i = 0; i < 100; ++i) expected_total += 6 * static_cast<size_t>(1 + (i % 3));
  EXPECT_EQ(total, expected_total);
}

TEST(LogTest, GroupCommitSharesFsyncs) {
  TempDir tmp;
  MetricsRegistry metrics;
  LogOptions options;
  options.dir = tmp.path();
  options.partitions = 8;
  auto log = Log::Open(options, &metrics);
  ASSERT_TRUE(log.ok());

  // Hold the writer inside the first callback while the appenders queue up behind it.
  Gate gate;
  ASSERT_TRUE((*log)->Append(0, {"first"}, [&](Status, model::LogOffset) { gate.Wait(); }).ok());
  gate.WaitEntered();

  constexpr int kThreads = 4;
  constexpr int kPerThread = 250;
  std::atomic<int> acked{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        uint32_t partition = static_cast<uint32_t>((t * kPerThread + i) % 8);
        ASSERT_TRUE((*log)
                        ->Append(partition, {Payload(partition, i)},
                                 [&](Status s, model::LogOffset) {
                                   EXPECT_TRUE(s.ok());
                                   acked.fetch_add(1);
                                 })
                        .ok());
      }
    });
  }
  for (auto& t : threads) t.join();
  gate.Open();
  ASSERT_TRUE((*log)->Flush().ok());
  EXPECT_EQ(acked.load(), kThreads * kPerThread);

  const int appends = 1 + kThreads * kPerThread;
  Histogram* per_fsync = metrics.GetHistogram("joule_log_records_per_fsync", "", {});
  Histogram* fsync_latency = metrics.GetHistogram("joule_log_fsync_latency_seconds", "", {});
  Histogram* latency = metrics.GetHistogram("joule_log_append_latency_seconds", "", {});
  // One fsync for the first append, then one per partition for all the rest.
  EXPECT_EQ(per_fsync->Count(), 1u + 8u);
  EXPECT_LT(per_fsync->Count(), static_cast<uint64_t>(appends));
  EXPECT_EQ(per_fsync->Sum(), appends);
  EXPECT_EQ(fsync_latency->Count(), per_fsync->Count());
  EXPECT_EQ(latency->Count(), static_cast<uint64_t>(appends));
  EXPECT_GT(metrics.GetHistogram("joule_log_bytes_per_fsync", "", {})->Sum(), appends * 150.0);
  EXPECT_EQ(metrics.GetGauge("joule_log_pending_bytes", "")->Value(), 0);
  // Two rounds (the first append, then everything queued behind it): the phases of each.
  auto phase = [&](const char* name) {
    return metrics.GetHistogram("joule_log_commit_phase_seconds", "", {}, {{"phase", name}});
  };
  EXPECT_EQ(phase("queue")->Count(), static_cast<uint64_t>(appends));
  EXPECT_EQ(phase("write")->Count(), 2u);
  EXPECT_EQ(phase("sync")->Count(), 2u);
  EXPECT_EQ(phase("callbacks")->Count(), 2u);
  // The test's gate held the first round's callback while the rest queued up.
  EXPECT_GT(phase("queue")->Sum(), 0.0);
}

TEST(LogTest, UnavailableWhenOverMaxPendingBytes) {
  TempDir tmp;
  MetricsRegistry metrics;
  LogOptions options = SmallOptions(tmp.path(), 1);
  options.max_pending_bytes = 1000;
  auto log = Log::Open(options, &metrics);
  ASSERT_TRUE(log.ok());
  Gate gate;
  ASSERT_TRUE((*log)->Append(0, {"x"}, [&](Status, model::LogOffset) { gate.Wait(); }).ok());
  gate.WaitEntered();  // the writer is stuck; nothing else becomes durable

  std::string payload(76, 'p');  // 100 bytes framed
  int accepted = 0;
  Status st;
  while ((st = (*log)->Append(0, {payload}, nullptr)).ok()) ++accepted;
  EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.ToString();
  EXPECT_EQ(accepted, 10);
  EXPECT_EQ(metrics.GetGauge("joule_log_pending_bytes", "")->Value(), 1000);
  // A rejected batch takes nothing: not even the records that would have fit.
  EXPECT_EQ((*log)->Append(0, {"a", "b"}, nullptr).code(), StatusCode::kUnavailable);

  gate.Open();
  ASSERT_TRUE((*log)->Flush().ok());
  EXPECT_EQ((*log)->DurableEnd(0).value, 11u);
  // Room again; and a batch over the limit is admitted when nothing is pending.
  std::vector<std::string> huge(20, payload);
  EXPECT_EQ(AppendSync(log->get(), 0, huge).value, 11u);
  EXPECT_EQ((*log)->DurableEnd(0).value, 31u);
  EXPECT_EQ(metrics.GetCounter("joule_log_rejected_appends_total", "")->Value(), 2u);
}

TEST(LogTest, ReopenKeepsEverything) {
  TempDir tmp;
  std::vector<uint64_t> ends(3);
  {
    auto log = Log::Open(SmallOptions(tmp.path(), 3), nullptr);
    ASSERT_TRUE(log.ok());
    for (uint32_t p = 0; p < 3; ++p) {
      for (uint64_t i = 0; i < 50 * (p + 1); ++i) {
        ASSERT_TRUE((*log)->Append(p, {Payload(p, i)}, nullptr).ok());
      }
      ends[p] = 50 * (p + 1);
    }
    // No Flush: the destructor must make everything durable.
  }
  MetricsRegistry metrics;
  auto log = Log::Open(SmallOptions(tmp.path(), 3), &metrics);
  ASSERT_TRUE(log.ok());
  EXPECT_TRUE((*log)->recovery_report().cuts.empty());
  EXPECT_EQ((*log)->recovery_report().records_recovered, 50u + 100u + 150u);
  for (uint32_t p = 0; p < 3; ++p) {
    EXPECT_EQ((*log)->DurableEnd(p).value, ends[p]);
    auto records = ReadAll(log->get(), p);
    ASSERT_EQ(records.size(), ends[p]);
    for (uint64_t i = 0; i < ends[p]; ++i) EXPECT_EQ(records[i].payload, Payload(p, i));
  }
  // Appends continue where the log left off.
  EXPECT_EQ(AppendSync(log->get(), 2, {"more"}).value, ends[2]);
  EXPECT_EQ(ReadAll(log->get(), 2, ends[2]).at(0).payload, "more");
  EXPECT_EQ(metrics.GetCounter("joule_log_recovery_truncated_bytes_total", "")->Value(), 0u);
}

TEST(LogTest, ReopenWithFewerPartitionsIsAnError) {
  TempDir tmp;
  { ASSERT_TRUE(Log::Open(SmallOptions(tmp.path(), 4), nullptr).ok()); }
  auto log = Log::Open(SmallOptions(tmp.path(), 2), nullptr);
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().code(), StatusCode::kInvalidArgument);
  // More partitions than before is fine (new ones start empty).
  EXPECT_TRUE(Log::Open(SmallOptions(tmp.path(), 6), nullptr).ok());
}

TEST(LogTest, ExistingPartitionsIsTheCountOnDisk) {
  TempDir tmp;
  const std::string dir = tmp.path() + "/log";
  auto none = ExistingPartitions(dir);  // no log yet
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, 0u);
  { ASSERT_TRUE(Log::Open(SmallOptions(dir, 5), nullptr).ok()); }
  std::filesystem::create_directory(dir + "/not-a-partition");
  auto five = ExistingPartitions(dir);
  ASSERT_TRUE(five.ok());
  EXPECT_EQ(*five, 5u);
}

TEST(LogTest, ReadersSeeOnlyDurableRecords) {
  TempDir tmp;
  auto log = Log::Open(SmallOptions(tmp.path(), 1), nullptr);
  ASSERT_TRUE(log.ok());
  AppendSync(log->get(), 0, {"a", "b"});
  auto reader = (*log)->NewReader(0, model::LogOffset{0});
  ASSERT_TRUE(reader.ok());

  Gate gate;
  ASSERT_TRUE((*log)->Append(0, {"c"}, [&](Status, model::LogOffset) { gate.Wait(); }).ok());
  gate.WaitEntered();
  ASSERT_TRUE((*log)->Append(0, {"d", "e"}, nullptr).ok());  // queued behind the gate

  std::vector<LogRecord> out;
  auto n = (*reader)->Next(100, &out);
  ASSERT_TRUE(n.ok());
  ASSERT_EQ(*n, 3u);  // a, b, c (durable: its callback is running), not d, e
  EXPECT_EQ(out[2].payload, "c");
  EXPECT_EQ((*reader)->position().value, 3u);
  EXPECT_EQ((*log)->DurableEnd(0).value, 3u);
  EXPECT_FALSE((*log)->WaitForData(0, model::LogOffset{3}, 1'000'000));
  EXPECT_EQ(*(*reader)->Next(100, &out), 0u);

  gate.Open();
  EXPECT_TRUE((*log)->WaitForData(0, model::LogOffset{3}, 10'000'000'000));
  ASSERT_TRUE((*log)->Flush().ok());
  ASSERT_EQ(*(*reader)->Next(100, &out), 2u);
  EXPECT_EQ(out[4].payload, "e");
  EXPECT_EQ(out[4].offset.value, 4u);
}

TEST(LogTest, ReaderFollowsTheActiveSegmentAcrossRolls) {
  TempDir tmp;
  auto log = Log::Open(SmallOptions(tmp.path(), 1), nullptr);
  ASSERT_TRUE(log.ok());
  auto reader = (*log)->NewReader(0, model::LogOffset{0});
  ASSERT_TRUE(reader.ok());
  std::vector<LogRecord> out;
  for (uint64_t i = 0; i < 100; ++i) {
    AppendSync(log->get(), 0, {Payload(0, i)});
    ASSERT_EQ(*(*reader)->Next(10, &out), 1u);
    ASSERT_EQ(out.back().payload, Payload(0, i));
    ASSERT_EQ(*(*reader)->Next(10, &out), 0u);
  }
  EXPECT_GE(SegmentFiles(tmp.path(), 0).size(), 5u);
}

TEST(LogTest, WaitForDataWakesOnAppend) {
  TempDir tmp;
  auto log = Log::Open(SmallOptions(tmp.path(), 2), nullptr);
  ASSERT_TRUE(log.ok());
  std::atomic<bool> woke{false};
  std::thread waiter([&] { woke = (*log)->WaitForData(1, model::LogOffset{0}, 30'000'000'000); });
  ASSERT_TRUE((*log)->Append(1, {"x"}, nullptr).ok());
  waiter.join();
  EXPECT_TRUE(woke.load());
  EXPECT_TRUE((*log)->WaitForData(1, model::LogOffset{0}, 0));
  EXPECT_FALSE((*log)->WaitForData(0, model::LogOffset{0}, 0));
}

TEST(LogTest, DurabilityNoneSkipsFsync) {
  TempDir tmp;
  MetricsRegistry metrics;
  LogOptions options = SmallOptions(tmp.path(), 2);
  options.fsync = false;
  auto log = Log::Open(options, &metrics);
  ASSERT_TRUE(log.ok());
  for (int i = 0; i < 50; ++i) AppendSync(log->get(), i % 2, {Payload(0, i)});
  EXPECT_EQ(metrics.GetHistogram("joule_log_fsync_latency_seconds", "", {})->Count(), 0u);
  EXPECT_EQ(metrics.GetHistogram("joule_log_append_latency_seconds", "", {})->Count(), 50u);
  EXPECT_EQ(
      metrics.GetHistogram("joule_log_commit_phase_seconds", "", {}, {{"phase", "sync"}})->Count(),
      0u);
  EXPECT_EQ(ReadAll(log->get(), 0).size(), 25u);
}

TEST(LogTest, AppendBatchStoresTheSameRecordsAsAppend) {
  TempDir tmp;
  auto log = Log::Open(SmallOptions(tmp.path()), nullptr);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  // Across segment rolls (2 KiB segments), with an empty record in the middle.
  std::vector<std::string> records;
  for (uint64_t i = 0; i < 40; ++i) records.push_back(i == 7 ? std::string() : Payload(0, i));
  RecordBatch batch;
  for (const std::string& r : records) batch.Add(r);
  ASSERT_EQ(batch.size(), records.size());
  EXPECT_EQ(batch[7], "");
  EXPECT_EQ(batch[8], records[8]);
  EXPECT_EQ(AppendSync(log->get(), 0, records).value, 0u);
  std::promise<model::LogOffset> done;
  ASSERT_TRUE((*log)
                  ->AppendBatch(1, std::move(batch),
                                [&](Status s, model::LogOffset first) {
                                  EXPECT_TRUE(s.ok()) << s.ToString();
                                  done.set_value(first);
                                })
                  .ok());
  EXPECT_EQ(done.get_future().get().value, 0u);
  const std::vector<LogRecord> a = ReadAll(log->get(), 0), b = ReadAll(log->get(), 1);
  ASSERT_EQ(a.size(), records.size());
  ASSERT_EQ(b.size(), records.size());
  for (size_t i = 0; i < records.size(); ++i) {
    EXPECT_EQ(b[i].offset.value, i);
    EXPECT_EQ(b[i].payload, records[i]);
    EXPECT_EQ(b[i].payload, a[i].payload);
  }
  EXPECT_EQ(SegmentFiles(tmp.path(), 0).size(), SegmentFiles(tmp.path(), 1).size());

  EXPECT_EQ((*log)->AppendBatch(0, RecordBatch(), nullptr).code(), StatusCode::kInvalidArgument);
  RecordBatch too_big;
  too_big.Add("ok");
  too_big.Add(std::string(kMaxPayloadBytes + 1, 'x'));
  EXPECT_EQ((*log)->AppendBatch(0, std::move(too_big), nullptr).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ((*log)->DurableEnd(0).value, records.size());
}

TEST(LogTest, RejectsBadArguments) {
  TempDir tmp;
  auto log = Log::Open(SmallOptions(tmp.path(), 2), nullptr);
  ASSERT_TRUE(log.ok());
  EXPECT_EQ((*log)->Append(2, {"x"}, nullptr).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*log)->Append(0, {}, nullptr).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*log)->Append(0, {std::string(kMaxPayloadBytes + 1, 'x')}, nullptr).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ((*log)->NewReader(0, model::LogOffset{1}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ((*log)->NewReader(5, model::LogOffset{0}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_TRUE((*log)->NewReader(0, model::LogOffset{0}).ok());
  LogOptions bad;
  EXPECT_EQ(Log::Open(bad, nullptr).status().code(), StatusCode::kInvalidArgument);
  bad.dir = tmp.path();
  bad.partitions = 0;
  EXPECT_EQ(Log::Open(bad, nullptr).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace joule::log

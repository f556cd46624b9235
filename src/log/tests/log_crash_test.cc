// Crash test: a child process appends with fsync and reports each acknowledged batch on a
// pipe; the parent SIGKILLs it mid-stream, reopens the log and checks that every
// acknowledged record is present and intact (the oracle is the set of acks).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "log/log.h"
#include "log/tests/log_test_util.h"

namespace joule::log {
namespace {

using testing::Payload;
using testing::ReadAll;
using testing::TempDir;

constexpr uint32_t kPartitions = 4;

struct Ack {
  uint32_t partition;
  uint64_t first;
  uint64_t count;
};

LogOptions CrashOptions(const std::string& dir) {
  LogOptions o;
  o.dir = dir;
  o.partitions = kPartitions;
  o.segment_bytes = 16 * 1024;  // roll often, so crashes land around rolls too
  o.max_pending_bytes = 256 * 1024;
  return o;
}

// Runs in the child: append forever, one thread per partition, acks go to `fd`.
[[noreturn]] void ChildMain(const std::string& dir, int fd) {
  auto log = Log::Open(CrashOptions(dir), nullptr);
  if (!log.ok()) _exit(2);
  std::vector<std::thread> threads;
  for (uint32_t p = 0; p < kPartitions; ++p) {
    threads.emplace_back([&, p] {
      uint64_t next = (*log)->DurableEnd(p).value;  // one appender: offsets are predictable
      for (uint64_t batch = 0;; ++batch) {
        uint64_t n = 1 + batch % 17;
        std::vector<std::string> records;
        for (uint64_t k = 0; k < n; ++k) records.push_back(Payload(p, next + k, 100));
        Status st = (*log)->Append(p, records, [fd, p, n](Status s, model::LogOffset first) {
          if (!s.ok()) _exit(3);
          Ack ack{p, first.value, n};
          // Small pipe writes are atomic; the parent sees whole acks.
          if (::write(fd, &ack, sizeof(ack)) != sizeof(ack)) _exit(4);
        });
        if (st.code() == StatusCode::kUnavailable) {
          std::this_thread::yield();
          --batch;
          continue;
        }
        if (!st.ok()) _exit(5);
        next += n;
      }
    });
  }
  for (auto& t : threads) t.join();
  _exit(0);
}

void RunCrashRound(const std::string& dir, size_t kill_after_acks,
                   std::vector<uint64_t>* acked_end) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(fds[0]);
    ChildMain(dir, fds[1]);
  }
  ::close(fds[1]);
  std::vector<Ack> acks;
  Ack ack;
  bool killed = false;
  for (;;) {
    ssize_t r = ::read(fds[0], &ack, sizeof(ack));
    if (r == 0) break;  // the child is gone and the pipe is drained
    ASSERT_EQ(r, static_cast<ssize_t>(sizeof(ack)));
    acks.push_back(ack);
    if (!killed && acks.size() >= kill_after_acks) {
      ASSERT_EQ(::kill(pid, SIGKILL), 0);
      killed = true;
    }
  }
  ::close(fds[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status)) << "child exited with " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
  for (const Ack& a : acks) {
    ASSERT_LT(a.partition, kPartitions);
    (*acked_end)[a.partition] = std::max((*acked_end)[a.partition], a.first + a.count);
  }
}

TEST(LogCrashTest, AcknowledgedRecordsSurviveSigkill) {
  TempDir tmp;
  std::vector<uint64_t> acked_end(kPartitions, 0);
  // Several rounds: each reopens a log that was killed mid-write, recovers and appends on.
  for (size_t round = 0; round < 3; ++round) {
    RunCrashRound(tmp.path(), 300 + 200 * round, &acked_end);
    if (::testing::Test::HasFatalFailure()) return;
    auto log = Log::Open(CrashOptions(tmp.path()), nullptr);
    ASSERT_TRUE(log.ok()) << log.status().ToString();
    for (uint32_t p = 0; p < kPartitions; ++p) {
      EXPECT_GE((*log)->DurableEnd(p).value, acked_end[p]) << "partition " << p;
      auto records = ReadAll(log->get(), p, 0, 500);
      ASSERT_EQ(records.size(), (*log)->DurableEnd(p).value);
      for (uint64_t i = 0; i < records.size(); ++i) {
        ASSERT_EQ(records[i].offset.value, i);
        ASSERT_EQ(records[i].payload, Payload(p, i, 100)) << "partition " << p << " offset " << i;
      }
      // Recovery is what the acks promise and no more than was written.
      acked_end[p] = (*log)->DurableEnd(p).value;
    }
  }
  uint64_t total = 0;
  for (uint64_t e : acked_end) total += e;
  EXPECT_GT(total, 1000u);
}

}  // namespace
}  // namespace joule::log

#include "app/data_dir_lock.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace joule::app {
namespace {

class DataDirLockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/joule-lock-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    ::chmod(dir_.c_str(), 0700);
    std::filesystem::remove_all(dir_);
  }
  std::string dir_;
};

TEST_F(DataDirLockTest, ASecondHolderIsToldTheDirIsInUse) {
  Result<DataDirLock> first = DataDirLock::Acquire(dir_);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  // flock excludes another open file description, also in the same process.
  Result<DataDirLock> second = DataDirLock::Acquire(dir_);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(DataDirLockFailure(second.status()), "data dir in use");
  EXPECT_NE(second.status().message().find("in use by another joule process"), std::string::npos)
      << second.status().message();
}

// Found by a black-box test: a second export on a stopped data dir took the first export
// for a running server (and left the log tail out, exit 0); replay tried to ask a server
// that was not there. The lock file names its holder's command, and an offline command
// waits for another one.
TEST_F(DataDirLockTest, AnOfflineHolderIsNamedAndWaitedFor) {
  std::optional<DataDirLock> first;
  {
    Result<DataDirLock> locked = DataDirLock::Acquire(dir_, "export");
    ASSERT_TRUE(locked.ok()) << locked.status().ToString();
    first.emplace(std::move(*locked));
  }
  const DataDirLockHolder holder = ReadDataDirLockHolder(dir_);
  EXPECT_EQ(holder.pid, std::to_string(::getpid()));
  EXPECT_EQ(holder.command, "export");
  Result<DataDirLock> at_once = DataDirLock::Acquire(dir_, "replay");
  ASSERT_FALSE(at_once.ok());
  EXPECT_NE(at_once.status().message().find("(pid " + holder.pid + ", `joule export`)"),
            std::string::npos)
      << at_once.status().message();
  EXPECT_EQ(at_once.status().message().find("joule serve"), std::string::npos)
      << at_once.status().message();

  std::thread release([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    first.reset();
  });
  std::vector<std::string> messages;
  Result<DataDirLock> waited =
      DataDirLock::AcquireWaiting(dir_, "replay", std::chrono::seconds(30),
                                  [&](const std::string& m) { messages.push_back(m); });
  release.join();
  ASSERT_TRUE(waited.ok()) << waited.status().ToString();
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_NE(messages[0].find("waiting for joule process pid " + holder.pid + " (export)"),
            std::string::npos)
      << messages[0];
  EXPECT_EQ(ReadDataDirLockHolder(dir_).command, "replay");
}

TEST_F(DataDirLockTest, AServerIsNotWaitedForAndAWaitEnds) {
  {
    Result<DataDirLock> server = DataDirLock::Acquire(dir_, "serve");
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    int calls = 0;
    Result<DataDirLock> second = DataDirLock::AcquireWaiting(
        dir_, "export", std::chrono::seconds(30), [&](const std::string&) { ++calls; });
    ASSERT_FALSE(second.ok());
    EXPECT_EQ(second.status().code(), StatusCode::kUnavailable);
    EXPECT_NE(second.status().message().find("a running `joule serve`?"), std::string::npos)
        << second.status().message();
    EXPECT_EQ(calls, 0);
  }
  Result<DataDirLock> replay = DataDirLock::Acquire(dir_, "replay");
  ASSERT_TRUE(replay.ok()) << replay.status().ToString();
  Result<DataDirLock> timed_out = DataDirLock::AcquireWaiting(
      dir_, "export", std::chrono::milliseconds(300), [](const std::string&) {});
  ASSERT_FALSE(timed_out.ok());
  EXPECT_EQ(timed_out.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(timed_out.status().message().find("still held by joule process (pid"),
            std::string::npos)
      << timed_out.status().message();
}

// Found by a black-box test: a read-only data dir was logged as "data dir in use". As root
// a mode of 0555 does not stop the open (and EROFS needs a read-only mount), so the mode
// part runs only for other users; the message function is tested either way.
TEST_F(DataDirLockTest, AnUnwritableDirIsNotCalledInUse) {
  EXPECT_EQ(DataDirLockFailure(Status::PermissionDenied("cannot open x/joule.lock: Read-only file "
                                                        "system")),
            "data dir not writable");
  EXPECT_EQ(DataDirLockFailure(Status::IoError("cannot lock x/joule.lock: No locks available")),
            "cannot lock data dir");
  if (::geteuid() == 0) GTEST_SKIP() << "root opens files in a 0555 dir";
  ASSERT_EQ(::chmod(dir_.c_str(), 0555), 0);
  Result<DataDirLock> locked = DataDirLock::Acquire(dir_);
  ASSERT_FALSE(locked.ok());
  EXPECT_EQ(locked.status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(DataDirLockFailure(locked.status()), "data dir not writable");
  EXPECT_NE(locked.status().message().find("joule.lock"), std::string::npos);
  EXPECT_NE(locked.status().message().find("Permission denied"), std::string::npos)
      << locked.status().message();
}

}  // namespace
}  // namespace joule::app

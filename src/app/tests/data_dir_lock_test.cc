#include "app/data_dir_lock.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>

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

#include "common/thread_priority.h"

#include <gtest/gtest.h>
#include <pthread.h>

#include <string>
#include <thread>

namespace joule {
namespace {

TEST(ThreadPriority, SetsOnlyTheCallingThread) {
  const int before = ThreadNice();
  int inside = -100;
  int err = -1;
  std::thread t([&] {
    err = SetThreadNice(before + 3 > 19 ? 19 : before + 3);
    inside = ThreadNice();
  });
  t.join();
  EXPECT_EQ(err, 0);
  EXPECT_EQ(inside, before + 3 > 19 ? 19 : before + 3);
  EXPECT_EQ(ThreadNice(), before);  // this thread is unchanged
}

TEST(ThreadPriority, SetUpThreadRaisesByTheIncrementUpTo19) {
  const int before = ThreadNice();
  int after_two = -100, after_many = -100;
  std::thread t([&] {
    SetUpThread("joule-test", 2);
    after_two = ThreadNice();
    SetUpThread("joule-test", 40);
    after_many = ThreadNice();
  });
  t.join();
  EXPECT_EQ(after_two, before + 2 > 19 ? 19 : before + 2);
  EXPECT_EQ(after_many, 19);
}

std::string ThreadName() {
  char name[32] = {};
  pthread_getname_np(pthread_self(), name, sizeof name);
  return name;
}

TEST(ThreadPriority, SetUpThreadNamesTheThreadAndCutsALongName) {
  std::string short_name, long_name;
  std::thread t([&] {
    SetUpThread("joule-log-write", 0);  // 15 bytes: what Linux keeps
    short_name = ThreadName();
    SetUpThread("joule-a-name-of-24-bytes", 0);
    long_name = ThreadName();
  });
  t.join();
  EXPECT_EQ(short_name, "joule-log-write");
  EXPECT_EQ(long_name, "joule-a-name-of");  // cut, not refused (the old name stayed)
}

}  // namespace
}  // namespace joule

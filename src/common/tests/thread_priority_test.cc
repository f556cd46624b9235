#include "common/thread_priority.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace joule

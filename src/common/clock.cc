#include "common/clock.h"

#include <time.h>

#include <chrono>

namespace joule {

int64_t SystemClock::NowNanos() const {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

SystemClock* SystemClock::Default() {
  static SystemClock clock;
  return &clock;
}

int64_t MonotonicClock::NowNanos() const {
  timespec ts{};
  ::clock_gettime(CLOCK_BOOTTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

MonotonicClock* MonotonicClock::Default() {
  static MonotonicClock clock;
  return &clock;
}

}  // namespace joule

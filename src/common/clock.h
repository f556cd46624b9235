// Clock: every read of wall time in Joule goes through one, so tests control time.
// Times are nanoseconds since the Unix epoch (UTC). Thread-safe.
#pragma once

#include <atomic>
#include <cstdint>

namespace joule {

class Clock {
 public:
  virtual ~Clock() = default;
  // Wall-clock time, nanoseconds since the Unix epoch.
  virtual int64_t NowNanos() const = 0;
};

class SystemClock final : public Clock {
 public:
  int64_t NowNanos() const override;
  static SystemClock* Default();
};

// CLOCK_BOOTTIME: never steps, counts time the machine was suspended (steady_clock does
// not), any epoch. For measuring elapsed time (the archive's open file age,
// ProcessingClock's step detection: a suspended VM or laptop is time that really passed,
// not a clock step to be slewed out over ten times as long); not a time of day.
class MonotonicClock final : public Clock {
 public:
  int64_t NowNanos() const override;
  static MonotonicClock* Default();
};

// A clock that only moves when told to. For tests.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(int64_t now_nanos = 0) : now_(now_nanos) {}
  int64_t NowNanos() const override { return now_.load(std::memory_order_acquire); }
  void Set(int64_t now_nanos) { now_.store(now_nanos, std::memory_order_release); }
  void Advance(int64_t delta_nanos) { now_.fetch_add(delta_nanos, std::memory_order_acq_rel); }

 private:
  std::atomic<int64_t> now_;
};

inline constexpr int64_t kNanosPerMicro = 1000;
inline constexpr int64_t kNanosPerMilli = 1000 * 1000;
inline constexpr int64_t kNanosPerSecond = 1000 * kNanosPerMilli;
inline constexpr int64_t kNanosPerMinute = 60 * kNanosPerSecond;
inline constexpr int64_t kNanosPerHour = 60 * kNanosPerMinute;
inline constexpr int64_t kNanosPerDay = 24 * kNanosPerHour;

}  // namespace joule

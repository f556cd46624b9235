// ReadRetry: the retry schedule of a log reader whose reads fail (anything but Corruption,
// which stops the partition): e.g. EMFILE while the process is out of file descriptors.
// The read is retried after 10 ms, doubling to 1 s, and the failure is logged at most once
// per 10 s with the count since the last line (found by a black-box test: an immediate
// retry wrote ~60 MB/s of "log read failed"). Not thread-safe: one reader thread owns it.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

namespace joule::app {

class ReadRetry {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::nanoseconds kFirst = std::chrono::milliseconds(10);
  static constexpr std::chrono::nanoseconds kMax = std::chrono::seconds(1);
  static constexpr std::chrono::nanoseconds kLogInterval = std::chrono::seconds(10);

  // Whether the last read failed (a retry is scheduled).
  bool failing() const { return backoff_.count() != 0; }
  // Whether a failing read must wait still.
  bool Waiting(Clock::time_point now) const { return failing() && now < retry_at_; }
  Clock::time_point retry_at() const { return retry_at_; }
  std::chrono::nanoseconds backoff() const { return backoff_; }

  // A read failed: schedules the retry. True when it should be logged now (the first
  // failure, then every kLogInterval); `*unlogged` is the failures this line stands for.
  bool Failed(Clock::time_point now, uint64_t* unlogged) {
    backoff_ = failing() ? std::min(2 * backoff_, kMax) : kFirst;
    retry_at_ = now + backoff_;
    ++failures_;
    ++unlogged_;
    if (failures_ != 1 && now - logged_at_ < kLogInterval) return false;
    logged_at_ = now;
    *unlogged = unlogged_;
    unlogged_ = 0;
    return true;
  }

  // For a reader loop that found nothing to read: sleeps until the earliest retry of
  // `retries` is due, at most `max_wait` (waiting for new data would return at once: the
  // data whose read failed is there). False, at once, when none is failing.
  static bool SleepUntilFirstRetry(const std::vector<ReadRetry>& retries,
                                   std::chrono::nanoseconds max_wait) {
    auto first = Clock::time_point::max();
    for (const ReadRetry& r : retries) {
      if (r.failing()) first = std::min(first, r.retry_at_);
    }
    if (first == Clock::time_point::max()) return false;
    const auto now = Clock::now();
    if (first > now) std::this_thread::sleep_for(std::min<Clock::duration>(first - now, max_wait));
    return true;
  }

  // A read succeeded. Returns the failures before it (0: it was not failing).
  uint64_t Succeeded() {
    const uint64_t failures = failures_;
    *this = ReadRetry();
    return failures;
  }

 private:
  std::chrono::nanoseconds backoff_{0};
  Clock::time_point retry_at_;
  Clock::time_point logged_at_;
  uint64_t failures_ = 0;  // since the last success
  uint64_t unlogged_ = 0;  // since the last log line
};

}  // namespace joule::app

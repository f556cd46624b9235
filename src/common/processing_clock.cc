#include "common/processing_clock.h"

#include <algorithm>
#include <cmath>

namespace joule {

ProcessingClock::ProcessingClock(const Clock* wall, const Clock* monotonic, Options options)
    : wall_(wall), monotonic_(monotonic), options_(options) {}

int64_t ProcessingClock::NowNanos() const {
  std::lock_guard lock(mu_);
  const int64_t wall = wall_->NowNanos();
  const int64_t monotonic = monotonic_->NowNanos();
  if (!started_) {
    started_ = true;
    last_wall_ = wall;
    last_monotonic_ = monotonic;
    last_ = wall;
    return wall;
  }
  const int64_t elapsed = std::max<int64_t>(monotonic - last_monotonic_, 0);
  const int64_t step = (wall - last_wall_) - elapsed;
  if (step > options_.step_tolerance_ns || step < -options_.step_tolerance_ns) offset_ -= step;
  // Slew the offset back toward 0 by at most slew_rate of the time elapsed.
  if (offset_ != 0) {
    const auto max_correction =
        static_cast<int64_t>(std::llround(static_cast<double>(elapsed) * options_.slew_rate));
    offset_ = offset_ > 0 ? std::max<int64_t>(offset_ - max_correction, 0)
                          : std::min<int64_t>(offset_ + max_correction, 0);
  }
  last_wall_ = wall;
  last_monotonic_ = monotonic;
  // Never backwards (a step back within the tolerance, rounding).
  last_ = std::max(last_, wall + offset_);
  return last_;
}

int64_t ProcessingClock::offset_ns() const {
  std::lock_guard lock(mu_);
  return last_ - last_wall_;
}

ProcessingClock* ProcessingClock::Default() {
  static ProcessingClock clock(SystemClock::Default(), MonotonicClock::Default());
  return &clock;
}

}  // namespace joule

// ProcessingClock: the server's processing time — the wall clock, made step-proof.
//
// Processing time drives every deadline that waits for time to pass (early firings, idle
// finalization, absence alerts, checkpoint and tick intervals, history retention's horizon).
// Taken from the raw wall clock, a step of the wall clock (NTP correcting a clock that was
// off, an operator setting the date) moved all of those at once: a step back of D stalled
// them for D, a step forward made every device look silent (docs/CONTRACT.md §2).
//
// Each read compares the wall clock's progress since the previous read with a monotonic
// clock's (steady_clock). A difference of more than `step_tolerance_ns` is a step: it is
// absorbed into an offset, so processing time advances by the monotonic progress only. The
// offset is then slewed back to 0 at `slew_rate` of the elapsed time (processing time runs
// at 0.9x or 1.1x for a while at the default 10 %), so processing time converges to the
// wall clock again: after a step of D it equals the wall clock D / slew_rate later.
// Differences within the tolerance (NTP's own slewing, at most 500 ppm) are followed as
// they are. Processing time never goes backwards and never jumps.
//
// A fresh ProcessingClock starts at the wall clock (offset 0): what the clock did before a
// restart is not known (restored processing-time stamps are clamped instead:
// WindowEngine::RestoreState).
//
// Thread-safe; a read is two clock reads under an uncontended mutex (read per batch or tick,
// not per event).
#pragma once

#include <cstdint>
#include <mutex>

#include "common/clock.h"

namespace joule {

class ProcessingClock final : public Clock {
 public:
  struct Options {
    int64_t step_tolerance_ns = kNanosPerSecond;  // a larger disagreement is a step
    double slew_rate = 0.1;                       // offset corrected per elapsed time, in (0, 1)
  };

  // `wall` (times since the Unix epoch) and `monotonic` (any epoch, never goes back) must
  // outlive this clock.
  ProcessingClock(const Clock* wall, const Clock* monotonic, Options options);
  ProcessingClock(const Clock* wall, const Clock* monotonic)
      : ProcessingClock(wall, monotonic, Options()) {}

  int64_t NowNanos() const override;

  // Processing time minus the wall clock at the last read (0 when no step is being slewed).
  int64_t offset_ns() const;

  // The server's: SystemClock::Default() made step-proof with MonotonicClock::Default().
  static ProcessingClock* Default();

 private:
  const Clock* const wall_;
  const Clock* const monotonic_;
  const Options options_;
  mutable std::mutex mu_;
  mutable bool started_ = false;
  mutable int64_t last_wall_ = 0;
  mutable int64_t last_monotonic_ = 0;
  mutable int64_t offset_ = 0;
  mutable int64_t last_ = 0;  // the last time returned
};

}  // namespace joule

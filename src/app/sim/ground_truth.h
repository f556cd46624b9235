// Ground truth for `joule simulate --ground-truth FILE`: the records CONTRACT §2 says a
// deterministic run must produce, computed by a deliberately simple implementation that
// shares no code with src/stream (the engine under test).
//
// How it differs from the engine on purpose: it keeps every sample, sorts and de-duplicates
// once at the end, and computes each resolution (1m, 1h, local 1d) directly from the samples
// with that resolution's own window boundaries — no rollups, no watermarks, no incremental
// state. Linearity of the trapezoid makes the results equal to the engine's rollups up to
// float rounding. Times are integer milliseconds (the simulator sends millisecond stamps).
//
// Rules (CONTRACT §2, as read by src/stream/README.md):
// - identity: (device, event_id) if present, else (device, timestamp); the first copy wins.
// - every metric: count/min/max/sum/first/last (by time) over samples in the window; avg.
// - power (`*_w`): trapezoid between consecutive samples with 0 < dt ≤ max_gap, split at
//   window boundaries with linear interpolation; coverage = covered s / window length;
//   twa = energy × 3600 / covered s (when covered > 0).
// - counter (`*_wh`, `*_total`): from a baseline b (the first sample): v ≥ b → v − b, b = v;
//   0.9·b ≤ v < b → 0, b stays; v < 0.9·b → reset, increment max(v, 0), b = v, resets += 1 in
//   the window of that sample. The increment is spread over (previous sample, this sample]
//   like energy, or put wholly in this sample's window when dt > max_gap.
// - a window with no sample but a counted interval share gets a record with count 0.
// - 1d windows are local calendar days of the device's IANA zone (a midnight that does not
//   exist starts the day at the end of the gap; an ambiguous one at its first occurrence).
// Not thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace joule::app::sim {

// CONTRACT §2: a counter reading below its baseline (the last accepted reading) but at
// least this fraction of it is noise; further below, a reset. The ground truth and the
// simulator's summary (its `counter resets`) count by it.
inline constexpr double kCounterNoiseFloor = 0.9;

struct MetricTruth {
  int64_t count = 0;
  double min = 0, max = 0, sum = 0, first = 0, last = 0;
  int64_t first_t_ms = 0, last_t_ms = 0;
  // power
  bool is_power = false;
  double energy_wh = 0;
  int64_t covered_ms = 0;
  // counter
  bool is_counter = false;
  double delta = 0;
  int64_t resets = 0;
};

struct RecordTruth {
  std::string device_id;
  std::string resolution;  // "1m", "1h", "1d"
  int64_t window_start_ms = 0;
  int64_t window_end_ms = 0;
  int64_t count = 0;
  std::map<std::string, MetricTruth> metrics;
  std::string local_date;  // 1d only
  std::string timezone;    // 1d only
};

class GroundTruth {
 public:
  explicit GroundTruth(int64_t max_gap_ms = 300'000) : max_gap_ms_(max_gap_ms) {}

  // The device's zone for 1d windows (default "UTC").
  void SetTimezone(const std::string& device_id, const std::string& timezone);
  // One accepted event. event_id may be empty (then the timestamp is the identity).
  void Add(const std::string& device_id, const std::string& event_id, int64_t t_ms,
           const std::vector<std::pair<std::string, double>>& metrics);

  size_t event_count() const { return events_; }
  size_t duplicate_count() const { return duplicates_; }

  // Every record of every device at "1m", "1h" or "1d", ordered by device and window start.
  std::vector<RecordTruth> Compute(const std::string& resolution) const;

  // JSON lines, one record each, in the API's record shape (without final/version).
  void WriteJsonLines(std::ostream& out) const;
  static std::string RecordToJson(const RecordTruth& record);

 private:
  struct Sample {
    int64_t t_ms;
    size_t order;  // arrival order, for stable ties
    std::vector<std::pair<std::string, double>> metrics;
  };
  struct DeviceData {
    std::string timezone = "UTC";
    std::vector<Sample> samples;
    std::unordered_map<std::string, bool> seen_ids;
    std::unordered_map<int64_t, bool> seen_times;
  };
  int64_t max_gap_ms_;
  std::map<std::string, DeviceData> devices_;
  size_t events_ = 0;
  size_t duplicates_ = 0;
};

// The window [start, end) of `resolution` containing t_ms; 1d uses `timezone`.
// Exposed for tests. Returns nullopt for an unknown resolution or zone.
std::optional<std::pair<int64_t, int64_t>> WindowContaining(const std::string& resolution,
                                                            const std::string& timezone,
                                                            int64_t t_ms,
                                                            std::string* local_date = nullptr);

}  // namespace joule::app::sim

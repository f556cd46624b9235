// AggregateRecord: the output of the window engine for one (device, resolution,
// window) — CONTRACT §2. Versioned: sinks keep the highest version per key.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace joule::model {

enum class MetricKind : uint8_t { kGauge = 0, kPower = 1, kCounter = 2 };

// Default kind by name: "_w" → power; "_wh" or "_total" → counter; else gauge.
MetricKind DefaultMetricKind(std::string_view name);
std::string_view MetricKindName(MetricKind kind);

enum class Resolution : uint8_t {
  kBase = 0,  // stream.window (default 1m), aligned to the epoch
  kHour = 1,  // 1h, aligned to the epoch (UTC)
  kDay = 2,   // the device's local calendar day
};

struct MetricAggregate {
  std::string name;
  MetricKind kind = MetricKind::kGauge;
  // Over the samples whose event time lies in the window. Valid only when count > 0.
  uint64_t count = 0;
  double min = 0, max = 0, sum = 0, first = 0, last = 0;
  // Power metrics: energy from the gap-aware trapezoid, and the nanoseconds of the window
  // covered by counted intervals. coverage = covered_ns / window length,
  // twa = energy_wh * 3600 / covered seconds.
  double energy_wh = 0;
  int64_t covered_ns = 0;
  // Counter metrics: sum of increments spread into this window; number of resets.
  double delta = 0;
  uint64_t resets = 0;

  bool operator==(const MetricAggregate&) const = default;
};

struct AggregateRecord {
  std::string device_id;
  Resolution resolution = Resolution::kBase;
  int64_t window_start_ns = 0;
  int64_t window_end_ns = 0;
  bool final = false;
  uint64_t version = 1;
  uint64_t count = 0;                    // events in the window
  std::vector<MetricAggregate> metrics;  // sorted by name
  std::string timezone;                  // kDay only
  std::string local_date;                // kDay only, "YYYY-MM-DD"

  const MetricAggregate* FindMetric(std::string_view name) const;
  bool operator==(const AggregateRecord&) const = default;
};

// "1m", "1h", "1d", or the base window's width like "30s".
std::string ResolutionName(const AggregateRecord& record);

// CONTRACT §2 JSON. `only_metrics`, when non-empty, limits the "metrics" object, and the
// flat avg_power_w, max_power_w, sum_energy_wh, coverage fields (they describe power_w)
// are written only when it names power_w.
std::string RecordToJson(const AggregateRecord& record,
                         const std::vector<std::string>& only_metrics = {});
// The same JSON, appended to `out` (no allocation beyond growing `out`).
void AppendRecordJson(const AggregateRecord& record, std::string* out,
                      const std::vector<std::string>& only_metrics = {});

}  // namespace joule::model

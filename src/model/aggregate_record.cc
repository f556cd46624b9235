#include "model/aggregate_record.h"

#include <fmt/format.h>

#include <algorithm>

#include "common/clock.h"
#include "common/json_writer.h"
#include "common/time_format.h"

namespace joule::model {

MetricKind DefaultMetricKind(std::string_view name) {
  auto ends_with = [&](std::string_view suffix) {
    return name.size() >= suffix.size() && name.substr(name.size() - suffix.size()) == suffix;
  };
  if (ends_with("_wh") || ends_with("_total")) return MetricKind::kCounter;
  if (ends_with("_w")) return MetricKind::kPower;
  return MetricKind::kGauge;
}

std::string_view MetricKindName(MetricKind kind) {
  switch (kind) {
    case MetricKind::kGauge:
      return "gauge";
    case MetricKind::kPower:
      return "power";
    case MetricKind::kCounter:
      return "counter";
  }
  return "gauge";
}

const MetricAggregate* AggregateRecord::FindMetric(std::string_view name) const {
  for (const auto& m : metrics) {
    if (m.name == name) return &m;
  }
  return nullptr;
}

std::string ResolutionName(const AggregateRecord& r) {
  switch (r.resolution) {
    case Resolution::kHour:
      return "1h";
    case Resolution::kDay:
      return "1d";
    case Resolution::kBase:
      break;
  }
  int64_t w = r.window_end_ns - r.window_start_ns;
  if (w % kNanosPerDay == 0) return fmt::format("{}d", w / kNanosPerDay);
  if (w % kNanosPerHour == 0) return fmt::format("{}h", w / kNanosPerHour);
  if (w % kNanosPerMinute == 0) return fmt::format("{}m", w / kNanosPerMinute);
  if (w % kNanosPerSecond == 0) return fmt::format("{}s", w / kNanosPerSecond);
  return fmt::format("{}ms", w / kNanosPerMilli);
}

namespace {

void WriteMetric(JsonWriter& w, const MetricAggregate& m, int64_t window_ns) {
  w.BeginObject();
  w.Key("count");
  w.Uint(m.count);
  if (m.count > 0) {
    w.Key("min");
    w.Double(m.min);
    w.Key("max");
    w.Double(m.max);
    w.Key("avg");
    w.Double(m.sum / static_cast<double>(m.count));
    w.Key("first");
    w.Double(m.first);
    w.Key("last");
    w.Double(m.last);
    w.Key("sum");
    w.Double(m.sum);
  }
  if (m.kind == MetricKind::kPower) {
    if (m.covered_ns > 0) {
      w.Key("twa");
      w.Double(m.energy_wh * 3600.0 / (static_cast<double>(m.covered_ns) / 1e9));
    }
    w.Key("energy_wh");
    w.Double(m.energy_wh);
    w.Key("coverage");
    w.Double(window_ns > 0 ? static_cast<double>(m.covered_ns) / static_cast<double>(window_ns)
                           : 0.0);
  } else if (m.kind == MetricKind::kCounter) {
    w.Key("delta");
    w.Double(m.delta);
    w.Key("resets");
    w.Uint(m.resets);
  }
  w.EndObject();
}

}  // namespace

std::string RecordToJson(const AggregateRecord& r, const std::vector<std::string>& only_metrics) {
  const int64_t window_ns = r.window_end_ns - r.window_start_ns;
  JsonWriter w;
  w.BeginObject();
  w.Key("device_id");
  w.String(r.device_id);
  w.Key("resolution");
  w.String(ResolutionName(r));
  w.Key("window_start");
  w.String(FormatRfc3339Millis(r.window_start_ns));
  w.Key("window_end");
  w.String(FormatRfc3339Millis(r.window_end_ns));
  if (r.resolution == Resolution::kDay) {
    w.Key("local_date");
    w.String(r.local_date);
    w.Key("timezone");
    w.String(r.timezone);
  }
  w.Key("final");
  w.Bool(r.final);
  w.Key("version");
  w.Uint(r.version);
  w.Key("count");
  w.Uint(r.count);
  if (const MetricAggregate* p = r.FindMetric("power_w")) {
    if (p->count > 0) {
      w.Key("avg_power_w");
      w.Double(p->sum / static_cast<double>(p->count));
      w.Key("max_power_w");
      w.Double(p->max);
    }
    if (p->kind == MetricKind::kPower) {
      w.Key("sum_energy_wh");
      w.Double(p->energy_wh);
      w.Key("coverage");
      w.Double(window_ns > 0 ? static_cast<double>(p->covered_ns) / static_cast<double>(window_ns)
                             : 0.0);
    }
  }
  w.Key("metrics");
  w.BeginObject();
  for (const auto& m : r.metrics) {
    if (!only_metrics.empty() &&
        std::find(only_metrics.begin(), only_metrics.end(), m.name) == only_metrics.end()) {
      continue;
    }
    w.Key(m.name);
    WriteMetric(w, m, window_ns);
  }
  w.EndObject();
  w.EndObject();
  return w.Take();
}

}  // namespace joule::model

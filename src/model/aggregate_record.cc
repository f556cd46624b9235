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

// The encoder below appends straight into the caller's buffer: literal keys, compiled
// number formatting (JsonWriter::Append*), no per-field allocation. It is the hot path of
// the history API (1,440 records for a day of 1m windows).
void Lit(std::string* out, std::string_view text) { out->append(text.data(), text.size()); }

void AppendResolutionName(const AggregateRecord& r, std::string* out) {
  switch (r.resolution) {
    case Resolution::kHour:
      return Lit(out, "\"1h\"");
    case Resolution::kDay:
      return Lit(out, "\"1d\"");
    case Resolution::kBase:
      break;
  }
  if (r.window_end_ns - r.window_start_ns == kNanosPerMinute) return Lit(out, "\"1m\"");
  JsonWriter::AppendEscaped(out, ResolutionName(r));
}

void AppendTime(std::string* out, int64_t nanos) {
  out->push_back('"');
  AppendRfc3339Millis(out, nanos);
  out->push_back('"');
}

double Coverage(const MetricAggregate& m, int64_t window_ns) {
  return window_ns > 0 ? static_cast<double>(m.covered_ns) / static_cast<double>(window_ns) : 0.0;
}

void AppendMetric(const MetricAggregate& m, int64_t window_ns, std::string* out) {
  Lit(out, "{\"count\":");
  JsonWriter::AppendUint(out, m.count);
  if (m.count > 0) {
    Lit(out, ",\"min\":");
    JsonWriter::AppendDouble(out, m.min);
    Lit(out, ",\"max\":");
    JsonWriter::AppendDouble(out, m.max);
    Lit(out, ",\"avg\":");
    JsonWriter::AppendDouble(out, m.sum / static_cast<double>(m.count));
    Lit(out, ",\"first\":");
    JsonWriter::AppendDouble(out, m.first);
    Lit(out, ",\"last\":");
    JsonWriter::AppendDouble(out, m.last);
    Lit(out, ",\"sum\":");
    JsonWriter::AppendDouble(out, m.sum);
  }
  if (m.kind == MetricKind::kPower) {
    if (m.covered_ns > 0) {
      Lit(out, ",\"twa\":");
      JsonWriter::AppendDouble(out,
                               m.energy_wh * 3600.0 / (static_cast<double>(m.covered_ns) / 1e9));
    }
    Lit(out, ",\"energy_wh\":");
    JsonWriter::AppendDouble(out, m.energy_wh);
    Lit(out, ",\"coverage\":");
    JsonWriter::AppendDouble(out, Coverage(m, window_ns));
  } else if (m.kind == MetricKind::kCounter) {
    Lit(out, ",\"delta\":");
    JsonWriter::AppendDouble(out, m.delta);
    Lit(out, ",\"resets\":");
    JsonWriter::AppendUint(out, m.resets);
  }
  out->push_back('}');
}

}  // namespace

void AppendRecordJson(const AggregateRecord& r, std::string* out,
                      const std::vector<std::string>& only_metrics) {
  const int64_t window_ns = r.window_end_ns - r.window_start_ns;
  out->reserve(out->size() + 320 + 200 * r.metrics.size());
  Lit(out, "{\"device_id\":");
  JsonWriter::AppendEscaped(out, r.device_id);
  Lit(out, ",\"resolution\":");
  AppendResolutionName(r, out);
  Lit(out, ",\"window_start\":");
  AppendTime(out, r.window_start_ns);
  Lit(out, ",\"window_end\":");
  AppendTime(out, r.window_end_ns);
  if (r.resolution == Resolution::kDay) {
    Lit(out, ",\"local_date\":");
    JsonWriter::AppendEscaped(out, r.local_date);
    Lit(out, ",\"timezone\":");
    JsonWriter::AppendEscaped(out, r.timezone);
  }
  Lit(out, r.final ? ",\"final\":true,\"version\":" : ",\"final\":false,\"version\":");
  JsonWriter::AppendUint(out, r.version);
  Lit(out, ",\"count\":");
  JsonWriter::AppendUint(out, r.count);
  // The flat fields describe power_w (CONTRACT §2): a `metrics=` filter without it leaves
  // them out, as it leaves out power_w itself (found by a black-box test).
  const bool power_shown =
      only_metrics.empty() ||
      std::find(only_metrics.begin(), only_metrics.end(), "power_w") != only_metrics.end();
  if (const MetricAggregate* p = power_shown ? r.FindMetric("power_w") : nullptr) {
    if (p->count > 0) {
      Lit(out, ",\"avg_power_w\":");
      JsonWriter::AppendDouble(out, p->sum / static_cast<double>(p->count));
      Lit(out, ",\"max_power_w\":");
      JsonWriter::AppendDouble(out, p->max);
    }
    if (p->kind == MetricKind::kPower) {
      Lit(out, ",\"sum_energy_wh\":");
      JsonWriter::AppendDouble(out, p->energy_wh);
      Lit(out, ",\"coverage\":");
      JsonWriter::AppendDouble(out, Coverage(*p, window_ns));
    }
  }
  Lit(out, ",\"metrics\":{");
  bool first = true;
  for (const auto& m : r.metrics) {
    if (!only_metrics.empty() &&
        std::find(only_metrics.begin(), only_metrics.end(), m.name) == only_metrics.end()) {
      continue;
    }
    if (!first) out->push_back(',');
    first = false;
    JsonWriter::AppendEscaped(out, m.name);
    out->push_back(':');
    AppendMetric(m, window_ns, out);
  }
  Lit(out, "}}");
}

std::string RecordToJson(const AggregateRecord& r, const std::vector<std::string>& only_metrics) {
  std::string out;
  AppendRecordJson(r, &out, only_metrics);
  return out;
}

}  // namespace joule::model

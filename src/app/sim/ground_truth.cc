#include "app/sim/ground_truth.h"

#include <date/date.h>
#include <date/tz.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "common/json_writer.h"
#include "common/time_format.h"

namespace joule::app::sim {
namespace {

bool EndsWith(const std::string& s, const char* suffix) {
  size_t n = std::char_traits<char>::length(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}
bool IsPower(const std::string& name) { return EndsWith(name, "_w"); }
bool IsCounter(const std::string& name) {
  return EndsWith(name, "_wh") || EndsWith(name, "_total");
}

int64_t FloorDiv(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

}  // namespace

std::optional<std::pair<int64_t, int64_t>> WindowContaining(const std::string& resolution,
                                                            const std::string& timezone,
                                                            int64_t t_ms, std::string* local_date) {
  if (resolution == "1m" || resolution == "1h") {
    int64_t len = resolution == "1m" ? 60'000 : 3'600'000;
    int64_t start = FloorDiv(t_ms, len) * len;
    return std::make_pair(start, start + len);
  }
  if (resolution != "1d") return std::nullopt;
  using namespace std::chrono;
  const date::time_zone* zone;
  try {
    zone = date::locate_zone(timezone);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  auto sys = sys_time<milliseconds>(milliseconds(t_ms));
  auto local = zone->to_local(sys);
  auto day = date::floor<date::days>(local);
  auto midnight = [&](date::local_days d) {
    return zone->to_sys(d, date::choose::earliest);  // nonexistent → end of the gap
  };
  auto start = midnight(day);
  if (sys < start) {  // t lies in a gap that swallowed this day's midnight
    day -= date::days(1);
    start = midnight(day);
  }
  auto end = midnight(day + date::days(1));
  if (local_date) *local_date = date::format("%F", date::year_month_day(day));
  return std::make_pair(duration_cast<milliseconds>(start.time_since_epoch()).count(),
                        duration_cast<milliseconds>(end.time_since_epoch()).count());
}

void GroundTruth::SetTimezone(const std::string& device_id, const std::string& timezone) {
  devices_[device_id].timezone = timezone;
}

void GroundTruth::Add(const std::string& device_id, const std::string& event_id, int64_t t_ms,
                      const std::vector<std::pair<std::string, double>>& metrics) {
  DeviceData& d = devices_[device_id];
  bool fresh = event_id.empty() ? d.seen_times.emplace(t_ms, true).second
                                : d.seen_ids.emplace(event_id, true).second;
  if (!fresh) {
    ++duplicates_;
    return;
  }
  ++events_;
  d.samples.push_back({t_ms, d.samples.size(), metrics});
}

std::vector<RecordTruth> GroundTruth::Compute(const std::string& resolution) const {
  std::vector<RecordTruth> out;
  for (const auto& [device_id, data] : devices_) {
    std::vector<const Sample*> samples;
    for (const Sample& s : data.samples) samples.push_back(&s);
    std::stable_sort(samples.begin(), samples.end(),
                     [](const Sample* a, const Sample* b) { return a->t_ms < b->t_ms; });

    std::map<int64_t, RecordTruth> records;
    auto record_at = [&](int64_t t_ms) -> RecordTruth& {
      std::string local_date;
      auto w = WindowContaining(resolution, data.timezone, t_ms, &local_date);
      RecordTruth& r = records[w->first];
      if (r.device_id.empty()) {
        r.device_id = device_id;
        r.resolution = resolution;
        r.window_start_ms = w->first;
        r.window_end_ms = w->second;
        if (resolution == "1d") {
          r.local_date = local_date;
          r.timezone = data.timezone;
        }
      }
      return r;
    };
    auto metric_at = [&](int64_t t_ms, const std::string& name) -> MetricTruth& {
      MetricTruth& m = record_at(t_ms).metrics[name];
      m.is_power = IsPower(name);
      m.is_counter = !m.is_power && IsCounter(name);
      return m;
    };

    // 1. Sample statistics.
    for (const Sample* s : samples) {
      record_at(s->t_ms).count += 1;
      for (const auto& [name, v] : s->metrics) {
        MetricTruth& m = metric_at(s->t_ms, name);
        if (m.count == 0) {
          m.min = m.max = m.first = m.last = v;
          m.first_t_ms = m.last_t_ms = s->t_ms;
        }
        m.count += 1;
        m.sum += v;
        m.min = std::min(m.min, v);
        m.max = std::max(m.max, v);
        if (s->t_ms < m.first_t_ms) m.first = v, m.first_t_ms = s->t_ms;
        if (s->t_ms >= m.last_t_ms) m.last = v, m.last_t_ms = s->t_ms;
      }
    }

    // 2. Intervals, metric by metric.
    std::map<std::string, std::vector<std::pair<int64_t, double>>> series;
    for (const Sample* s : samples) {
      for (const auto& [name, v] : s->metrics) series[name].push_back({s->t_ms, v});
    }
    // Calls fn(window_start_time, a, b) for the pieces of [t1, t2] split at window ends.
    auto split = [&](int64_t t1, int64_t t2, auto fn) {
      for (int64_t a = t1; a < t2;) {
        auto w = WindowContaining(resolution, data.timezone, a);
        int64_t b = std::min(t2, w->second);
        fn(a, b);
        a = b;
      }
    };
    for (const auto& [name, points] : series) {
      if (IsPower(name)) {
        for (size_t i = 1; i < points.size(); ++i) {
          auto [t1, p1] = points[i - 1];
          auto [t2, p2] = points[i];
          int64_t dt = t2 - t1;
          if (dt <= 0 || dt > max_gap_ms_) continue;
          auto p_at = [&](int64_t t) {
            return p1 + (p2 - p1) * static_cast<double>(t - t1) / static_cast<double>(dt);
          };
          split(t1, t2, [&](int64_t a, int64_t b) {
            MetricTruth& m = metric_at(a, name);
            m.energy_wh += (p_at(a) + p_at(b)) / 2 * static_cast<double>(b - a) / 3.6e6;
            m.covered_ms += b - a;
          });
        }
      } else if (IsCounter(name) && !points.empty()) {
        double baseline = points[0].second;
        for (size_t i = 1; i < points.size(); ++i) {
          auto [t1, v1] = points[i - 1];
          auto [t2, v2] = points[i];
          (void)v1;
          double increment;
          if (v2 >= baseline) {
            increment = v2 - baseline;
            baseline = v2;
          } else if (v2 >= kCounterNoiseFloor * baseline) {
            increment = 0;
          } else {
            increment = std::max(v2, 0.0);
            baseline = v2;
            metric_at(t2, name).resets += 1;
          }
          int64_t dt = t2 - t1;
          if (dt > max_gap_ms_ || dt <= 0) {
            metric_at(t2, name).delta += increment;
            continue;
          }
          split(t1, t2, [&](int64_t a, int64_t b) {
            metric_at(a, name).delta +=
                increment * static_cast<double>(b - a) / static_cast<double>(dt);
          });
        }
      }
    }
    for (auto& [start, r] : records) out.push_back(std::move(r));
  }
  return out;
}

std::string GroundTruth::RecordToJson(const RecordTruth& r) {
  JsonWriter w;
  w.BeginObject();
  w.Key("device_id");
  w.String(r.device_id);
  w.Key("resolution");
  w.String(r.resolution);
  w.Key("window_start");
  w.String(FormatRfc3339Millis(r.window_start_ms * 1'000'000));
  w.Key("window_end");
  w.String(FormatRfc3339Millis(r.window_end_ms * 1'000'000));
  if (!r.local_date.empty()) {
    w.Key("local_date");
    w.String(r.local_date);
    w.Key("timezone");
    w.String(r.timezone);
  }
  w.Key("count");
  w.Int(r.count);
  const double window_s = static_cast<double>(r.window_end_ms - r.window_start_ms) / 1000;
  auto power = r.metrics.find("power_w");
  if (power != r.metrics.end()) {
    const MetricTruth& p = power->second;
    if (p.count > 0) {
      w.Key("avg_power_w");
      w.Double(p.sum / static_cast<double>(p.count));
      w.Key("max_power_w");
      w.Double(p.max);
    }
    w.Key("sum_energy_wh");
    w.Double(p.energy_wh);
    w.Key("coverage");
    w.Double(static_cast<double>(p.covered_ms) / 1000 / window_s);
  }
  w.Key("metrics");
  w.BeginObject();
  for (const auto& [name, m] : r.metrics) {
    w.Key(name);
    w.BeginObject();
    w.Key("count");
    w.Int(m.count);
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
    if (m.is_power) {
      w.Key("energy_wh");
      w.Double(m.energy_wh);
      w.Key("coverage");
      w.Double(static_cast<double>(m.covered_ms) / 1000 / window_s);
      if (m.covered_ms > 0) {
        w.Key("twa");
        w.Double(m.energy_wh * 3600 / (static_cast<double>(m.covered_ms) / 1000));
      }
    }
    if (m.is_counter) {
      w.Key("delta");
      w.Double(m.delta);
      w.Key("resets");
      w.Int(m.resets);
    }
    w.EndObject();
  }
  w.EndObject();
  w.EndObject();
  return w.Take();
}

void GroundTruth::WriteJsonLines(std::ostream& out) const {
  for (const char* resolution : {"1m", "1h", "1d"}) {
    for (const RecordTruth& r : Compute(resolution)) out << RecordToJson(r) << '\n';
  }
}

}  // namespace joule::app::sim

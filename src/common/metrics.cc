#include "common/metrics.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>

namespace joule {
namespace {

void AtomicAdd(std::atomic<double>& a, double d) {
  double cur = a.load(std::memory_order_relaxed);
  while (!a.compare_exchange_weak(cur, cur + d, std::memory_order_relaxed)) {
  }
}

std::string EscapeLabelValue(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string LabelText(const MetricLabels& labels, std::string_view extra_key = {},
                      std::string_view extra_value = {}) {
  if (labels.empty() && extra_key.empty()) return "";
  std::string s = "{";
  bool first = true;
  for (const auto& [k, v] : labels) {
    if (!first) s += ',';
    first = false;
    s += k;
    s += "=\"";
    s += EscapeLabelValue(v);
    s += '"';
  }
  if (!extra_key.empty()) {
    if (!first) s += ',';
    s += extra_key;
    s += "=\"";
    s += extra_value;
    s += '"';
  }
  s += '}';
  return s;
}

std::string FormatValue(double v) {
  if (v == static_cast<double>(static_cast<int64_t>(v)) && std::abs(v) < 1e15) {
    return fmt::format("{}", static_cast<int64_t>(v));
  }
  return fmt::format("{}", v);
}

}  // namespace

void Gauge::Add(double d) { AtomicAdd(v_, d); }

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), buckets_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  std::sort(bounds_.begin(), bounds_.end());
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0);
}

void Histogram::Observe(double v) {
  size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  AtomicAdd(sum_, v);
}

void Histogram::ObserveCounts(const uint64_t* counts, double sum) {
  uint64_t n = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    if (counts[i] == 0) continue;
    buckets_[i].fetch_add(counts[i], std::memory_order_relaxed);
    n += counts[i];
  }
  if (n == 0) return;
  count_.fetch_add(n, std::memory_order_relaxed);
  AtomicAdd(sum_, sum);
}

std::vector<uint64_t> Histogram::BucketCounts() const {
  std::vector<uint64_t> out(bounds_.size() + 1);
  for (size_t i = 0; i <= bounds_.size(); ++i) out[i] = buckets_[i].load(std::memory_order_relaxed);
  return out;
}

std::vector<double> Histogram::LatencyBuckets() {
  return {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
          0.05,    0.1,    0.25,    0.5,    1,     2.5,    5,     10};
}

std::vector<double> Histogram::SizeBuckets() {
  std::vector<double> b;
  for (double v = 1; v <= 1048576; v *= 4) b.push_back(v);
  return b;
}

MetricsRegistry::Series* MetricsRegistry::FindOrAdd(std::string_view name, std::string_view help,
                                                    Type type, const MetricLabels& labels,
                                                    bool* created) {
  auto it = families_.find(name);
  if (it == families_.end()) {
    it = families_.emplace(std::string(name), Family{type, std::string(help), {}}).first;
  }
  for (auto& s : it->second.series) {
    if (s->labels == labels) {
      *created = false;
      return s.get();
    }
  }
  it->second.series.push_back(std::make_unique<Series>());
  it->second.series.back()->labels = labels;
  *created = true;
  return it->second.series.back().get();
}

Counter* MetricsRegistry::GetCounter(std::string_view name, std::string_view help,
                                     const MetricLabels& labels) {
  std::lock_guard lock(mu_);
  bool created;
  Series* s = FindOrAdd(name, help, Type::kCounter, labels, &created);
  if (!s->counter) s->counter = std::make_unique<Counter>();
  return s->counter.get();
}

Gauge* MetricsRegistry::GetGauge(std::string_view name, std::string_view help,
                                 const MetricLabels& labels) {
  std::lock_guard lock(mu_);
  bool created;
  Series* s = FindOrAdd(name, help, Type::kGauge, labels, &created);
  if (!s->gauge) s->gauge = std::make_unique<Gauge>();
  return s->gauge.get();
}

Histogram* MetricsRegistry::GetHistogram(std::string_view name, std::string_view help,
                                         std::vector<double> upper_bounds,
                                         const MetricLabels& labels) {
  std::lock_guard lock(mu_);
  bool created;
  Series* s = FindOrAdd(name, help, Type::kHistogram, labels, &created);
  if (!s->histogram) s->histogram = std::make_unique<Histogram>(std::move(upper_bounds));
  return s->histogram.get();
}

void MetricsRegistry::AddGaugeCallback(std::string_view name, std::string_view help,
                                       const MetricLabels& labels, std::function<double()> fn) {
  std::lock_guard lock(mu_);
  bool created;
  Series* s = FindOrAdd(name, help, Type::kGauge, labels, &created);
  s->callback = std::move(fn);
}

void MetricsRegistry::AddCounterCallback(std::string_view name, std::string_view help,
                                         const MetricLabels& labels, std::function<double()> fn) {
  std::lock_guard lock(mu_);
  bool created;
  Series* s = FindOrAdd(name, help, Type::kCounter, labels, &created);
  s->counter.reset();  // rendered from the callback
  s->callback = std::move(fn);
}

std::string MetricsRegistry::Render() const {
  std::lock_guard lock(mu_);
  std::string out;
  for (const auto& [name, fam] : families_) {
    const char* type = fam.type == Type::kCounter ? "counter"
                       : fam.type == Type::kGauge ? "gauge"
                                                  : "histogram";
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, fam.help, name, type);
    for (const auto& s : fam.series) {
      if (s->counter) {
        out += fmt::format("{}{} {}\n", name, LabelText(s->labels), s->counter->Value());
      } else if (s->callback) {
        out += fmt::format("{}{} {}\n", name, LabelText(s->labels), FormatValue(s->callback()));
      } else if (s->gauge) {
        out += fmt::format("{}{} {}\n", name, LabelText(s->labels), FormatValue(s->gauge->Value()));
      } else if (s->histogram) {
        auto counts = s->histogram->BucketCounts();
        const auto& bounds = s->histogram->UpperBounds();
        uint64_t cum = 0;
        for (size_t i = 0; i < bounds.size(); ++i) {
          cum += counts[i];
          out += fmt::format("{}_bucket{} {}\n", name,
                             LabelText(s->labels, "le", FormatValue(bounds[i])), cum);
        }
        cum += counts.back();
        out += fmt::format("{}_bucket{} {}\n", name, LabelText(s->labels, "le", "+Inf"), cum);
        out += fmt::format("{}_sum{} {}\n", name, LabelText(s->labels),
                           FormatValue(s->histogram->Sum()));
        out += fmt::format("{}_count{} {}\n", name, LabelText(s->labels), cum);
      }
    }
  }
  return out;
}

}  // namespace joule

// A Prometheus metrics registry. Counters, gauges and histograms are lock-free to
// update; look them up once (Get* takes a mutex) and keep the pointer, which lives as
// long as the registry. Render() produces the Prometheus text exposition format 0.0.4.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace joule {

// Label pairs, e.g. {{"code", "invalid_json"}}. Order is kept as given.
using MetricLabels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  void Inc(uint64_t n = 1) { v_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t Value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

class Gauge {
 public:
  void Set(double v) { v_.store(v, std::memory_order_relaxed); }
  void Add(double d);
  double Value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> v_{0};
};

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void Observe(double v);
  // Many observations at once: counts[i] of them in bucket i (counts.size() ==
  // UpperBounds().size() + 1, the last +Inf), their values summing to `sum`.
  void ObserveCounts(const uint64_t* counts, double sum);
  // Snapshot for rendering and tests.
  std::vector<uint64_t> BucketCounts() const;  // non-cumulative, last = +Inf
  const std::vector<double>& UpperBounds() const { return bounds_; }
  uint64_t Count() const { return count_.load(std::memory_order_relaxed); }
  double Sum() const { return sum_.load(std::memory_order_relaxed); }

  // Buckets for latencies in seconds: 50us .. 10s.
  static std::vector<double> LatencyBuckets();
  // Buckets for sizes/counts: 1 .. 1M, powers of 4.
  static std::vector<double> SizeBuckets();

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;
  std::atomic<uint64_t> count_{0};
  std::atomic<double> sum_{0};
};

class MetricsRegistry {
 public:
  Counter* GetCounter(std::string_view name, std::string_view help,
                      const MetricLabels& labels = {});
  Gauge* GetGauge(std::string_view name, std::string_view help, const MetricLabels& labels = {});
  Histogram* GetHistogram(std::string_view name, std::string_view help,
                          std::vector<double> upper_bounds, const MetricLabels& labels = {});
  // A gauge whose value is read by calling `fn` at render time (from the rendering thread).
  void AddGaugeCallback(std::string_view name, std::string_view help, const MetricLabels& labels,
                        std::function<double()> fn);
  // The same for a counter kept elsewhere (e.g. the process's CPU time): `fn` must never
  // decrease.
  void AddCounterCallback(std::string_view name, std::string_view help, const MetricLabels& labels,
                          std::function<double()> fn);

  std::string Render() const;

 private:
  enum class Type { kCounter, kGauge, kHistogram };
  struct Series {
    MetricLabels labels;
    std::unique_ptr<Counter> counter;
    std::unique_ptr<Gauge> gauge;
    std::unique_ptr<Histogram> histogram;
    std::function<double()> callback;
  };
  struct Family {
    Type type;
    std::string help;
    std::vector<std::unique_ptr<Series>> series;
  };
  Series* FindOrAdd(std::string_view name, std::string_view help, Type type,
                    const MetricLabels& labels, bool* created);

  mutable std::mutex mu_;
  std::map<std::string, Family, std::less<>> families_;
};

}  // namespace joule

#include "common/metrics.h"

#include <gtest/gtest.h>

namespace joule {

TEST(MetricsTest, CounterWithLabelsRenders) {
  MetricsRegistry r;
  r.GetCounter("joule_events_rejected_total", "Rejected events", {{"code", "invalid_json"}})
      ->Inc(3);
  Counter* c =
      r.GetCounter("joule_events_rejected_total", "Rejected events", {{"code", "invalid_json"}});
  c->Inc();
  std::string text = r.Render();
  EXPECT_NE(text.find("# TYPE joule_events_rejected_total counter"), std::string::npos);
  EXPECT_NE(text.find("joule_events_rejected_total{code=\"invalid_json\"} 4"), std::string::npos);
}

TEST(MetricsTest, HistogramIsCumulative) {
  MetricsRegistry r;
  Histogram* h = r.GetHistogram("lat_seconds", "Latency", {0.1, 1});
  h->Observe(0.05);
  h->Observe(0.5);
  h->Observe(5);
  std::string text = r.Render();
  EXPECT_NE(text.find("lat_seconds_bucket{le=\"0.1\"} 1"), std::string::npos);
  EXPECT_NE(text.find("lat_seconds_bucket{le=\"1\"} 2"), std::string::npos);
  EXPECT_NE(text.find("lat_seconds_bucket{le=\"+Inf\"} 3"), std::string::npos);
  EXPECT_NE(text.find("lat_seconds_count 3"), std::string::npos);
}

TEST(MetricsTest, HistogramTakesCountsPerBucketAtOnce) {
  MetricsRegistry r;
  Histogram* h = r.GetHistogram("delay_seconds", "Delay", {1, 10});
  const uint64_t counts[] = {2, 0, 1};  // ≤ 1, ≤ 10, +Inf
  h->ObserveCounts(counts, 31.5);
  h->Observe(5);
  EXPECT_EQ(h->Count(), 4u);
  EXPECT_DOUBLE_EQ(h->Sum(), 36.5);
  EXPECT_EQ(h->BucketCounts(), (std::vector<uint64_t>{2, 1, 1}));
  const uint64_t none[] = {0, 0, 0};
  h->ObserveCounts(none, 0);
  EXPECT_EQ(h->Count(), 4u);
}

TEST(MetricsTest, GaugeCallback) {
  MetricsRegistry r;
  r.AddGaugeCallback("g", "a gauge", {}, [] { return 2.5; });
  EXPECT_NE(r.Render().find("g 2.5"), std::string::npos);
}

TEST(MetricsTest, CounterCallbackRendersAsACounter) {
  MetricsRegistry r;
  double value = 1.5;
  r.AddCounterCallback("c_total", "a counter kept elsewhere", {}, [&value] { return value; });
  value = 4;
  const std::string text = r.Render();
  EXPECT_NE(text.find("# TYPE c_total counter\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\nc_total 4\n"), std::string::npos) << text;
}

}  // namespace joule

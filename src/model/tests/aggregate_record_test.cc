#include "model/aggregate_record.h"

#include <gtest/gtest.h>

#include "common/clock.h"

namespace joule::model {

TEST(MetricKindTest, DefaultsByName) {
  EXPECT_EQ(DefaultMetricKind("power_w"), MetricKind::kPower);
  EXPECT_EQ(DefaultMetricKind("energy_wh"), MetricKind::kCounter);
  EXPECT_EQ(DefaultMetricKind("pulses_total"), MetricKind::kCounter);
  EXPECT_EQ(DefaultMetricKind("voltage_v"), MetricKind::kGauge);
  EXPECT_EQ(DefaultMetricKind("w"), MetricKind::kGauge);
}

TEST(AggregateRecordTest, JsonShape) {
  AggregateRecord r;
  r.device_id = "plug-42";
  r.window_start_ns = 0;
  r.window_end_ns = kNanosPerMinute;
  r.final = true;
  r.version = 2;
  r.count = 2;
  MetricAggregate p;
  p.name = "power_w";
  p.kind = MetricKind::kPower;
  p.count = 2;
  p.min = 10;
  p.max = 20;
  p.sum = 30;
  p.first = 10;
  p.last = 20;
  p.energy_wh = 0.25;
  p.covered_ns = 60 * kNanosPerSecond;
  r.metrics.push_back(p);
  EXPECT_EQ(RecordToJson(r),
            R"({"device_id":"plug-42","resolution":"1m","window_start":"1970-01-01T00:00:00.000Z",)"
            R"("window_end":"1970-01-01T00:01:00.000Z","final":true,"version":2,"count":2,)"
            R"("avg_power_w":15,"max_power_w":20,"sum_energy_wh":0.25,"coverage":1,)"
            R"("metrics":{"power_w":{"count":2,"min":10,"max":20,"avg":15,"first":10,"last":20,)"
            R"("sum":30,"twa":15,"energy_wh":0.25,"coverage":1}}})");
}

}  // namespace joule::model

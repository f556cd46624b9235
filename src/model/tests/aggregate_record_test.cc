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

// The direct encoder (AppendRecordJson) for the other shapes: a local day, a counter, a
// gauge with no samples, a power metric with no coverage, escaping, -0, non-finite values,
// large and small numbers, the metrics filter, and appending after existing text.
TEST(AggregateRecordTest, JsonShapeOfDaysCountersAndEdgeValues) {
  AggregateRecord r;
  r.device_id = "a\"b\\c";
  r.resolution = Resolution::kDay;
  r.window_start_ns = -kNanosPerHour;  // 1969-12-31T23:00:00Z
  r.window_end_ns = 23 * kNanosPerHour;
  r.final = false;
  r.version = 18446744073709551615ull;
  r.count = 0;
  r.timezone = "Europe/Berlin";
  r.local_date = "1970-01-01";
  MetricAggregate c{
      "energy_wh", MetricKind::kCounter, 3, 1e21, 1e21, 3e21, -0.0, 1e-7, 0, 0, 0.1 + 0.2, 2};
  MetricAggregate g{"temp\nc", MetricKind::kGauge, 0, 5, 5, 5, 5, 5, 0, 0, 0, 0};
  MetricAggregate p{
      "power_w", MetricKind::kPower, 1, 1.0 / 0.0, 123456789.125, 0.001, 0.5, 2, 0, 0, 0, 0};
  r.metrics = {c, p, g};
  std::string out = "[";
  AppendRecordJson(r, &out);
  EXPECT_EQ(
      out, R"([{"device_id":"a\"b\\c","resolution":"1d","window_start":"1969-12-31T23:00:00.000Z",)"
           R"("window_end":"1970-01-01T23:00:00.000Z","local_date":"1970-01-01",)"
           R"("timezone":"Europe/Berlin","final":false,"version":18446744073709551615,"count":0,)"
           R"("avg_power_w":0.001,"max_power_w":123456789.125,"sum_energy_wh":0,"coverage":0,)"
           R"("metrics":{"energy_wh":{"count":3,"min":1e+21,"max":1e+21,"avg":1e+21,)"
           R"("first":0,"last":1e-07,"sum":3e+21,"delta":0.30000000000000004,"resets":2},)"
           R"("power_w":{"count":1,"min":null,"max":123456789.125,"avg":0.001,"first":0.5,)"
           R"("last":2,"sum":0.001,"energy_wh":0,"coverage":0},"temp\nc":{"count":0}}})");
  EXPECT_EQ(out.substr(1), RecordToJson(r));
  EXPECT_EQ(RecordToJson(r, {"temp\nc"}).substr(RecordToJson(r, {"temp\nc"}).find("\"metrics\"")),
            R"("metrics":{"temp\nc":{"count":0}}})");
  r.resolution = Resolution::kBase;
  r.window_start_ns = 0;
  r.window_end_ns = 30 * kNanosPerSecond;
  r.metrics.clear();
  EXPECT_EQ(
      RecordToJson(r),
      R"({"device_id":"a\"b\\c","resolution":"30s","window_start":"1970-01-01T00:00:00.000Z",)"
      R"("window_end":"1970-01-01T00:00:30.000Z","final":false,)"
      R"("version":18446744073709551615,"count":0,"metrics":{}})");
}

}  // namespace joule::model

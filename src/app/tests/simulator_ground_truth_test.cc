// The ground-truth calculator of `joule simulate` against hand-computed cases.
#include <gtest/gtest.h>

#include "app/sim/ground_truth.h"
#include "common/time_format.h"

namespace joule::app::sim {
namespace {

constexpr int64_t kT0 = 1'700'000'040'000;  // 2023-11-14T22:14:00Z, a minute boundary

int64_t Ms(const char* rfc3339) {
  int64_t ns = 0;
  EXPECT_TRUE(ParseRfc3339(rfc3339, &ns)) << rfc3339;
  return ns / 1'000'000;
}

TEST(SimulatorGroundTruthTest, PowerSplitAtBoundaryWithInterpolation) {
  GroundTruth truth;
  // 100 W at 0:50, 200 W at 1:10: the boundary power is 150 W.
  truth.Add("d", "1", kT0 + 50'000, {{"power_w", 100}});
  truth.Add("d", "2", kT0 + 70'000, {{"power_w", 200}});
  auto records = truth.Compute("1m");
  ASSERT_EQ(records.size(), 2u);
  const MetricTruth& a = records[0].metrics.at("power_w");
  const MetricTruth& b = records[1].metrics.at("power_w");
  EXPECT_EQ(records[0].count, 1);
  EXPECT_DOUBLE_EQ(a.energy_wh, (100 + 150) / 2.0 * 10 / 3600);
  EXPECT_DOUBLE_EQ(b.energy_wh, (150 + 200) / 2.0 * 10 / 3600);
  EXPECT_EQ(a.covered_ms, 10'000);
  EXPECT_EQ(b.covered_ms, 10'000);
  // The hour holds both halves.
  auto hours = truth.Compute("1h");
  ASSERT_EQ(hours.size(), 1u);
  EXPECT_DOUBLE_EQ(hours[0].metrics.at("power_w").energy_wh, 150.0 * 20 / 3600);
  EXPECT_EQ(hours[0].count, 2);
}

TEST(SimulatorGroundTruthTest, GapLongerThanMaxGapCountsNothingAndEmptyWindowsGetShares) {
  GroundTruth truth(300'000);
  truth.Add("d", "1", kT0, {{"power_w", 60}});
  truth.Add("d", "2", kT0 + 180'000, {{"power_w", 60}});  // 3 min: counted, spans 2 empty minutes
  truth.Add("d", "3", kT0 + 600'000, {{"power_w", 60}});  // 7 min: not counted
  auto records = truth.Compute("1m");
  // Minutes 0, 1 and 2 (no sample: count 0 with its share), 3 (a sample), 10.
  ASSERT_EQ(records.size(), 5u);
  EXPECT_EQ(records[1].count, 0);
  EXPECT_DOUBLE_EQ(records[1].metrics.at("power_w").energy_wh, 1.0);
  EXPECT_EQ(records[1].metrics.at("power_w").count, 0);
  EXPECT_EQ(records[3].count, 1);
  EXPECT_EQ(records[3].metrics.at("power_w").covered_ms, 0);
  EXPECT_EQ(records[4].window_start_ms, kT0 + 600'000);
  EXPECT_EQ(records[4].metrics.at("power_w").covered_ms, 0);
  EXPECT_EQ(records[0].metrics.at("power_w").covered_ms, 60'000);
}

TEST(SimulatorGroundTruthTest, SampleStatsFirstLastByTimeAndDuplicatesDropped) {
  GroundTruth truth;
  truth.Add("d", "b", kT0 + 30'000, {{"voltage_v", 231}});
  truth.Add("d", "a", kT0 + 10'000, {{"voltage_v", 229}});
  truth.Add("d", "c", kT0 + 50'000, {{"voltage_v", 230}});
  truth.Add("d", "a", kT0 + 10'000, {{"voltage_v", 999}});  // duplicate id: dropped
  EXPECT_EQ(truth.duplicate_count(), 1u);
  auto records = truth.Compute("1m");
  ASSERT_EQ(records.size(), 1u);
  const MetricTruth& v = records[0].metrics.at("voltage_v");
  EXPECT_EQ(v.count, 3);
  EXPECT_EQ(v.min, 229);
  EXPECT_EQ(v.max, 231);
  EXPECT_EQ(v.first, 229);
  EXPECT_EQ(v.last, 230);
  EXPECT_DOUBLE_EQ(v.sum, 690);
  EXPECT_FALSE(v.is_power);
  EXPECT_FALSE(v.is_counter);
}

TEST(SimulatorGroundTruthTest, CounterNoiseResetAndGap) {
  GroundTruth truth(300'000);
  truth.Add("d", "1", kT0 + 0, {{"energy_wh", 1000}});
  truth.Add("d", "2", kT0 + 30'000, {{"energy_wh", 1010}});  // +10
  truth.Add("d", "3", kT0 + 60'000, {{"energy_wh", 1005}});  // noise: 0, baseline 1010
  truth.Add("d", "4", kT0 + 90'000, {{"energy_wh", 1012}});  // +2 from the baseline
  truth.Add("d", "5", kT0 + 120'000, {{"energy_wh", 4}});    // reset: +4
  truth.Add("d", "6", kT0 + 720'000, {{"energy_wh", 10}});   // 10 min gap: +6 in its window
  auto records = truth.Compute("1m");
  // Windows: 0, 1, 2 (reset sample), 12.
  ASSERT_EQ(records.size(), 4u);
  EXPECT_DOUBLE_EQ(records[0].metrics.at("energy_wh").delta, 10);
  EXPECT_DOUBLE_EQ(records[1].metrics.at("energy_wh").delta, 2 + 4);
  EXPECT_EQ(records[2].metrics.at("energy_wh").resets, 1);
  EXPECT_DOUBLE_EQ(records[2].metrics.at("energy_wh").delta, 0);
  EXPECT_DOUBLE_EQ(records[3].metrics.at("energy_wh").delta, 6);
  auto json = GroundTruth::RecordToJson(records[2]);
  EXPECT_NE(json.find("\"resets\":1"), std::string::npos) << json;
}

TEST(SimulatorGroundTruthTest, CounterIncrementSpreadAcrossBoundary) {
  GroundTruth truth;
  truth.Add("d", "1", kT0 + 45'000, {{"energy_wh", 100}});
  truth.Add("d", "2", kT0 + 75'000, {{"energy_wh", 106}});
  auto records = truth.Compute("1m");
  ASSERT_EQ(records.size(), 2u);
  EXPECT_DOUBLE_EQ(records[0].metrics.at("energy_wh").delta, 3);
  EXPECT_DOUBLE_EQ(records[1].metrics.at("energy_wh").delta, 3);
}

TEST(SimulatorGroundTruthTest, LocalDaysKolkataLordHoweAndNewYorkDst) {
  std::string date;
  auto k = WindowContaining("1d", "Asia/Kolkata", Ms("2026-03-10T20:00:00Z"), &date);
  ASSERT_TRUE(k);
  EXPECT_EQ(date, "2026-03-11");
  EXPECT_EQ(k->first, Ms("2026-03-10T18:30:00Z"));
  EXPECT_EQ(k->second - k->first, 86'400'000);
  // New York springs forward on 2026-03-08: a 23-hour day.
  auto ny = WindowContaining("1d", "America/New_York", Ms("2026-03-08T12:00:00Z"), &date);
  ASSERT_TRUE(ny);
  EXPECT_EQ(date, "2026-03-08");
  EXPECT_EQ(ny->first, Ms("2026-03-08T05:00:00Z"));
  EXPECT_EQ(ny->second, Ms("2026-03-09T04:00:00Z"));
  // Lord Howe ends its 30-minute DST on 2026-04-05 at 02:00 local: a 24.5-hour day.
  auto lh = WindowContaining("1d", "Australia/Lord_Howe", Ms("2026-04-05T06:00:00Z"), &date);
  ASSERT_TRUE(lh);
  EXPECT_EQ(date, "2026-04-05");
  EXPECT_EQ(lh->second - lh->first, 24 * 3'600'000 + 1'800'000);
  EXPECT_FALSE(WindowContaining("1d", "Not/AZone", 0));
  auto m = WindowContaining("1m", "UTC", kT0 + 59'999);
  EXPECT_EQ(m->first, kT0);
}

TEST(SimulatorGroundTruthTest, DayRecordCarriesLocalDateAndCoverageOfTheLocalDay) {
  GroundTruth truth;
  truth.SetTimezone("d", "Europe/Berlin");
  int64_t t = Ms("2026-06-01T10:00:00Z");
  truth.Add("d", "1", t, {{"power_w", 1000}});
  truth.Add("d", "2", t + 3'600'000 / 20, {{"power_w", 1000}});  // 3 minutes later
  auto days = truth.Compute("1d");
  ASSERT_EQ(days.size(), 1u);
  EXPECT_EQ(days[0].local_date, "2026-06-01");
  EXPECT_EQ(days[0].window_start_ms, Ms("2026-05-31T22:00:00Z"));
  EXPECT_DOUBLE_EQ(days[0].metrics.at("power_w").energy_wh, 50);
  auto json = GroundTruth::RecordToJson(days[0]);
  EXPECT_NE(json.find("\"local_date\":\"2026-06-01\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"timezone\":\"Europe/Berlin\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"sum_energy_wh\":50"), std::string::npos) << json;
}

}  // namespace
}  // namespace joule::app::sim

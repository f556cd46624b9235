#include "store/archive/archive_row.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>

namespace joule::store {
namespace {

model::Event Sample() {
  model::Event e;
  e.device_id = "plug-42";
  e.timestamp_ns = 1'795'906'980'123'000'000;
  e.received_at_ns = 1'795'906'980'456'789'000;
  e.metrics = {{"power_w", 11.2}, {"voltage_v", 230.0}, {"energy_wh", 10452.5}};
  return e;
}

void ExpectSameAsEventToJson(const model::Event& e) {
  std::string row = "prefix";
  AppendArchiveRow(e, &row);
  EXPECT_EQ(row, "prefix" + model::EventToJson(e) + "\n");
}

TEST(ArchiveRowTest, SameBytesAsEventToJson) {
  model::Event e = Sample();
  ExpectSameAsEventToJson(e);
  e.event_id = "id \"quoted\" \\ \n\t\x01";
  e.meta_json = R"({"fw":"1.2","room":"kitchen"})";
  ExpectSameAsEventToJson(e);
  for (int64_t ts : {int64_t{0}, int64_t{-1}, int64_t{-1'000'001}, int64_t{1'000},
                     int64_t{1'795'906'980'123'456'000}, int64_t{1'795'906'980'123'456'789},
                     int64_t{-6'000'000'000'000'000'001}, int64_t{9'000'000'000'000'000'007}}) {
    e.timestamp_ns = ts;
    e.received_at_ns = ts;
    ExpectSameAsEventToJson(e);
  }
  for (double v :
       {0.0, -0.0, 1e-7, 0.0001, 0.1, 1.0, -1.5, 100.0, 1e15, 1e16, 1e17, 1e21, 123456789.125,
        std::numeric_limits<double>::max(), std::numeric_limits<double>::denorm_min(), -2.5e-300}) {
    e.metrics = {{"power_w", v}};
    ExpectSameAsEventToJson(e);
  }
}

TEST(ArchiveRowTest, RandomEventsMatch) {
  std::mt19937_64 rng(42);
  std::uniform_real_distribution<double> unit(-1, 1);
  std::uniform_int_distribution<int> exp10(-12, 22);
  std::uniform_int_distribution<int64_t> time(-4'000'000'000'000'000'000,
                                              4'000'000'000'000'000'000);
  model::Event e = Sample();
  std::string rows;
  for (int i = 0; i < 2000; ++i) {
    e.timestamp_ns = time(rng);
    if (i % 3 == 0) e.timestamp_ns -= e.timestamp_ns % 1'000'000;
    e.received_at_ns = time(rng);
    e.metrics.clear();
    for (int m = 0; m < 1 + i % 5; ++m) {
      e.metrics.push_back({"m" + std::to_string(m), unit(rng) * std::pow(10.0, exp10(rng))});
    }
    e.event_id = i % 2 ? "e-" + std::to_string(i) : "";
    rows.clear();
    AppendArchiveRow(e, &rows);
    ASSERT_EQ(rows, model::EventToJson(e) + "\n") << i;
  }
}

}  // namespace
}  // namespace joule::store

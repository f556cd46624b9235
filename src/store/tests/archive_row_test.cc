#include "store/archive/archive_row.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>

#include "common/json_writer.h"
#include "model/event.h"
#include "store/archive/event_view.h"

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

// Found by the archive's black-box test (session 31): a -0.0 reading is archived as `0`.
// That is what model::EventToJson (JsonWriter) writes, so the row must too — through the
// general number path (PutSimpleDouble does not take zeros), from a model::Event and from a
// view of the log payload, with and without the encoder's caches.
TEST(ArchiveRowTest, NegativeZeroIsWrittenAsEventToJsonWritesIt) {
  char buf[64];
  EXPECT_EQ(PutSimpleDouble(-0.0, buf), nullptr);
  EXPECT_EQ(PutSimpleDouble(0.0, buf), nullptr);
  std::string zero;
  JsonWriter::AppendDouble(&zero, -0.0);
  model::Event e = Sample();
  e.metrics = {{"power_w", -0.0}, {"voltage_v", 0.0}, {"energy_wh", -0.0}};
  const std::string expected = model::EventToJson(e) + "\n";
  EXPECT_NE(expected.find("\"power_w\":" + zero + ",\"voltage_v\":0,\"energy_wh\":" + zero + "}"),
            std::string::npos)
      << expected;
  ExpectSameAsEventToJson(e);
  std::string payload;
  model::EncodeEvent(e, &payload);
  EventView view;
  model::Event fallback;
  ASSERT_TRUE(DecodeEventView(payload, &view, &fallback).ok());
  ArchiveRowEncoder encoder;
  for (int i = 0; i < 3; ++i) {  // the second and third rows reuse the cached keys
    std::string row;
    encoder.Append(view, &row);
    EXPECT_EQ(row, expected) << i;
    row.clear();
    encoder.Append(e, &row);
    EXPECT_EQ(row, expected) << i;
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

// One encoder over a stream of events: its caches (hour prefixes, metric keys) must never
// carry anything from one event into the next one's bytes.
TEST(ArchiveRowTest, EncoderWithCachesMatchesAcrossEvents) {
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<int> pick(0, 9);
  std::uniform_int_distribution<int64_t> step(-2 * 3'600'000'000'000, 2 * 3'600'000'000'000);
  const std::vector<std::vector<std::string>> name_sets = {
      {"power_w", "voltage_v", "current_a", "energy_wh"},
      {"power_w", "voltage_v"},
      {"voltage_v", "power_w", "current_a", "energy_wh", "temp_c"},
      {"power_w"}};
  ArchiveRowEncoder encoder;
  model::Event e = Sample();
  int64_t t = 1'795'906'980'123'000'000;
  std::string rows;
  for (int i = 0; i < 20000; ++i) {
    // Mostly the same hour and names, sometimes another hour, other names, other shapes.
    t += pick(rng) < 8 ? 1'000'000'000 + pick(rng) * 1'000 : step(rng);
    e.timestamp_ns = t;
    e.received_at_ns = t + (pick(rng) < 9 ? 40'000'000 : -step(rng));
    const auto& names = name_sets[pick(rng) < 7 ? 0 : pick(rng) % name_sets.size()];
    e.metrics.clear();
    for (const auto& n : names) e.metrics.push_back({n, (pick(rng) - 3) * 1.25 + i * 0.01});
    e.device_id = pick(rng) == 0 ? "dev \"q\"" : "dev-" + std::to_string(i % 100);
    e.event_id = pick(rng) == 0 ? "e" + std::to_string(i) : "";
    e.meta_json = pick(rng) == 0 ? R"({"k":"v"})" : "";
    rows.assign("x");
    encoder.Append(e, &rows);
    ASSERT_EQ(rows, "x" + model::EventToJson(e) + "\n") << i;
  }
}

// The encoder caches each position's metric key: a name of the same length that differs
// in any one byte (every length to 20, every position) is written as itself.
TEST(ArchiveRowTest, SameLengthNamesAreToldApart) {
  ArchiveRowEncoder encoder;
  model::Event e = Sample();
  std::string rows;
  for (size_t len = 1; len <= 20; ++len) {
    for (size_t at = 0; at < len; ++at) {
      std::string a(len, 'm'), b(len, 'm');
      b[at] = 'x';
      for (const std::string* name : {&a, &b, &a, &b}) {
        e.metrics = {{"power_w", 1.5}, {*name, 2.0}};
        rows.assign("x");
        encoder.Append(e, &rows);
        ASSERT_EQ(rows, "x" + model::EventToJson(e) + "\n") << len << " " << at;
      }
    }
  }
}

// The fast number path against JsonWriter::AppendDouble (fmt's shortest round trip), on
// the kinds of values sensors send (few decimals) and on arbitrary doubles.
TEST(ArchiveRowTest, SimpleDoublesMatchJsonWriter) {
  std::mt19937_64 rng(11);
  std::uniform_int_distribution<int64_t> mantissa(0, 999'999'999'999'999);
  std::uniform_int_distribution<int> decimals(0, 9), digits(1, 16), sign(0, 1);
  std::uniform_int_distribution<uint64_t> bits;
  auto check = [](double v) {
    std::string expected;
    JsonWriter::AppendDouble(&expected, v);
    char buf[64];
    char* end = PutSimpleDouble(v, buf);
    if (end != nullptr) {
      ASSERT_EQ(std::string(buf, end), expected) << v;
    }
  };
  size_t fast = 0;
  for (int i = 0; i < 2'000'000; ++i) {
    // A decimal with up to 16 digits and 0–9 decimals, read as a double (as from JSON).
    int64_t m = mantissa(rng);
    for (int d = digits(rng); d < 15; ++d) m /= 10;
    const std::string text =
        (sign(rng) ? "-" : "") + std::to_string(m) + "e-" + std::to_string(decimals(rng));
    const double v = std::strtod(text.c_str(), nullptr);
    check(v);
    char buf[64];
    fast += PutSimpleDouble(v, buf) != nullptr;
    // Arbitrary bit patterns (mostly rejected) and arithmetic results like 0.1 + 0.2.
    double r;
    const uint64_t b = bits(rng);
    std::memcpy(&r, &b, sizeof r);
    check(r);
    check(v * 3.0);
    check(v / 7.0);
  }
  EXPECT_GT(fast, 1'000'000u);  // the path is actually taken for such values
  for (double v : {1e-3,
                   0.00099999999999999,
                   0.001000000000000001,
                   999999999999999.9,
                   999999999999999.0,
                   1e15,
                   1e15 - 1,
                   123456789012345.6,
                   0.1 + 0.2,
                   1.0 / 3,
                   0.5,
                   0.05,
                   0.0125,
                   12.5,
                   100.0,
                   230.1,
                   10452.5,
                   9007199254740993.0,
                   4503599627370495.5,
                   0.30000000000000004,
                   1234567.1234567,
                   2.675,
                   1.005,
                   99999999.9999999,
                   99999999.12345678,
                   100000000.1234567,
                   12345678.1234567,
                   0.0012345678,
                   0.00123456789012,
                   99999999999999.99,
                   9999999999999.999,
                   1000000.0000001,
                   230.0,
                   1e7,
                   1e14}) {
    check(v);
    check(-v);
  }
  char buf[64];
  EXPECT_EQ(std::string(buf, PutSimpleDouble(12.25, buf)), "12.25");
  EXPECT_EQ(std::string(buf, PutSimpleDouble(-0.007, buf)), "-0.007");
  EXPECT_EQ(std::string(buf, PutSimpleDouble(230.0, buf)), "230");
  EXPECT_EQ(PutSimpleDouble(1e-4, buf), nullptr);
  EXPECT_EQ(PutSimpleDouble(1e16, buf), nullptr);
  EXPECT_EQ(PutSimpleDouble(0.1 + 0.2, buf), nullptr);
}

}  // namespace
}  // namespace joule::store

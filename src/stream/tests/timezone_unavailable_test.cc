// A TimezoneProvider that cannot say a zone now (std::nullopt: the metadata store
// unreachable). The engine must not guess one: an event of a device it has not seen is not
// processed (ProcessBatch stops before it, Process returns false) and is handed over again
// later, and a device it has keeps its zone across a local-day roll. The records must be
// those of an engine whose provider always answered (found by a black-box test: events
// processed during a PostgreSQL outage after a restart went into UTC days, and an owner's
// daily energy counted an hour twice).
#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "stream/window_engine.h"

namespace joule::stream {
namespace {

struct Collect : RecordSink {
  void Emit(const model::AggregateRecord& r) override { out.push_back(r); }
  std::vector<model::AggregateRecord> out;
};

struct Zones : TimezoneProvider {
  std::optional<std::string> TimezoneOf(std::string_view id) override {
    ++asked;
    if (!available) return std::nullopt;
    auto it = zones.find(std::string(id));
    return it == zones.end() ? std::string("UTC") : it->second;
  }
  std::map<std::string, std::string> zones = {{"berlin", "Europe/Berlin"}, {"tokyo", "Asia/Tokyo"}};
  bool available = true;
  int asked = 0;
};

// 2026-11-30T22:00:00Z: 23:00 in Berlin, 07:00 the next day in Tokyo.
constexpr int64_t kStart = 1796076000LL * kNanosPerSecond;

model::Event Event(const std::string& device, int64_t minute, double watts) {
  model::Event e;
  e.device_id = device;
  e.timestamp_ns = kStart + minute * 60 * kNanosPerSecond;
  e.received_at_ns = e.timestamp_ns;
  e.metrics = {{"power_w", watts}};
  return e;
}

std::vector<model::AggregateRecord> Days(const std::vector<model::AggregateRecord>& records,
                                         bool final_only) {
  std::vector<model::AggregateRecord> days;
  for (const auto& r : records) {
    if (r.resolution == model::Resolution::kDay && (r.final || !final_only)) days.push_back(r);
  }
  return days;
}

TEST(TimezoneUnavailableTest, ANewDeviceWaitsAndTheRecordsAreThoseOfAnAnsweringProvider) {
  std::vector<model::Event> events;
  for (int m = 0; m < 240; ++m) {  // 4 hours across Berlin's midnight, one event a minute
    events.push_back(Event("berlin", m, 600));
    if (m >= 30) events.push_back(Event("tokyo", m, 100));  // new from the 31st minute on
  }
  const int64_t end = events.back().timestamp_ns + 3 * kNanosPerDay;

  Zones always;
  WindowEngine reference(EngineOptions{}, &always);
  Collect want;
  ASSERT_EQ(reference.ProcessBatch(events.data(), events.size(), events.back().timestamp_ns, &want),
            events.size());
  reference.Tick(end, &want);

  Zones zones;
  WindowEngine engine(EngineOptions{}, &zones);
  Collect got;
  // The first 30 minutes with the store answering (berlin only), then an outage.
  size_t i = engine.ProcessBatch(events.data(), 30, events[29].timestamp_ns, &got);
  ASSERT_EQ(i, 30u);
  zones.available = false;
  const size_t stopped =
      engine.ProcessBatch(events.data() + i, events.size() - i, events.back().timestamp_ns, &got);
  // It stopped at tokyo's first event (the 31st minute's berlin event went in before it).
  ASSERT_EQ(stopped, 1u);
  i += stopped;
  EXPECT_EQ(events[i].device_id, "tokyo");
  EXPECT_EQ(engine.stats().devices, 1u) << "a device was created without a zone";
  // Asked again while the store still cannot say: nothing changes.
  model::Event copy = events[i];
  EXPECT_FALSE(engine.Process(copy, events.back().timestamp_ns, &got));
  EXPECT_EQ(engine.stats().devices, 1u);
  // The store answers again: the rest goes in.
  zones.available = true;
  ASSERT_EQ(
      engine.ProcessBatch(events.data() + i, events.size() - i, events.back().timestamp_ns, &got),
      events.size() - i);
  engine.Tick(end, &got);

  const auto want_days = Days(want.out, true), got_days = Days(got.out, true);
  ASSERT_FALSE(want_days.empty());
  ASSERT_EQ(got_days.size(), want_days.size());
  for (size_t k = 0; k < want_days.size(); ++k) {
    EXPECT_EQ(got_days[k].device_id, want_days[k].device_id);
    EXPECT_EQ(got_days[k].timezone, want_days[k].timezone);
    EXPECT_EQ(got_days[k].local_date, want_days[k].local_date);
    EXPECT_EQ(got_days[k].window_start_ns, want_days[k].window_start_ns);
    EXPECT_EQ(got_days[k].count, want_days[k].count);
    EXPECT_NE(got_days[k].timezone, "UTC") << got_days[k].device_id;
  }
}

TEST(TimezoneUnavailableTest, AKnownDeviceKeepsItsZoneAcrossALocalDayRoll) {
  Zones zones;
  WindowEngine engine(EngineOptions{}, &zones);
  Collect got;
  // 22:00–22:59Z (Berlin's last hour of 2026-11-30) with the store answering.
  for (int m = 0; m < 60; ++m) ASSERT_TRUE(engine.Process(Event("berlin", m, 600), 0, &got));
  zones.available = false;
  const int asked = zones.asked;
  // 23:00Z on: Berlin's 2026-12-01; the day roll asks, the store cannot say.
  for (int m = 60; m < 120; ++m) ASSERT_TRUE(engine.Process(Event("berlin", m, 600), 0, &got));
  EXPECT_GT(zones.asked, asked) << "the day roll did not ask for the zone";
  engine.Tick(kStart + 3 * kNanosPerDay, &got);
  const auto days = Days(got.out, true);
  ASSERT_EQ(days.size(), 2u);
  EXPECT_EQ(days[0].local_date, "2026-11-30");
  EXPECT_EQ(days[1].local_date, "2026-12-01");
  for (const auto& d : days) {
    EXPECT_EQ(d.timezone, "Europe/Berlin");
    EXPECT_EQ(d.count, 60u);
  }
  EXPECT_EQ(days[1].window_start_ns, kStart + kNanosPerHour);  // 2026-11-30T23:00Z
}

}  // namespace
}  // namespace joule::stream

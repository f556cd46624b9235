// Home profiles of `joule simulate`: determinism by seed and plausible energy.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>

#include "app/sim/home_profiles.h"
#include "common/time_format.h"

namespace joule::app::sim {
namespace {

int64_t Ms(const char* rfc3339) {
  int64_t ns = 0;
  EXPECT_TRUE(ParseRfc3339(rfc3339, &ns)) << rfc3339;
  return ns / 1'000'000;
}

// Runs a home for `hours` at 1 sample per `step_ms` and integrates each device's power.
struct DayRun {
  std::map<std::string, double> energy_wh;  // device → ∫ power (or solar) dt
  std::map<std::string, double> max_w;
  double meter_delta_wh = 0;
  double meter_first_wh = 0;
  std::vector<double> meter_power;
  std::map<std::string, int> sessions;  // device → times its power rose from 0
};

DayRun RunHome(Home& home, int64_t start_ms, double hours, int64_t step_ms) {
  DayRun run;
  std::map<std::string, double> last;
  const int64_t steps = static_cast<int64_t>(hours * 3'600'000 / static_cast<double>(step_ms));
  for (int64_t k = 0; k <= steps; ++k) {
    home.Step(start_ms + k * step_ms);
    for (size_t i = 0; i < home.devices().size(); ++i) {
      const Reading& r = home.ReadingOf(static_cast<int>(i));
      const std::string& id = home.devices()[i].device_id;
      for (int m = 0; m < r.size; ++m) {
        std::string name = r.metrics[m].name;
        double v = r.metrics[m].value;
        if (name == "energy_wh") {
          if (k == 0) run.meter_first_wh = v;
          run.meter_delta_wh = v - run.meter_first_wh;
          continue;
        }
        if (name != "power_w" && name != "solar_w") continue;
        EXPECT_GE(v, 0) << id << " " << name;
        if (i == 0) run.meter_power.push_back(v);
        if (k > 0 && last[id] == 0 && v > 0) ++run.sessions[id];
        if (k > 0) run.energy_wh[id] += (v + last[id]) / 2 * static_cast<double>(step_ms) / 3.6e6;
        last[id] = v;
        run.max_w[id] = std::max(run.max_w[id], v);
      }
    }
  }
  return run;
}

TEST(SimulatorProfilesTest, SameSeedSameReadingsOtherSeedOtherReadings) {
  const int64_t t0 = Ms("2026-11-27T10:00:00Z");
  auto trace = [&](uint64_t seed) {
    Home home(3, 8, seed, "sim");
    std::vector<double> values;
    for (int k = 0; k < 600; ++k) {
      home.Step(t0 + k * 1000);
      for (size_t i = 0; i < home.devices().size(); ++i) {
        const Reading& r = home.ReadingOf(static_cast<int>(i));
        for (int m = 0; m < r.size; ++m) values.push_back(r.metrics[m].value);
      }
    }
    return values;
  };
  EXPECT_EQ(trace(7), trace(7));
  EXPECT_NE(trace(7), trace(8));
}

TEST(SimulatorProfilesTest, DevicesZonesAndIds) {
  Home home(0, 8, 1, "sim");
  EXPECT_EQ(home.location().timezone, std::string("Asia/Kolkata"));
  EXPECT_EQ(home.owner_id(), "sim-owner-0000");
  ASSERT_EQ(home.devices().size(), 8u);
  EXPECT_EQ(home.devices()[0].device_id, "sim-0000");
  EXPECT_EQ(home.devices()[0].kind, ApplianceKind::kMeter);
  EXPECT_EQ(home.devices()[1].device_id, "sim-0000-fridge");
  std::set<ApplianceKind> kinds;
  for (const auto& d : home.devices()) kinds.insert(d.kind);
  EXPECT_EQ(kinds.size(), 8u);  // every kind once
  EXPECT_EQ(Home(3, 2, 1, "x").location().timezone, std::string("Australia/Lord_Howe"));
  EXPECT_EQ(Home(1, 1, 1, "x").devices().size(), 1u);
  // Kolkata is +05:30 all year.
  EXPECT_EQ(home.UtcOffsetSeconds(Ms("2026-06-01T00:00:00Z")), 5 * 3600 + 1800);
}

// Found by a black-box test: the water heater drew ~27 kWh a day in every home (45 % of the
// peak slots drew a "shower", ~41 a day), half to four fifths of each home's consumption. A
// household electric water heater uses ~3–12 kWh a day, more in larger households.
TEST(SimulatorProfilesTest, TheWaterHeaterDrawsAHouseholdsWorthOfHotWater) {
  const int64_t t0 = Ms("2026-11-24T12:00:00Z");
  double total = 0, least = 1e9, most = 0;
  for (int index = 0; index < 14; ++index) {
    Home home(index, 8, 42, "wk");
    DayRun run = RunHome(home, t0, 48, 30'000);
    const double per_day = run.energy_wh[fmt::format("wk-{:04d}-water_heater", index)] / 2;
    EXPECT_GT(per_day, 2'500) << "home " << index;
    EXPECT_LT(per_day, 12'000) << "home " << index;
    // At most ~60 % of the home: a five-resident home in mild weather on two days without
    // an EV session reaches 58 % (home 9: 8.4 of 14.3 kWh a day).
    EXPECT_LT(per_day, 0.6 * run.energy_wh[fmt::format("wk-{:04d}", index)] / 2) << index;
    total += per_day;
    least = std::min(least, per_day);
    most = std::max(most, per_day);
  }
  EXPECT_GT(total / 14, 4'000);
  EXPECT_LT(total / 14, 9'000);
  EXPECT_GT(most, 1.5 * least);  // by household size
}

// Found by review: the EV charger averaged ~14 kWh a day in every home (a session on 65 %
// of days, 8–35 kWh each: ~5,100 kWh a year, three times a typical car's 1,500–3,000). Now
// 2–3 sessions a week of 6–30 kWh.
TEST(SimulatorProfilesTest, TheEvChargesACarsWorthAWeek) {
  const int64_t t0 = Ms("2026-11-02T00:00:00Z");
  double total = 0;
  int homes = 0, sessions = 0;
  for (int index = 0; index < 14; ++index) {
    Home home(index, 8, 42, "ev");
    DayRun run = RunHome(home, t0, 28 * 24, 60'000);
    const std::string ev = fmt::format("ev-{:04d}-ev", index);
    if (!run.energy_wh.count(ev)) continue;
    const double per_day = run.energy_wh[ev] / 28;
    EXPECT_GT(per_day, 1'500) << "home " << index;
    EXPECT_LT(per_day, 14'000) << "home " << index;
    total += per_day;
    ++homes;
    sessions += run.sessions[ev];
  }
  ASSERT_GT(homes, 5);
  EXPECT_GT(total / homes, 4'000);
  EXPECT_LT(total / homes, 9'000);
  // Sessions on 20–50 % of days, not most days.
  EXPECT_GT(sessions, 0.2 * 28 * homes);
  EXPECT_LT(sessions, 0.5 * 28 * homes);
}

TEST(SimulatorProfilesTest, DailyEnergyIsPlausibleAndTheMeterCounterMatchesItsPower) {
  // A full day (every kind) in Berlin, sampled every 10 s.
  Home home(2, 8, 42, "sim");
  DayRun run = RunHome(home, Ms("2026-06-15T00:00:00Z"), 24, 10'000);
  const std::string meter = "sim-0002";
  // A household uses some kWh a day, not Wh and not MWh.
  EXPECT_GT(run.energy_wh[meter], 2'000);
  EXPECT_LT(run.energy_wh[meter], 80'000);
  // The counter integrates the meter's own power (rounded to mWh per reading).
  EXPECT_NEAR(run.meter_delta_wh, run.energy_wh[meter], 1e-3 * run.energy_wh[meter] + 0.01);
  // The fridge: ~0.5–2 kWh a day, cycling (it is not always on).
  double fridge = run.energy_wh["sim-0002-fridge"];
  EXPECT_GT(fridge, 300);
  EXPECT_LT(fridge, 2'500);
  EXPECT_LT(fridge / 24, run.max_w["sim-0002-fridge"] * 0.8);
  // Solar in June in Berlin: kWh, with nothing at local midnight.
  double solar = run.energy_wh["sim-0002-solar"];
  EXPECT_GT(solar, 3'000);
  EXPECT_LT(solar, 60'000);
  // The meter is at least the sum of its appliances (base load on top).
  double appliances = 0;
  for (const auto& [id, e] : run.energy_wh) {
    if (id != meter && id != "sim-0002-solar") appliances += e;
  }
  EXPECT_GT(run.energy_wh[meter], appliances);
  EXPECT_LT(run.energy_wh[meter], appliances + 150 * 24 * 1.1);
}

TEST(SimulatorProfilesTest, SolarFollowsTheSunAndLightingTheLocalEvening) {
  Home home(2, 8, 42, "sim");  // Berlin, UTC+2 in June
  auto power_of = [&](int64_t t, std::string_view kind) {
    home.Step(t);
    for (size_t i = 0; i < home.devices().size(); ++i) {
      if (ApplianceKindName(home.devices()[i].kind) == kind) {
        return home.ReadingOf(static_cast<int>(i)).metrics[0].value;
      }
    }
    return -1.0;
  };
  EXPECT_EQ(power_of(Ms("2026-06-15T22:00:00Z"), "solar"), 0);        // local midnight
  EXPECT_GT(power_of(Ms("2026-06-16T11:00:00Z"), "solar"), 500);      // local 13:00
  double night = power_of(Ms("2026-06-17T01:30:00Z"), "lighting");    // 03:30 local
  double evening = power_of(Ms("2026-06-17T19:30:00Z"), "lighting");  // 21:30 local
  EXPECT_GT(evening, night * 5);
}

TEST(SimulatorProfilesTest, ResetMeterCounterStartsFromZero) {
  Home home(0, 1, 1, "sim");
  home.Step(1'800'000'000'000);
  double before = home.ReadingOf(0).metrics[home.ReadingOf(0).size - 1].value;
  EXPECT_GT(before, 1000);
  home.ResetMeterCounter();
  home.Step(1'800'000'001'000);
  double after = home.ReadingOf(0).metrics[home.ReadingOf(0).size - 1].value;
  EXPECT_LT(after, 1);
}

// Found by a black-box test: the counter started at the same reading in every run whatever
// --start was, so a live run after a backfill made it drop (the server counted a reset:
// ~57 kWh of invented consumption in 3 minutes). The reading is a function of event time.
TEST(SimulatorProfilesTest, ALaterRunContinuesTheMeterCounterOfAnEarlierRun) {
  const int64_t start = Ms("2026-11-30T06:00:00Z");
  const int64_t span_ms = 6 * 3'600'000;
  const int64_t step_ms = 10'000;
  for (int index : {0, 2, 10, 13}) {
    auto counter = [&](const Reading& r) { return r.metrics[r.size - 1].value; };
    Home backfill(index, 8, 42, "sim");
    backfill.Step(start);
    const double first = counter(backfill.ReadingOf(0));
    for (int64_t t = start + step_ms; t < start + span_ms; t += step_ms) backfill.Step(t);
    const double last = counter(backfill.ReadingOf(0));
    Home live(index, 8, 42, "sim");
    live.Step(start + span_ms);
    const double next = counter(live.ReadingOf(0));
    SCOPED_TRACE(testing::Message() << "home " << index << ": " << first << " → " << last << " | "
                                    << next << ", mean " << live.mean_power_w() << " W");
    EXPECT_GT(next, first);
    // The junction: the modelled mean over the span against what the run integrated. The
    // server counts a drop of less than 10 % as noise; this one is far below that.
    EXPECT_GT(next, 0.999 * last);
    EXPECT_LT(next, 1.001 * last);
    EXPECT_EQ(next, RoundTo(live.CounterReadingAt(start + span_ms), 3));
  }
}

TEST(SimulatorProfilesTest, TheModelledMeanIsCloseToAWeeksConsumption) {
  // What makes the junctions small: the counter's closed form grows by about what the home
  // draws, within a third over a week (the weather and sessions vary), summer and winter.
  for (const char* start : {"2026-01-10T00:00:00Z", "2026-07-10T00:00:00Z"}) {
    for (int index : {0, 1, 2, 3, 10, 13}) {
      Home home(index, 8, 42, "sim");
      const int64_t t0 = Ms(start);
      DayRun run = RunHome(home, t0, 7 * 24, 60'000);
      const double modelled =
          home.CounterReadingAt(t0 + 7 * 24 * 3'600'000) - home.CounterReadingAt(t0);
      // Since the water heater draws a realistic amount (session 22) it no longer dominates
      // both sides: the weeks land at 0.83–1.21 of the model, and Berlin in July at 0.69 (the
      // modelled HVAC mean overestimates a mild summer week).
      EXPECT_NEAR(run.meter_delta_wh / modelled, 1.0, 0.35) << "home " << index << " " << start;
    }
  }
}

// Found by a black-box test: heating could not hold the setpoint in a cold home (indoor
// ~8 °C in a Chicago or St John's winter while running at full power).
TEST(SimulatorProfilesTest, HvacHoldsTheSetpointInAColdWinter) {
  for (int index : {10, 13}) {  // St John's, Chicago
    Home home(index, 8, 42, "sim");
    size_t hvac = 0;
    for (size_t i = 0; i < home.devices().size(); ++i) {
      if (home.devices()[i].kind == ApplianceKind::kHvac) hvac = i;
    }
    ASSERT_NE(hvac, 0u);
    const int64_t start = Ms("2026-01-15T00:00:00Z");
    double min_c = 100, max_w = 0, energy_wh = 0;
    for (int64_t t = start; t < start + 72 * 3'600'000; t += 30'000) {
      home.Step(t);
      const Reading& r = home.ReadingOf(static_cast<int>(hvac));
      energy_wh += r.metrics[0].value * 30 / 3600;
      max_w = std::max(max_w, r.metrics[0].value);
      if (t >= start + 3 * 3'600'000) min_c = std::min(min_c, r.metrics[1].value);
    }
    EXPECT_GT(min_c, 19.5) << "home " << index;
    EXPECT_LT(max_w, 3'400) << "home " << index;           // the pump's capacity
    EXPECT_LT(energy_wh / 72, 3'000) << "home " << index;  // not always at full power
    EXPECT_GT(energy_wh / 72, 300) << "home " << index;    // but heating
  }
}

}  // namespace
}  // namespace joule::app::sim

// Home profiles for `joule simulate`: a deterministic model of one home's appliances and
// its whole-home meter, advanced in event time.
//
// A Home holds up to kMaxAppliances appliances chosen from the list below (fridge first,
// then a per-home shuffle of the rest) plus the meter, which is always device 0:
//   meter        power_w (base load + every appliance), grid_w (power_w − solar_w; negative
//                when exporting; only with solar), voltage_v, energy_wh (cumulative counter:
//                at the first Step CounterReadingAt(t), then the trapezoid integral of its
//                own power_w samples)
//   fridge       power_w: compressor cycles (on 10–20 min at ~90–140 W with a start spike,
//                off 20–45 min at ~2 W); shorter off-times in the day (door openings)
//   hvac         power_w, indoor_temp_c: a heat pump keeping 20.5 °C (heating) or 24.5 °C
//                (cooling) against an outdoor temperature following a daily curve
//   ev           power_w: at most one evening charging session per local day (7.4 or 11 kW,
//                8–35 kWh, tapering in the last 10 minutes; sessions run past midnight)
//   washer       power_w: 0–2 programs per local day (fill, heat 2 kW, wash, rinse, spin)
//   lighting     power_w: by local time of day and daylight, switched in 10-minute slots
//   water_heater power_w, tank_temp_c: a 200 L tank, a 3 or 4.5 kW element with a
//                thermostat; hot-water draws mostly in the local morning and evening, about
//                three 5-minute draws per resident (1–5) a day: 3.6–9.5 kWh a day
//   solar        solar_w: the inverter's output from the sun's elevation at the home's
//                latitude/longitude, with moving clouds; 0 at night
//
// Determinism: every value is a function of (seed, home index, the sequence of Step times).
// No std:: distributions are used (their output may differ between standard libraries).
// Not thread-safe; one Home is used by one thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace date {
class time_zone;
}

namespace joule::app::sim {

// SplitMix64: small, fast, and the same on every platform.
class SimRandom {
 public:
  explicit SimRandom(uint64_t seed) : state_(seed) {}
  uint64_t Next();
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }  // [0, 1)
  double Uniform(double lo, double hi) { return lo + (hi - lo) * Uniform(); }
  double Normal();  // standard normal (Box–Muller)

 private:
  uint64_t state_;
};

// A seed for one stream of a run (seed, then two integers naming the stream, e.g. a home
// and a purpose): every input bit changes the result, so seeds n and n ^ 1 do not give the
// same streams to other homes (as plain seed ^ home did).
uint64_t Mix(uint64_t seed, uint64_t a, uint64_t b);

// A stateless hash of a few integers to [0, 1), for schedules that must not depend on
// when the simulation started (EV sessions, washer programs, lighting slots, clouds).
double HashUnit(uint64_t a, uint64_t b, uint64_t c = 0, uint64_t d = 0);

enum class ApplianceKind { kMeter, kFridge, kHvac, kEv, kWasher, kLighting, kWaterHeater, kSolar };
std::string_view ApplianceKindName(ApplianceKind kind);

// A real IANA zone with a plausible location in it and its climate.
struct HomeLocation {
  const char* timezone;
  double latitude;
  double longitude;
  double mean_temp_c;    // annual mean outdoor temperature
  double season_amp_c;   // summer/winter half-amplitude
  double daily_swing_c;  // day/night half-amplitude
  double mains_v;        // nominal voltage
};
// Home i lives in HomeLocations()[i % size]; the first four are Asia/Kolkata,
// America/New_York, Europe/Berlin and Australia/Lord_Howe.
const std::vector<HomeLocation>& HomeLocations();

inline constexpr int kMaxMetrics = 4;
inline constexpr int kMaxAppliances = 7;

struct MetricValue {
  const char* name = "";
  double value = 0;
};

// One reading of one device: up to kMaxMetrics metrics.
struct Reading {
  int size = 0;
  MetricValue metrics[kMaxMetrics];
  void Add(const char* name, double value) { metrics[size++] = {name, value}; }
};

struct HomeDevice {
  std::string device_id;
  ApplianceKind kind;
};

class Appliance;

class Home {
 public:
  // devices: 1 (meter only) to kMaxAppliances + 1. Device ids: "{prefix}-{home:04d}" for the
  // meter, "{prefix}-{home:04d}-{kind}" for the appliances.
  Home(int index, int devices, uint64_t seed, std::string_view prefix);
  ~Home();
  Home(const Home&) = delete;
  Home& operator=(const Home&) = delete;

  int index() const { return index_; }
  const std::string& owner_id() const { return owner_id_; }
  const HomeLocation& location() const { return location_; }
  const std::vector<HomeDevice>& devices() const { return devices_; }

  // Advances every appliance to event time t_ms (milliseconds since the Unix epoch).
  // REQUIRES: t_ms not below the previous call's.
  void Step(int64_t t_ms);
  // The reading of device i at the last Step.
  const Reading& ReadingOf(int i) const { return readings_[static_cast<size_t>(i)]; }
  // The meter restarts its counter from 0 (the counter-reset fault).
  void ResetMeterCounter();

  // The meter counter's reading at the first Step of a run, as a function of event time
  // only: a per-home base (1–60 kWh) + the integral of the home's modelled mean
  // consumption (by time of year) since kCounterEpochMs (0 before it). So a run over later
  // times continues (up to the mismatch below) where an earlier run over earlier times
  // ended: at the junction the counter steps by the modelled energy of the earlier run's
  // span − the energy that run actually integrated, a few kWh up or down against a reading
  // of hundreds of MWh (never a 10 % drop, which the server would count as a reset).
  double CounterReadingAt(int64_t t_ms) const;
  // The home's modelled mean consumption over a year (W): base load + every appliance's.
  double mean_power_w() const { return season_w_[0]; }
  static constexpr int64_t kCounterEpochMs = 946'684'800'000;  // 2000-01-01T00:00:00Z

  // Local time at t_ms: offset from UTC in seconds (cached per zone rule interval).
  int64_t UtcOffsetSeconds(int64_t t_ms);

 private:
  int index_;
  std::string owner_id_;
  HomeLocation location_;
  const date::time_zone* zone_ = nullptr;
  int64_t offset_valid_from_ms_ = 1, offset_valid_to_ms_ = 0, offset_s_ = 0;
  std::vector<HomeDevice> devices_;
  std::vector<std::unique_ptr<Appliance>> appliances_;  // devices_[i + 1]
  std::vector<Reading> readings_;
  SimRandom meter_rng_;
  uint64_t weather_seed_ = 0;
  bool has_solar_ = false;
  double base_load_w_;
  double meter_base_wh_;
  double season_w_[3] = {0, 0, 0};  // modelled mean: a0 + a1·cos θ + a2·cos 2θ (W)
  double meter_energy_wh_ = 0;
  bool counter_started_ = false;  // set by the first Step or a reset
  double last_meter_power_w_ = 0;
  int64_t last_t_ms_ = -1;
};

// Rounds to a multiple of 10^-digits (what a real device reports).
double RoundTo(double v, int digits);

}  // namespace joule::app::sim

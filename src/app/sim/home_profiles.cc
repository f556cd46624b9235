#include "app/sim/home_profiles.h"

#include <date/tz.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numbers>

namespace joule::app::sim {

uint64_t SimRandom::Next() {
  uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

double SimRandom::Normal() {
  double u1 = Uniform();
  double u2 = Uniform();
  if (u1 < 1e-300) u1 = 1e-300;
  return std::sqrt(-2 * std::log(u1)) * std::cos(2 * std::numbers::pi * u2);
}

uint64_t Mix(uint64_t seed, uint64_t a, uint64_t b) {
  SimRandom r(seed ^ (a * 0x9e3779b97f4a7c15ULL) ^ (b * 0xc2b2ae3d27d4eb4fULL));
  return r.Next();
}

double HashUnit(uint64_t a, uint64_t b, uint64_t c, uint64_t d) {
  SimRandom r(a * 0x9e3779b97f4a7c15ULL ^ (b + 0x632be59bd9b4e019ULL) * 0xff51afd7ed558ccdULL ^
              (c + 0x85ebca6b) * 0xc4ceb9fe1a85ec53ULL ^ (d + 0x27d4eb2f165667c5ULL));
  r.Next();
  return r.Uniform();
}

std::string_view ApplianceKindName(ApplianceKind kind) {
  switch (kind) {
    case ApplianceKind::kMeter:
      return "meter";
    case ApplianceKind::kFridge:
      return "fridge";
    case ApplianceKind::kHvac:
      return "hvac";
    case ApplianceKind::kEv:
      return "ev";
    case ApplianceKind::kWasher:
      return "washer";
    case ApplianceKind::kLighting:
      return "lighting";
    case ApplianceKind::kWaterHeater:
      return "water_heater";
    case ApplianceKind::kSolar:
      return "solar";
  }
  return "unknown";
}

const std::vector<HomeLocation>& HomeLocations() {
  static const std::vector<HomeLocation> kLocations = {
      {"Asia/Kolkata", 28.61, 77.21, 25.0, 8.0, 6.0, 230},
      {"America/New_York", 40.71, -74.01, 13.0, 12.0, 5.0, 120},
      {"Europe/Berlin", 52.52, 13.40, 10.0, 9.5, 5.0, 230},
      {"Australia/Lord_Howe", -31.55, 159.08, 19.5, 3.5, 3.0, 230},
      {"Asia/Kathmandu", 27.72, 85.32, 18.0, 7.0, 7.0, 230},
      {"America/Los_Angeles", 34.05, -118.24, 18.5, 5.0, 6.0, 120},
      {"Europe/London", 51.51, -0.13, 11.5, 6.5, 4.0, 230},
      {"Asia/Tokyo", 35.68, 139.69, 16.0, 10.0, 4.5, 100},
      {"America/Sao_Paulo", -23.55, -46.63, 20.0, 3.5, 5.0, 127},
      {"Australia/Adelaide", -34.93, 138.60, 17.0, 6.0, 6.0, 230},
      {"America/St_Johns", 47.56, -52.71, 5.0, 9.0, 4.0, 120},
      {"Pacific/Auckland", -36.85, 174.76, 15.5, 4.0, 4.0, 230},
      {"Africa/Johannesburg", -26.20, 28.05, 16.0, 5.0, 7.0, 230},
      {"America/Chicago", 41.88, -87.63, 10.5, 13.0, 5.5, 120},
  };
  return kLocations;
}

double RoundTo(double v, int digits) {
  double scale = std::pow(10.0, digits);
  return std::round(v * scale) / scale;
}

namespace {

constexpr double kPi = std::numbers::pi;

// What every appliance sees at one step.
struct StepContext {
  int64_t t_ms;
  double dt_s;          // since the previous step; 0 at the first
  double local_hour;    // [0, 24)
  int64_t local_day;    // days since 1970-01-01, local calendar
  double outdoor_c;     // outdoor temperature
  double sun_sin_elev;  // sine of the sun's elevation (negative at night)
};

// Fractional day of year from UTC milliseconds (good enough for the sun and seasons).
double DayOfYear(int64_t t_ms) {
  double days = static_cast<double>(t_ms) / 86'400'000.0;
  return std::fmod(days - 0.5 + 365.2425 * 100, 365.2425);  // epoch is Jan 1st
}

double SunSinElevation(const HomeLocation& loc, int64_t t_ms) {
  double doy = DayOfYear(t_ms);
  double decl = 23.44 * kPi / 180 * std::sin(2 * kPi * (284 + doy) / 365.0);
  double utc_hours = std::fmod(static_cast<double>(t_ms) / 3'600'000.0, 24.0);
  double solar_hours = utc_hours + loc.longitude / 15.0;
  double hour_angle = (solar_hours - 12.0) * 15.0 * kPi / 180;
  double lat = loc.latitude * kPi / 180;
  return std::sin(lat) * std::sin(decl) + std::cos(lat) * std::cos(decl) * std::cos(hour_angle);
}

double OutdoorTemp(const HomeLocation& loc, int64_t t_ms, double local_hour, uint64_t seed) {
  double doy = DayOfYear(t_ms);
  // Warmest around July 20th in the north, January 20th in the south.
  double season = std::cos(2 * kPi * (doy - 201) / 365.0) * (loc.latitude >= 0 ? 1 : -1);
  double daily = std::cos(2 * kPi * (local_hour - 15.0) / 24.0);
  // Weather: a slow random walk interpolated between 3-hour knots.
  double knots = static_cast<double>(t_ms) / 10'800'000.0;
  int64_t k = static_cast<int64_t>(std::floor(knots));
  double f = knots - static_cast<double>(k);
  double w0 = HashUnit(seed, 11, static_cast<uint64_t>(k)) - 0.5;
  double w1 = HashUnit(seed, 11, static_cast<uint64_t>(k + 1)) - 0.5;
  double weather = 6 * (w0 + (w1 - w0) * f);
  return loc.mean_temp_c + loc.season_amp_c * season + loc.daily_swing_c * daily + weather;
}

}  // namespace

// One appliance: its metrics at each step.
class Appliance {
 public:
  explicit Appliance(uint64_t seed) : rng_(seed), seed_(seed) {}
  virtual ~Appliance() = default;
  // Advances to ctx.t_ms and writes the reading; returns the power drawn (W, ≥ 0) or, for
  // solar, produced (as a negative number).
  virtual double Step(const StepContext& ctx, Reading* out) = 0;
  // The long-run mean of what Step returns when positive (W drawn; 0 for solar) at a time
  // of year (`season`: +1 midsummer, −1 midwinter, as OutdoorTemp's), from the appliance's
  // parameters and the home's climate: the meter counter's reading at a run's first step
  // is built from it (Home::CounterReadingAt).
  virtual double MeanPowerW(const HomeLocation& location, double season) const = 0;

 protected:
  SimRandom rng_;
  uint64_t seed_;
};

namespace {

class Fridge : public Appliance {
 public:
  explicit Fridge(uint64_t seed) : Appliance(seed) {
    rated_w_ = rng_.Uniform(90, 140);
    on_ = rng_.Uniform() < 0.35;
    remaining_s_ = rng_.Uniform(0, on_ ? 900 : 1800);
  }
  double Step(const StepContext& ctx, Reading* out) override {
    remaining_s_ -= ctx.dt_s;
    on_for_s_ += ctx.dt_s;
    if (remaining_s_ <= 0) {
      on_ = !on_;
      on_for_s_ = 0;
      bool day = ctx.local_hour > 7 && ctx.local_hour < 23;
      remaining_s_ = on_ ? rng_.Uniform(600, 1200) : rng_.Uniform(day ? 1200 : 1800, 2700);
    }
    double p;
    if (on_) {
      // Start spike, settling within a minute; the load falls slowly as the box cools.
      p = rated_w_ * (1 + 1.5 * std::exp(-on_for_s_ / 8.0)) *
          (1.05 - 0.1 * std::min(1.0, on_for_s_ / 1200));
      p += rng_.Normal() * 1.5;
    } else {
      p = 1.8 + rng_.Uniform(0, 0.4);
    }
    p = RoundTo(std::max(p, 0.0), 1);
    out->Add("power_w", p);
    return p;
  }
  double MeanPowerW(const HomeLocation&, double) const override {
    // On 900 s on average; off 1950 s by day (16 h), 2250 s at night (8 h).
    const double on_s = 900, off_s = (16 * 1950.0 + 8 * 2250.0) / 24;
    const double duty = on_s / (on_s + off_s);
    return rated_w_ * duty + 2.0 * (1 - duty);
  }

 private:
  double rated_w_;
  bool on_;
  double remaining_s_;
  double on_for_s_ = 600;
};

class Hvac : public Appliance {
 public:
  // The thermal model: the house leaks towards outdoor with this time constant, gains
  // kGainsCPerHour from people and appliances, and the heat pump moves kPumpCPerHour. It
  // holds 20.5 °C down to −30 °C outdoor ((20.5 + 30) / 12 − 0.3 < 4.5 °C/h) and 24.5 °C
  // beyond 45 °C (found by a black-box test: with 4 h and 2.5 °C/h a heating home settled
  // at outdoor + 11 °C, ~8 °C indoor in a St John's or Chicago winter).
  static constexpr double kLeakHours = 12.0;
  static constexpr double kGainsCPerHour = 0.3;
  static constexpr double kPumpCPerHour = 4.5;
  static constexpr double kStandbyW = 7;

  explicit Hvac(uint64_t seed) : Appliance(seed) {
    indoor_c_ = rng_.Uniform(19.5, 23.5);
    capacity_w_ = rng_.Uniform(1800, 3200);
  }
  double Step(const StepContext& ctx, Reading* out) override {
    const double hours = ctx.dt_s / 3600;
    indoor_c_ += (ctx.outdoor_c - indoor_c_) * hours / kLeakHours + kGainsCPerHour * hours;
    const double diff = ctx.outdoor_c - indoor_c_;
    if (ctx.outdoor_c < 19) {
      if (indoor_c_ < 20.0) mode_ = 1;
      if (indoor_c_ > 21.0) mode_ = 0;
    } else if (ctx.outdoor_c > 24) {
      if (indoor_c_ > 25.0) mode_ = -1;
      if (indoor_c_ < 24.0) mode_ = 0;
    } else {
      mode_ = 0;
    }
    double p = kStandbyW - 1 + rng_.Uniform(0, 2);  // controller and standby fan
    if (mode_ != 0) {
      p = capacity_w_ * Load(diff) + rng_.Normal() * 15;
      indoor_c_ += mode_ * kPumpCPerHour * hours;
    }
    p = RoundTo(std::max(p, 0.0), 1);
    out->Add("power_w", p);
    out->Add("indoor_temp_c", RoundTo(indoor_c_, 2));
    return p;
  }
  double MeanPowerW(const HomeLocation& loc, double season) const override {
    // The duty that holds the setpoint's middle (20.5 °C heating, 24.5 °C cooling) at each
    // outdoor temperature of a grid over the day and the weather.
    double sum = 0;
    int n = 0;
    for (int d = 0; d < 12; ++d) {
      for (double weather : {-1.7, 0.0, 1.7}) {
        const double outdoor = loc.mean_temp_c + loc.season_amp_c * season +
                               loc.daily_swing_c * std::cos(kPi * d / 6) + weather;
        double need = 0, held = 20.5;
        if (outdoor < 19) {
          need = (20.5 - outdoor) / kLeakHours - kGainsCPerHour;
        } else if (outdoor > 24) {
          need = (outdoor - 24.5) / kLeakHours + kGainsCPerHour;
          held = 24.5;
        }
        const double duty = std::clamp(need / kPumpCPerHour, 0.0, 1.0);
        sum += duty * capacity_w_ * Load(outdoor - held) + (1 - duty) * kStandbyW;
        ++n;
      }
    }
    return sum / n;
  }

 private:
  // A heat pump works harder the larger the indoor/outdoor difference (COP falls).
  static double Load(double diff) { return std::clamp(0.45 + std::abs(diff) / 30.0, 0.45, 1.0); }

  double indoor_c_;
  double capacity_w_;
  int mode_ = 0;  // 1 heat, -1 cool
};

// Sessions are a function of the local day (so a run that starts mid-session sees it): one
// on ~35 % of evenings (2–3 a week), 6–30 kWh each — ~6.3 kWh a day on average, a car
// driven ~35 km a day (until session 23 a session on 65 % of days of 8–35 kWh, ~14 kWh a
// day: 5,100 kWh a year, three times a typical EV's).
class EvCharger : public Appliance {
 public:
  explicit EvCharger(uint64_t seed) : Appliance(seed) {
    charger_w_ = rng_.Uniform() < 0.5 ? 7400 : 11000;
  }
  double Step(const StepContext& ctx, Reading* out) override {
    double p = 0;
    for (int64_t back = 0; back <= 1 && p == 0; ++back) {
      int64_t day = ctx.local_day - back;
      uint64_t d = static_cast<uint64_t>(day);
      if (HashUnit(seed_, 1, d) > kSessionDays) continue;  // no session that day
      double start_h = 17.5 + 5 * HashUnit(seed_, 2, d);
      double need_wh = kLeastWh + kSpreadWh * HashUnit(seed_, 3, d);
      double full_h = need_wh / charger_w_;
      double h = ctx.local_hour + 24.0 * static_cast<double>(back) - start_h;
      if (h < 0 || h >= full_h + 1.0 / 6) continue;
      double taper = h <= full_h - 1.0 / 6 ? 1.0 : std::max(0.15, (full_h + 1.0 / 6 - h) * 3);
      p = charger_w_ * taper * (0.98 + 0.02 * rng_.Uniform());
    }
    p = RoundTo(p, 0);
    out->Add("power_w", p);
    return p;
  }
  double MeanPowerW(const HomeLocation&, double) const override {
    return kSessionDays * (kLeastWh + kSpreadWh / 2) / 24;  // 18 kWh a session
  }

 private:
  static constexpr double kSessionDays = 0.35;
  static constexpr double kLeastWh = 6000, kSpreadWh = 24000;
  double charger_w_;
};

class Washer : public Appliance {
 public:
  explicit Washer(uint64_t seed) : Appliance(seed) {}
  double Step(const StepContext& ctx, Reading* out) override {
    double p = 0.8;
    for (int64_t back = 0; back <= 1; ++back) {
      uint64_t d = static_cast<uint64_t>(ctx.local_day - back);
      int programs = static_cast<int>(HashUnit(seed_, 4, d) * 2.6);  // 0, 1 or 2
      for (int k = 0; k < programs; ++k) {
        double start_h = 7 + 14 * HashUnit(seed_, 5 + static_cast<uint64_t>(k), d);
        double minute = (ctx.local_hour + 24.0 * static_cast<double>(back) - start_h) * 60;
        if (minute < 0 || minute >= 90) continue;
        if (minute < 4)
          p = 15;
        else if (minute < 19)
          p = 2000 + rng_.Normal() * 20;
        else if (minute < 59)
          p = std::fmod(minute, 1.0) < 0.5 ? 420 : 110;
        else if (minute < 79)
          p = 150 + rng_.Uniform(0, 30);
        else
          p = 450 + rng_.Uniform(0, 60);
      }
    }
    p = RoundTo(std::max(p, 0.0), 1);
    out->Add("power_w", p);
    return p;
  }
  double MeanPowerW(const HomeLocation&, double) const override {
    // 0.85 programs a day (0, 1, 2 with p = 1/2.6, 1/2.6, 0.6/2.6) of ~0.82 kWh each.
    const double program_wh = (4 * 15 + 15 * 2000 + 40 * 265 + 20 * 165 + 11 * 480) / 60.0;
    return 0.8 + (1 + 2 * 0.6) / 2.6 * program_wh / 24;
  }
};

class Lighting : public Appliance {
 public:
  explicit Lighting(uint64_t seed) : Appliance(seed) { scale_ = rng_.Uniform(0.6, 1.6); }
  double Step(const StepContext& ctx, Reading* out) override {
    const double h = ctx.local_hour;
    double level;
    if (h < 6)
      level = 5;
    else if (h < 8.5)
      level = 110;
    else if (h < 17)
      level = 25;
    else if (h < 23.5)
      level = 190;
    else
      level = 40;
    if (ctx.sun_sin_elev < 0.05 && h >= 6 && h < 23.5) level *= 1.4;  // dark outside
    uint64_t slot = static_cast<uint64_t>(ctx.t_ms / 600'000);
    double switched = 0.5 + HashUnit(seed_, 9, slot);
    double p = RoundTo(level * scale_ * switched, 1);
    out->Add("power_w", p);
    return p;
  }
  double MeanPowerW(const HomeLocation&, double) const override {
    // The daily profile's mean (1772.5 Wh / 24 h), about a seventh of it dark outside.
    return (6 * 5 + 2.5 * 110 + 8.5 * 25 + 6.5 * 190 + 0.5 * 40) / 24 * 1.06 * scale_;
  }

 private:
  double scale_;
};

// A 200 L tank with a 3 or 4.5 kW element and a 52–60 °C thermostat. Hot water is drawn
// in 5-minute slots (25 °C/h: ~0.5 kWh a slot), about three slots a resident a day (a
// shower of two slots, in the local morning or evening, plus kitchen and washing), for 1–5
// residents; the tank loses 0.4 °C/h (~2.2 kWh a day). So 3.6–9.5 kWh a day by household
// size, ~6.5 on average (found by a black-box test: 45 % of the peak slots drew, ~41
// showers and ~27 kWh a day in every home, half to four fifths of the home's consumption).
class WaterHeater : public Appliance {
 public:
  explicit WaterHeater(uint64_t seed) : Appliance(seed) {
    tank_c_ = rng_.Uniform(52, 60);
    element_w_ = rng_.Uniform() < 0.5 ? 3000 : 4500;
    residents_ = 1 + static_cast<int>(rng_.Next() % 5);
  }
  double Step(const StepContext& ctx, Reading* out) override {
    const double hours = ctx.dt_s / 3600;
    const double h = ctx.local_hour;
    double draw_c_per_h = 0;
    bool peak = (h >= 6 && h < 8.5) || (h >= 19 && h < 22);
    uint64_t slot = static_cast<uint64_t>(ctx.t_ms / 300'000);
    if (HashUnit(seed_, 7, slot) < DrawChance(peak)) draw_c_per_h = kDrawCPerH;
    tank_c_ -= (kStandbyCPerH + draw_c_per_h) * hours;  // standby loss plus draws
    if (tank_c_ < 52) heating_ = true;
    if (tank_c_ > 60) heating_ = false;
    double p = 0.5;
    if (heating_) {
      p = element_w_ * (0.99 + 0.02 * rng_.Uniform());
      // 200 litres: 4186 J/(kg·K) × 200 kg.
      tank_c_ += p * ctx.dt_s / (4186.0 * 200);
    }
    p = RoundTo(p, 1);
    out->Add("power_w", p);
    out->Add("tank_temp_c", RoundTo(tank_c_, 2));
    return p;
  }
  double MeanPowerW(const HomeLocation&, double) const override {
    // The element replaces what the tank loses: standby, and a slot's draw (25 °C/h for
    // 5 minutes) in DrawChance of the 66 slots of the 5.5 peak hours and of the other 222.
    const double slots = DrawChance(true) * 66 + DrawChance(false) * 222;
    const double c_per_day = kStandbyCPerH * 24 + kDrawCPerH / 12 * slots;
    return 0.5 + c_per_day * 4186.0 * 200 / 3600 / 24;
  }

 private:
  static constexpr double kDrawCPerH = 25;
  static constexpr double kStandbyCPerH = 0.4;
  // A slot's chance of a draw: per resident 2.2 of the 66 peak slots a day (a shower and
  // more) and 0.8 of the 222 others.
  double DrawChance(bool peak) const { return residents_ * (peak ? 2.2 / 66 : 0.8 / 222); }

  double tank_c_;
  double element_w_;
  int residents_;
  bool heating_ = false;
};

class Solar : public Appliance {
 public:
  explicit Solar(uint64_t seed) : Appliance(seed) { peak_w_ = rng_.Uniform(3000, 9000); }
  double Step(const StepContext& ctx, Reading* out) override {
    double p = 0;
    if (ctx.sun_sin_elev > 0) {
      // Clouds: the day's cloudiness, with passing clouds interpolated over 5 minutes.
      uint64_t day = static_cast<uint64_t>(ctx.local_day);
      double cloudiness = HashUnit(seed_, 21, day);
      double knots = static_cast<double>(ctx.t_ms) / 300'000.0;
      int64_t k = static_cast<int64_t>(std::floor(knots));
      double f = knots - static_cast<double>(k);
      double c0 = HashUnit(seed_, 22, static_cast<uint64_t>(k));
      double c1 = HashUnit(seed_, 22, static_cast<uint64_t>(k + 1));
      double cloud = 1 - cloudiness * 0.8 * (c0 + (c1 - c0) * f);
      p = peak_w_ * 0.85 * std::pow(ctx.sun_sin_elev, 1.2) * cloud;
    }
    p = RoundTo(p, 1);
    out->Add("solar_w", p);
    return -p;
  }
  double MeanPowerW(const HomeLocation&, double) const override { return 0; }  // produces

 private:
  double peak_w_;
};

std::unique_ptr<Appliance> MakeAppliance(ApplianceKind kind, uint64_t seed) {
  switch (kind) {
    case ApplianceKind::kFridge:
      return std::make_unique<Fridge>(seed);
    case ApplianceKind::kHvac:
      return std::make_unique<Hvac>(seed);
    case ApplianceKind::kEv:
      return std::make_unique<EvCharger>(seed);
    case ApplianceKind::kWasher:
      return std::make_unique<Washer>(seed);
    case ApplianceKind::kLighting:
      return std::make_unique<Lighting>(seed);
    case ApplianceKind::kWaterHeater:
      return std::make_unique<WaterHeater>(seed);
    case ApplianceKind::kSolar:
      return std::make_unique<Solar>(seed);
    case ApplianceKind::kMeter:
      break;
  }
  return nullptr;
}

}  // namespace

Home::Home(int index, int devices, uint64_t seed, std::string_view prefix)
    : index_(index),
      owner_id_(fmt::format("{}-owner-{:04d}", prefix, index)),
      location_(HomeLocations()[static_cast<size_t>(index) % HomeLocations().size()]),
      meter_rng_(Mix(seed, static_cast<uint64_t>(index), 0)) {
  zone_ = date::locate_zone(location_.timezone);
  weather_seed_ = Mix(seed, static_cast<uint64_t>(index), 2);
  base_load_w_ = meter_rng_.Uniform(40, 150);
  meter_base_wh_ = RoundTo(meter_rng_.Uniform(1000, 60000), 3);
  // Fridge first, then a per-home shuffle of the rest.
  std::vector<ApplianceKind> kinds = {ApplianceKind::kHvac,   ApplianceKind::kSolar,
                                      ApplianceKind::kEv,     ApplianceKind::kLighting,
                                      ApplianceKind::kWasher, ApplianceKind::kWaterHeater};
  SimRandom shuffle(Mix(seed, static_cast<uint64_t>(index), 1));
  for (size_t i = kinds.size(); i > 1; --i) {
    std::swap(kinds[i - 1], kinds[shuffle.Next() % i]);
  }
  kinds.insert(kinds.begin(), ApplianceKind::kFridge);
  devices = std::clamp(devices, 1, kMaxAppliances + 1);
  devices_.push_back({fmt::format("{}-{:04d}", prefix, index), ApplianceKind::kMeter});
  for (int i = 0; i + 1 < devices; ++i) {
    ApplianceKind kind = kinds[static_cast<size_t>(i)];
    devices_.push_back({fmt::format("{}-{:04d}-{}", prefix, index, ApplianceKindName(kind)), kind});
    appliances_.push_back(MakeAppliance(
        kind, Mix(seed, static_cast<uint64_t>(index), 10 + static_cast<uint64_t>(i))));
    if (kind == ApplianceKind::kSolar) has_solar_ = true;
  }
  readings_.resize(devices_.size());
  // The mean over the year as a0 + a1·cos θ + a2·cos 2θ, θ = the season's phase (θ = 0 at
  // midsummer in the north, midwinter in the south): fitted on 24 points of the year.
  const double hemisphere = location_.latitude >= 0 ? 1 : -1;
  constexpr int kPoints = 24;
  for (int k = 0; k < kPoints; ++k) {
    const double theta = 2 * kPi * k / kPoints;
    double mean = base_load_w_;
    for (const auto& appliance : appliances_) {
      mean += appliance->MeanPowerW(location_, hemisphere * std::cos(theta));
    }
    season_w_[0] += mean / kPoints;
    season_w_[1] += 2 * mean * std::cos(theta) / kPoints;
    season_w_[2] += 2 * mean * std::cos(2 * theta) / kPoints;
  }
}

double Home::CounterReadingAt(int64_t t_ms) const {
  // The integral of the seasonal mean from the epoch to t_ms (as OutdoorTemp's season:
  // θ = 2π (day − 0.5 − 201) / year, day counted from 1970).
  constexpr double kYearHours = 365.2425 * 24;
  auto theta = [](int64_t ms) {
    return 2 * kPi * (static_cast<double>(ms) / 86'400'000.0 - 0.5 - 201) / 365.2425;
  };
  const int64_t t = std::max(t_ms, kCounterEpochMs);
  const double hours = static_cast<double>(t - kCounterEpochMs) / 3.6e6;
  const double a = theta(t), e = theta(kCounterEpochMs);
  return meter_base_wh_ + season_w_[0] * hours +
         season_w_[1] * kYearHours / (2 * kPi) * (std::sin(a) - std::sin(e)) +
         season_w_[2] * kYearHours / (4 * kPi) * (std::sin(2 * a) - std::sin(2 * e));
}

void Home::ResetMeterCounter() {
  meter_energy_wh_ = 0;
  counter_started_ = true;
}

Home::~Home() = default;

int64_t Home::UtcOffsetSeconds(int64_t t_ms) {
  if (t_ms < offset_valid_from_ms_ || t_ms >= offset_valid_to_ms_) {
    using namespace std::chrono;
    auto info = zone_->get_info(sys_seconds(seconds(t_ms / 1000)));
    offset_s_ = info.offset.count();
    offset_valid_from_ms_ = info.begin.time_since_epoch().count() * 1000;
    auto end_s = info.end.time_since_epoch().count();
    offset_valid_to_ms_ = end_s > INT64_MAX / 1000 ? INT64_MAX : end_s * 1000;
  }
  return offset_s_;
}

void Home::Step(int64_t t_ms) {
  StepContext ctx;
  ctx.t_ms = t_ms;
  ctx.dt_s = last_t_ms_ < 0 ? 0 : static_cast<double>(t_ms - last_t_ms_) / 1000;
  int64_t local_ms = t_ms + UtcOffsetSeconds(t_ms) * 1000;
  int64_t local_day = local_ms >= 0 ? local_ms / 86'400'000 : (local_ms - 86'399'999) / 86'400'000;
  ctx.local_day = local_day;
  ctx.local_hour = static_cast<double>(local_ms - local_day * 86'400'000) / 3'600'000.0;
  ctx.sun_sin_elev = SunSinElevation(location_, t_ms);
  ctx.outdoor_c = OutdoorTemp(location_, t_ms, ctx.local_hour, weather_seed_);

  double consumption = base_load_w_ * (0.95 + 0.1 * meter_rng_.Uniform());
  double solar = 0;
  for (size_t i = 0; i < appliances_.size(); ++i) {
    Reading& r = readings_[i + 1];
    r.size = 0;
    double p = appliances_[i]->Step(ctx, &r);
    if (p >= 0)
      consumption += p;
    else
      solar += -p;
  }
  consumption = RoundTo(consumption, 1);
  if (!counter_started_) {
    meter_energy_wh_ = CounterReadingAt(t_ms);
    counter_started_ = true;
  } else if (last_t_ms_ >= 0) {
    meter_energy_wh_ += (consumption + last_meter_power_w_) / 2 * ctx.dt_s / 3600;
  }
  last_meter_power_w_ = consumption;
  last_t_ms_ = t_ms;
  Reading& m = readings_[0];
  m.size = 0;
  m.Add("power_w", consumption);
  if (has_solar_) {
    m.Add("grid_w", RoundTo(consumption - solar, 1));
  }
  m.Add("voltage_v", RoundTo(location_.mains_v * (1 + 0.01 * meter_rng_.Normal()), 1));
  m.Add("energy_wh", RoundTo(meter_energy_wh_, 3));
}

}  // namespace joule::app::sim

// Golden scenarios: runs every tests/scenarios/*.txt through a WindowEngine and checks
// the expected records. The format is described in tests/scenarios/README.md.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/time_format.h"
#include "model/aggregate_record.h"
#include "stream/window_engine.h"

namespace joule::stream {
namespace {

std::vector<std::string> ListScenarios() {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(JOULE_SCENARIO_DIR)) {
    if (e.path().extension() == ".txt") out.push_back(e.path().stem().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> Split(const std::string& line) {
  std::vector<std::string> out;
  std::istringstream in(line);
  std::string tok;
  while (in >> tok) {
    if (tok[0] == '#') break;
    out.push_back(tok);
  }
  return out;
}

class MapTimezones : public TimezoneProvider {
 public:
  std::optional<std::string> TimezoneOf(std::string_view device_id) override {
    ++calls;
    auto it = zones.find(std::string(device_id));
    return it == zones.end() ? "UTC" : it->second;
  }
  std::map<std::string, std::string> zones;
  int calls = 0;
};

struct Collector : RecordSink {
  void Emit(const model::AggregateRecord& r) override { all.push_back(r); }
  std::vector<model::AggregateRecord> all;
};

class Runner {
 public:
  explicit Runner(std::string name) : name_(std::move(name)) {}

  void Run() {
    std::ifstream in(std::string(JOULE_SCENARIO_DIR) + "/" + name_ + ".txt");
    ASSERT_TRUE(in.good()) << name_;
    std::string line;
    while (std::getline(in, line)) {
      ++line_no_;
      auto tok = Split(line);
      if (tok.empty()) continue;
      SCOPED_TRACE(name_ + ".txt:" + std::to_string(line_no_) + ": " + line);
      Command(tok);
      if (::testing::Test::HasFatalFailure()) return;
    }
  }

 private:
  int64_t Time(const std::string& s) {
    int64_t t = 0;
    if (s.find('T') != std::string::npos) {
      EXPECT_TRUE(ParseRfc3339(s, &t)) << s;
      return t;
    }
    int h = 0, m = 0;
    double sec = 0;
    char c1 = 0, c2 = 0;
    std::istringstream in(s);
    in >> h >> c1 >> m;
    if (in >> c2) in >> sec;
    return date_ns_ + h * kNanosPerHour + m * kNanosPerMinute +
           static_cast<int64_t>(std::llround(sec * 1e9));
  }
  int64_t Duration(const std::string& s) {
    if (!s.empty() && s[0] == '-') return -Duration(s.substr(1));
    auto r = ParseDurationNanos(s);
    EXPECT_TRUE(r.ok()) << s;
    return r.ok() ? *r : 0;
  }
  void Ensure() {
    if (!engine_) engine_ = std::make_unique<WindowEngine>(options_, &tz_);
  }
  int64_t NowFor(int64_t event_t) const { return fixed_now_ ? fixed_now_ : event_t + lag_; }

  void Feed(const std::string& dev, int64_t t, const std::vector<model::MetricSample>& metrics,
            const std::string& id, int64_t now, int64_t received) {
    Ensure();
    model::Event e;
    e.device_id = dev;
    e.timestamp_ns = t;
    e.received_at_ns = received;
    e.metrics = metrics;
    e.event_id = id;
    Process(e, now);
  }
  void Process(const model::Event& e, int64_t now) {
    Collector c;
    engine_->Process(e, now, &c);
    Take(c);
  }
  void Take(Collector& c) {
    for (auto& r : c.all) {
      auto key = Key(r);
      auto it = latest_.find(key);
      if (it != latest_.end()) {
        EXPECT_GT(r.version, it->second.version) << "versions must increase: " << RecordToJson(r);
      }
      latest_[key] = r;
      if (!r.final && ignore_open_) continue;
      unconsumed_.push_back(r);
    }
  }
  static std::string Key(const model::AggregateRecord& r) {
    return r.device_id + "/" + std::to_string(static_cast<int>(r.resolution)) + "/" +
           std::to_string(r.window_start_ns);
  }

  void Command(const std::vector<std::string>& tok) {
    const std::string& cmd = tok[0];
    if (cmd == "option") {
      for (size_t i = 1; i < tok.size(); ++i) {
        auto eq = tok[i].find('=');
        std::string k = tok[i].substr(0, eq), v = tok[i].substr(eq + 1);
        int64_t d = Duration(v);
        if (k == "window")
          options_.window_ns = d;
        else if (k == "ooo")
          options_.out_of_orderness_ns = d;
        else if (k == "lateness")
          options_.allowed_lateness_ns = d;
        else if (k == "idle")
          options_.idle_timeout_ns = d;
        else if (k == "early")
          options_.early_fire_interval_ns = d;
        else if (k == "max_gap")
          options_.max_gap_ns = d;
        else if (k == "dedup")
          options_.dedup_horizon_ns = d;
        else
          ADD_FAILURE() << "unknown option " << k;
      }
      ASSERT_FALSE(engine_) << "options after the first event";
    } else if (cmd == "kind") {
      auto eq = tok[1].find('=');
      std::string kind = tok[1].substr(eq + 1);
      options_.kinds[tok[1].substr(0, eq)] = kind == "power"     ? model::MetricKind::kPower
                                             : kind == "counter" ? model::MetricKind::kCounter
                                                                 : model::MetricKind::kGauge;
    } else if (cmd == "tz") {
      tz_.zones[tok[1]] = tok[2];
    } else if (cmd == "device") {
      device_ = tok[1];
    } else if (cmd == "date") {
      int64_t t;
      ASSERT_TRUE(ParseRfc3339(tok[1] + "T00:00:00Z", &t));
      date_ns_ = t;
    } else if (cmd == "lag") {
      fixed_now_ = 0;
      lag_ = Duration(tok[1]);
    } else if (cmd == "now") {  // processing time fixed, for uploads of history
      fixed_now_ = Time(tok[1]);
    } else if (cmd == "ignore_open") {
      ignore_open_ = tok[1] == "on";
    } else if (cmd == "event") {
      Event(tok);
    } else if (cmd == "series") {
      Series(tok);
    } else if (cmd == "tick") {
      Ensure();
      Collector c;
      int64_t now = Time(tok[1]);
      if (fixed_now_) fixed_now_ = now;
      engine_->Tick(now, &c);
      Take(c);
    } else if (cmd == "ticks") {  // ticks FROM TO STEP
      Ensure();
      for (int64_t t = Time(tok[1]); t <= Time(tok[2]); t += Duration(tok[3])) {
        Collector c;
        engine_->Tick(t, &c);
        Take(c);
      }
    } else if (cmd == "expect") {
      Expect(tok);
    } else if (cmd == "expect_none") {
      for (const auto& r : unconsumed_) {
        if (tok.size() > 1 && ResolutionName(r) != tok[1] &&
            !(tok[1] == "1m" && r.resolution == model::Resolution::kBase)) {
          continue;
        }
        ADD_FAILURE() << "unexpected record " << RecordToJson(r);
      }
    } else if (cmd == "clear") {
      unconsumed_.clear();
    } else if (cmd == "latest") {
      Latest(tok);
    } else if (cmd == "absent") {
      for (const auto& [k, r] : latest_) {
        EXPECT_FALSE(Matches(r, tok[1], tok[2])) << "unexpected " << RecordToJson(r);
      }
    } else if (cmd == "stats") {
      Ensure();
      auto s = engine_->stats();
      for (size_t i = 1; i < tok.size(); ++i) {
        auto eq = tok[i].find('=');
        std::string k = tok[i].substr(0, eq);
        uint64_t v = std::stoull(tok[i].substr(eq + 1));
        uint64_t got = k == "events"         ? s.events
                       : k == "duplicates"   ? s.duplicates
                       : k == "late_updates" ? s.late_updates
                       : k == "late_dropped" ? s.late_dropped
                       : k == "out_of_order" ? s.out_of_order
                       : k == "devices"      ? s.devices
                       : k == "open_windows" ? s.open_windows
                                             : ~0ULL;
        EXPECT_EQ(got, v) << k;
      }
    } else if (cmd == "health") {
      Ensure();
      WindowEngine::DeviceHealth h;
      ASSERT_TRUE(engine_->Health(tok[1], &h));
      for (size_t i = 2; i < tok.size(); ++i) {
        auto eq = tok[i].find('=');
        std::string k = tok[i].substr(0, eq), v = tok[i].substr(eq + 1);
        if (k == "skew")
          EXPECT_EQ(h.clock_skew_ns, Duration(v));
        else if (k == "watermark")
          EXPECT_EQ(FormatRfc3339Millis(h.watermark_ns), FormatRfc3339Millis(Time(v)));
        else if (k == "late_updates")
          EXPECT_EQ(h.late_updates, std::stoull(v));
        else if (k == "late_dropped")
          EXPECT_EQ(h.late_dropped, std::stoull(v));
        else if (k == "duplicates")
          EXPECT_EQ(h.duplicates, std::stoull(v));
        else if (k == "events")
          EXPECT_EQ(h.events, std::stoull(v));
        else
          ADD_FAILURE() << "unknown health field " << k;
      }
    } else if (cmd == "checkpoint") {  // save, restore into a fresh engine, continue
      Ensure();
      std::string bytes;
      ASSERT_TRUE(engine_->SaveState(&bytes).ok());
      engine_ = std::make_unique<WindowEngine>(options_, &tz_);
      auto st = engine_->RestoreState(bytes);
      ASSERT_TRUE(st.ok()) << st.ToString();
    } else {
      FAIL() << "unknown command " << cmd;
    }
  }

  std::vector<model::MetricSample> ParseMetrics(const std::vector<std::string>& tok, size_t from,
                                                std::string* id, std::string* dev, int64_t* now,
                                                int64_t* recv) {
    std::vector<model::MetricSample> ms;
    for (size_t i = from; i < tok.size(); ++i) {
      auto eq = tok[i].find('=');
      std::string k = tok[i].substr(0, eq), v = tok[i].substr(eq + 1);
      if (k == "id")
        *id = v;
      else if (k == "dev")
        *dev = v;
      else if (k == "now")
        *now = Time(v);
      else if (k == "recv")
        *recv = Time(v);
      else
        ms.push_back({k, std::stod(v)});
    }
    return ms;
  }

  void Event(const std::vector<std::string>& tok) {
    int64_t t = Time(tok[1]);
    std::string id, dev = device_;
    int64_t now = 0, recv = 0;
    auto ms = ParseMetrics(tok, 2, &id, &dev, &now, &recv);
    if (now == 0) now = NowFor(t);
    if (recv == 0) recv = now;
    Feed(dev, t, ms, id, now, recv);
  }

  // series FROM TO STEP metric=A[+Bi] ... : events at FROM + i*STEP < TO.
  void Series(const std::vector<std::string>& tok) {
    int64_t from = Time(tok[1]), to = Time(tok[2]), step = Duration(tok[3]);
    std::string dev = device_;
    struct Lin {
      std::string name;
      double a, b;
    };
    std::vector<Lin> lins;
    bool ticks = false;
    for (size_t i = 4; i < tok.size(); ++i) {
      auto eq = tok[i].find('=');
      std::string k = tok[i].substr(0, eq), v = tok[i].substr(eq + 1);
      if (k == "dev") {
        dev = v;
        continue;
      }
      if (k == "ticks") {  // ticks=on: Tick(now) after every event
        ticks = v == "on";
        continue;
      }
      Lin l{k, 0, 0};
      size_t pos = v.find_first_of("+-", 1);
      if (pos == std::string::npos) {
        l.a = std::stod(v);
      } else {
        l.a = std::stod(v.substr(0, pos));
        std::string b = v.substr(pos);
        b.pop_back();  // 'i'
        l.b = std::stod(b);
      }
      lins.push_back(l);
    }
    int64_t i = 0;
    for (int64_t t = from; t < to; t += step, ++i) {
      std::vector<model::MetricSample> ms;
      for (const auto& l : lins) ms.push_back({l.name, l.a + l.b * static_cast<double>(i)});
      int64_t now = NowFor(t);
      Feed(dev, t, ms, "", now, now);
      if (ticks) {
        Collector c;
        engine_->Tick(now, &c);
        Take(c);
      }
    }
  }

  bool Matches(const model::AggregateRecord& r, const std::string& res, const std::string& start) {
    if (res == "1d") return r.resolution == model::Resolution::kDay && r.local_date == start;
    if (res == "1h") {
      if (r.resolution != model::Resolution::kHour) return false;
    } else if (r.resolution != model::Resolution::kBase) {
      return false;
    }
    return r.window_start_ns == Time(start);
  }

  void CheckFields(const model::AggregateRecord& r, const std::vector<std::string>& tok,
                   size_t from) {
    std::string json = RecordToJson(r);
    for (size_t i = from; i < tok.size(); ++i) {
      const std::string& f = tok[i];
      if (f == "final") {
        EXPECT_TRUE(r.final) << json;
        continue;
      }
      if (f == "open") {
        EXPECT_FALSE(r.final) << json;
        continue;
      }
      if (f[0] == 'v' && std::isdigit(static_cast<unsigned char>(f[1]))) {
        EXPECT_EQ(r.version, std::stoull(f.substr(1))) << json;
        continue;
      }
      if (f[0] == '-') {
        EXPECT_EQ(r.FindMetric(f.substr(1)), nullptr) << json;
        continue;
      }
      auto eq = f.find('=');
      ASSERT_NE(eq, std::string::npos) << f;
      std::string k = f.substr(0, eq), v = f.substr(eq + 1);
      if (k == "count") {
        EXPECT_EQ(r.count, std::stoull(v)) << json;
        continue;
      }
      if (k == "tz") {
        EXPECT_EQ(r.timezone, v) << json;
        continue;
      }
      if (k == "start" || k == "end") {
        int64_t want = Time(v);
        EXPECT_EQ(FormatRfc3339Millis(k == "start" ? r.window_start_ns : r.window_end_ns),
                  FormatRfc3339Millis(want))
            << json;
        continue;
      }
      auto dot = k.find('.');
      ASSERT_NE(dot, std::string::npos) << "field must be metric.stat: " << k;
      std::string metric = k.substr(0, dot), stat = k.substr(dot + 1);
      const model::MetricAggregate* m = r.FindMetric(metric);
      ASSERT_NE(m, nullptr) << metric << " missing in " << json;
      double window = static_cast<double>(r.window_end_ns - r.window_start_ns);
      double got;
      if (stat == "count")
        got = static_cast<double>(m->count);
      else if (stat == "min")
        got = m->min;
      else if (stat == "max")
        got = m->max;
      else if (stat == "sum")
        got = m->sum;
      else if (stat == "avg")
        got = m->sum / static_cast<double>(m->count);
      else if (stat == "first")
        got = m->first;
      else if (stat == "last")
        got = m->last;
      else if (stat == "energy_wh")
        got = m->energy_wh;
      else if (stat == "coverage")
        got = static_cast<double>(m->covered_ns) / window;
      else if (stat == "covered_s")
        got = static_cast<double>(m->covered_ns) / 1e9;
      else if (stat == "twa")
        got = m->energy_wh * 3600.0 / (static_cast<double>(m->covered_ns) / 1e9);
      else if (stat == "delta")
        got = m->delta;
      else if (stat == "resets")
        got = static_cast<double>(m->resets);
      else {
        ADD_FAILURE() << "unknown stat " << stat;
        continue;
      }
      double want = std::stod(v);
      EXPECT_NEAR(got, want, 1e-9 * std::max(1.0, std::fabs(want))) << k << " in " << json;
    }
  }

  void Expect(const std::vector<std::string>& tok) {
    bool want_final = std::find(tok.begin(), tok.end(), "final") != tok.end();
    bool want_open = std::find(tok.begin(), tok.end(), "open") != tok.end();
    std::string dev = device_;
    for (const auto& f : tok) {
      if (f.rfind("dev=", 0) == 0) dev = f.substr(4);
    }
    for (auto it = unconsumed_.begin(); it != unconsumed_.end(); ++it) {
      if (it->device_id != dev || !Matches(*it, tok[1], tok[2])) continue;
      if (want_final && !it->final) continue;
      if (want_open && it->final) continue;
      auto rec = *it;
      unconsumed_.erase(it);
      std::vector<std::string> fields;
      for (size_t i = 3; i < tok.size(); ++i) {
        if (tok[i].rfind("dev=", 0) != 0) fields.push_back(tok[i]);
      }
      CheckFields(rec, fields, 0);
      return;
    }
    std::string have;
    for (const auto& r : unconsumed_) have += "\n  " + RecordToJson(r);
    ADD_FAILURE() << "no record " << tok[1] << " " << tok[2] << "; unconsumed:" << have;
  }

  void Latest(const std::vector<std::string>& tok) {
    std::string dev = device_;
    std::vector<std::string> fields;
    for (size_t i = 3; i < tok.size(); ++i) {
      if (tok[i].rfind("dev=", 0) == 0) {
        dev = tok[i].substr(4);
      } else {
        fields.push_back(tok[i]);
      }
    }
    for (const auto& [k, r] : latest_) {
      if (r.device_id == dev && Matches(r, tok[1], tok[2])) {
        CheckFields(r, fields, 0);
        return;
      }
    }
    ADD_FAILURE() << "no record " << tok[1] << " " << tok[2];
  }

  std::string name_;
  int line_no_ = 0;
  EngineOptions options_;
  MapTimezones tz_;
  std::unique_ptr<WindowEngine> engine_;
  std::string device_ = "dev-1";
  int64_t date_ns_ = 0;
  int64_t lag_ = kNanosPerSecond;
  int64_t fixed_now_ = 0;
  bool ignore_open_ = true;
  std::vector<model::AggregateRecord> unconsumed_;
  std::map<std::string, model::AggregateRecord> latest_;
};

class ScenarioTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ScenarioTest, Golden) { Runner(GetParam()).Run(); }

INSTANTIATE_TEST_SUITE_P(Scenarios, ScenarioTest, ::testing::ValuesIn(ListScenarios()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace joule::stream

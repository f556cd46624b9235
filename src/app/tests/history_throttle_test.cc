// HistoryThrottle against the throttle it replaced (an ordered map of every key, kept here
// verbatim as the reference): random streams of partial and final records of many devices,
// windows and resolutions, at random processing times with releases in between, must send
// the same records to history at every step (the order within a step may differ: history
// writes are versioned upserts), count the same superseded partials and know as many keys.
#include "app/history_throttle.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "common/clock.h"

namespace joule::app {
namespace {

class MapThrottle {
 public:
  explicit MapThrottle(int64_t interval) : partial_interval_ns_(interval) {}

  uint64_t Offer(const model::AggregateRecord& record, int64_t now_ns,
                 std::vector<model::AggregateRecord>* out) {
    uint64_t superseded = 0;
    if (partial_interval_ns_ <= 0) {
      out->push_back(record);
      return 0;
    }
    key_.assign(record.device_id);
    key_.push_back('\0');
    key_.push_back(static_cast<char>(record.resolution));
    char ws[sizeof record.window_start_ns];
    std::memcpy(ws, &record.window_start_ns, sizeof ws);
    key_.append(ws, sizeof ws);
    if (record.final) {
      if (!held_.empty()) {
        held_.erase(key_);
        const size_t prefix = record.device_id.size() + 1;
        for (auto it = held_.lower_bound(std::string_view(key_.data(), prefix));
             it != held_.end() && it->first.compare(0, prefix, key_, 0, prefix) == 0; ++it) {
          Held& h = it->second;
          if (!h.dirty) continue;
          out->push_back(std::move(h.record));
          h.dirty = false;
          h.written_ns = now_ns;
        }
      }
      out->push_back(record);
      return 0;
    }
    auto [it, inserted] = held_.try_emplace(key_);
    Held& h = it->second;
    if (inserted || now_ns - h.written_ns >= partial_interval_ns_) {
      if (h.dirty) ++superseded;
      h.written_ns = now_ns;
      h.dirty = false;
      out->push_back(record);
      return superseded;
    }
    if (h.dirty) ++superseded;
    h.record = record;
    h.dirty = true;
    return superseded;
  }

  void Release(int64_t now_ns, bool all, std::vector<model::AggregateRecord>* out) {
    for (auto it = held_.begin(); it != held_.end();) {
      Held& h = it->second;
      const bool due = now_ns - h.written_ns >= partial_interval_ns_;
      if (h.dirty && (due || all)) {
        out->push_back(std::move(h.record));
        h.dirty = false;
        h.written_ns = now_ns;
        ++it;
      } else if (!h.dirty && due) {
        it = held_.erase(it);
      } else {
        ++it;
      }
    }
  }
  size_t held() const { return held_.size(); }

 private:
  struct Held {
    int64_t written_ns = 0;
    bool dirty = false;
    model::AggregateRecord record;
  };
  int64_t partial_interval_ns_;
  std::string key_;
  std::map<std::string, Held, std::less<>> held_;
};

void SortByKey(std::vector<model::AggregateRecord>* v) {
  std::sort(v->begin(), v->end(), [](const auto& a, const auto& b) {
    return std::tie(a.device_id, a.resolution, a.window_start_ns, a.version, a.final) <
           std::tie(b.device_id, b.resolution, b.window_start_ns, b.version, b.final);
  });
}

void RunStream(int64_t interval, uint64_t seed, int devices) {
  HistoryThrottle throttle(interval);
  MapThrottle reference(interval);
  std::mt19937_64 rng(seed);
  int64_t now = 1'000 * kNanosPerSecond;
  // Per device and window: the version last emitted (the engine's versions only grow).
  std::map<std::tuple<int, int, int64_t>, uint64_t> versions;
  uint64_t superseded = 0, superseded_ref = 0, written = 0;
  std::vector<model::AggregateRecord> got, want;
  for (int step = 0; step < 60'000; ++step) {
    got.clear();
    want.clear();
    const uint64_t what = rng() % 100;
    if (what < 2) {
      const bool all = rng() % 4 == 0;
      throttle.Release(now, all, &got);
      reference.Release(now, all, &want);
    } else {
      model::AggregateRecord r;
      const int device = static_cast<int>(rng() % devices);
      const int res = static_cast<int>(rng() % 3);
      r.device_id = "dev-" + std::to_string(device);
      r.resolution = static_cast<model::Resolution>(res);
      // Mostly the current window of each resolution, sometimes an older one (late data).
      const int64_t width = res == 0 ? kNanosPerMinute : res == 1 ? kNanosPerHour : kNanosPerDay;
      int64_t ws = now / width * width;
      if (rng() % 8 == 0) ws -= width * static_cast<int64_t>(1 + rng() % 3);
      r.window_start_ns = ws;
      r.window_end_ns = ws + width;
      r.final = rng() % 6 == 0;
      r.version = ++versions[{device, res, ws}];
      r.count = rng() % 1000;
      r.metrics.resize(1 + rng() % 3);
      for (auto& m : r.metrics) m.sum = static_cast<double>(rng() % 10000);
      superseded += throttle.Offer(r, now, &got);
      superseded_ref += reference.Offer(r, now, &want);
    }
    SortByKey(&got);
    SortByKey(&want);
    ASSERT_EQ(got, want) << "step " << step;
    ASSERT_EQ(throttle.held(), reference.held()) << "step " << step;
    written += got.size();
    now += static_cast<int64_t>(rng() % (kNanosPerSecond / 2));  // processing time moves on
  }
  EXPECT_EQ(superseded, superseded_ref);
  EXPECT_GT(written, 0u);
  if (interval > 0) {
    EXPECT_GT(superseded, 0u);  // the stream did exercise holding and replacing
  }
  // Everything held goes out with `all`, and nothing stays dirty afterwards.
  got.clear();
  want.clear();
  throttle.Release(now, true, &got);
  reference.Release(now, true, &want);
  SortByKey(&got);
  SortByKey(&want);
  EXPECT_EQ(got, want);
  got.clear();
  throttle.Release(now, true, &got);
  EXPECT_TRUE(got.empty());
}

TEST(HistoryThrottleTest, SameHistoryWritesAsTheOrderedMapThrottle) {
  RunStream(60 * kNanosPerSecond, 1, 40);
  RunStream(10 * kNanosPerSecond, 2, 7);
  RunStream(3 * kNanosPerSecond, 3, 300);
}

TEST(HistoryThrottleTest, ZeroIntervalWritesEveryRecord) { RunStream(0, 4, 20); }

TEST(HistoryThrottleTest, HoldsReplacesAndReleases) {
  HistoryThrottle t(60 * kNanosPerSecond);
  std::vector<model::AggregateRecord> out;
  model::AggregateRecord hour;
  hour.device_id = "d";
  hour.resolution = model::Resolution::kHour;
  hour.version = 1;
  EXPECT_EQ(t.Offer(hour, 0, &out), 0u);  // first partial of the key: at once
  ASSERT_EQ(out.size(), 1u);
  hour.version = 2;
  EXPECT_EQ(t.Offer(hour, kNanosPerSecond, &out), 0u);  // held
  hour.version = 3;
  EXPECT_EQ(t.Offer(hour, 2 * kNanosPerSecond, &out), 1u);  // replaces the held one
  EXPECT_EQ(out.size(), 1u);
  t.Release(30 * kNanosPerSecond, false, &out);  // not due yet
  EXPECT_EQ(out.size(), 1u);
  model::AggregateRecord minute;
  minute.device_id = "d";
  minute.final = true;
  minute.version = 1;
  t.Offer(minute, 31 * kNanosPerSecond, &out);  // a final of the device releases the hour
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[1].version, 3u);
  EXPECT_EQ(out[1].resolution, model::Resolution::kHour);
  EXPECT_TRUE(out[2].final);
  EXPECT_EQ(t.held(), 1u);
  t.Release(91 * kNanosPerSecond, false, &out);  // quiet for the interval: forgotten
  EXPECT_EQ(t.held(), 0u);
  EXPECT_EQ(out.size(), 3u);
}

}  // namespace
}  // namespace joule::app

// GET /v1/devices/{id}/metrics/realtime through the real router and route code: windows the
// latest store lacks come from history (higher version wins per window), and the kept
// history answer (HistoryTailCache) never differs from reading the store: after random
// interleavings of history writes (older windows, newer versions, new windows), latest-store
// writes and retention, a route whose context has the attached RecordJsonCache answers byte
// for byte what a route without it (reading the store every time) answers.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <string>
#include <vector>

#include "api/api_context.h"
#include "api/auth.h"
#include "api/history_tail_cache.h"
#include "api/record_json_cache.h"
#include "api/routes.h"
#include "common/clock.h"
#include "net/router.h"
#include "store/history_memory/memory_history_store.h"
#include "store/memory/memory_latest_store.h"

namespace joule::api {
namespace {

using model::AggregateRecord;
using model::MetricAggregate;
using model::MetricKind;
using model::Resolution;

constexpr char kDevice[] = "plug-7";
constexpr int64_t kMinute = kNanosPerMinute;
constexpr int64_t kT0 = 1'764'000'000 * kNanosPerSecond;  // 2025-11-24, minute aligned

AggregateRecord Record(int64_t minute, uint64_t version, double seed) {
  AggregateRecord r;
  r.device_id = kDevice;
  r.resolution = Resolution::kBase;
  r.window_start_ns = kT0 + minute * kMinute;
  r.window_end_ns = r.window_start_ns + kMinute;
  r.version = version;
  r.final = version > 1;
  r.count = 6;
  r.metrics = {MetricAggregate{"power_w", MetricKind::kPower, 6, seed, seed + 1, 6 * seed, seed,
                               seed + 0.5, seed / 60, kMinute / 2, 0, 0}};
  return r;
}

struct Response {
  int status = 0;
  std::string body;
};

// One API context + router over shared stores; `json_cache` null = no HistoryTailCache reuse.
struct Api {
  Api(store::LatestStore* latest, store::HistoryStore* history, RecordJsonCache* json_cache)
      : auth("disabled", "", nullptr) {
    ctx.metrics = &metrics;
    ctx.auth = &auth;
    ctx.latest = latest;
    ctx.history = history;
    ctx.history_json_cache = json_cache;
    AddRealtimeRoutes(router, ctx);
  }
  Response Get(size_t windows) {
    net::HttpRequest req;
    req.method = "GET";
    req.path = std::string("/v1/devices/") + kDevice + "/metrics/realtime";
    req.query.emplace_back("windows", std::to_string(windows));
    Response out;
    router.Dispatch(req, net::Responder::FromCallback([&out](net::HttpResponse r) {
                      out.status = r.status;
                      out.body = std::move(r.body);
                    }));
    return out;
  }
  MetricsRegistry metrics;
  Authenticator auth;
  ApiContext ctx;
  net::Router router;
};

// The versions of the answer's records, in order.
std::vector<uint64_t> Versions(const std::string& body) {
  std::vector<uint64_t> out;
  size_t at = 0;
  while ((at = body.find("\"version\":", at)) != std::string::npos) {
    at += 10;
    out.push_back(std::stoull(body.substr(at)));
  }
  return out;
}

TEST(RealtimeRoutesTest, OlderWindowsComeFromHistoryAndFollowItsWrites) {
  ManualClock clock(kT0 + 10 * kMinute);
  store::MemoryHistoryStore history(store::HistoryRetention::Forever(), &clock);
  RecordJsonCache json_cache(1 << 20, nullptr);
  json_cache.Attach(&history);
  store::MemoryLatestStore latest;
  Api api(&latest, &history, &json_cache);

  // History: minutes 0..3; the latest store (after a restart): minutes 3 and 4, minute 3
  // with a lower version than history's (a replayed window).
  ASSERT_TRUE(
      history.Put({Record(0, 2, 1), Record(1, 2, 2), Record(2, 2, 3), Record(3, 7, 4)}).ok());
  ASSERT_TRUE(latest.PutRecord(Record(3, 2, 40)).ok());
  ASSERT_TRUE(latest.PutRecord(Record(4, 1, 50)).ok());

  Response first = api.Get(4);
  ASSERT_EQ(first.status, 200) << first.body;
  auto w = Versions(first.body);
  ASSERT_EQ(w.size(), 4u) << first.body;
  EXPECT_EQ(w[0], 1u);  // minute 4 (latest store)
  EXPECT_EQ(w[1], 7u);  // minute 3: history's higher version
  EXPECT_NE(first.body.find("\"source\":\"memory\""), std::string::npos);
  EXPECT_NE(first.body.find("2025-11-24T16:04:00"), std::string::npos) << first.body;
  EXPECT_EQ(first.body.find("2025-11-24T16:00:00"), std::string::npos);  // 5th newest

  Response again = api.Get(4);
  EXPECT_EQ(again.body, first.body);

  // A history write of that device (a newer version of minute 2) shows at once.
  ASSERT_TRUE(history.Put({Record(2, 9, 30)}).ok());
  Response after = api.Get(4);
  auto w2 = Versions(after.body);
  ASSERT_EQ(w2.size(), 4u);
  EXPECT_EQ(w2[2], 9u) << after.body;

  // Another device's writes leave the answer as it was.
  AggregateRecord other = Record(5, 3, 1);
  other.device_id = "plug-8";
  ASSERT_TRUE(history.Put({other}).ok());
  EXPECT_EQ(api.Get(4).body, after.body);
}

TEST(RealtimeRoutesTest, KeptHistoryAnswerEqualsReadingTheStore) {
  ManualClock clock(kT0);
  store::HistoryRetention retention = store::HistoryRetention::Forever();
  retention.base_ns = 30 * kMinute;
  store::MemoryHistoryStore history(retention, &clock);
  // Small enough that series get evicted and re-created now and then.
  RecordJsonCache json_cache(4 << 10, nullptr);
  json_cache.Attach(&history);
  store::MemoryLatestStore latest(3);
  Api cached(&latest, &history, &json_cache);
  Api direct(&latest, &history, nullptr);

  std::mt19937_64 rng(11);
  std::map<int64_t, uint64_t> versions;  // history's, to write increasing versions
  int64_t newest = 0;
  for (int step = 0; step < 3000; ++step) {
    const int action = static_cast<int>(rng() % 10);
    if (action < 3) {  // history: a new window, or a new version of an old one
      const int64_t minute =
          action == 0 ? ++newest : std::max<int64_t>(0, newest - static_cast<int64_t>(rng() % 40));
      const uint64_t v = ++versions[minute] + 1;
      ASSERT_TRUE(history.Put({Record(minute, v, static_cast<double>(step))}).ok());
    } else if (action == 3) {  // the latest store: the newest window
      ASSERT_TRUE(latest.PutRecord(Record(newest, versions[newest] + 1, step)).ok());
    } else if (action == 4) {  // time passes: older windows expire
      clock.Advance(kMinute);
    } else if (action == 5) {  // another device fills the JSON cache
      AggregateRecord other = Record(newest, 2, step);
      other.device_id = "other-" + std::to_string(rng() % 50);
      ASSERT_TRUE(history.Put({other}).ok());
    }
    const size_t windows = 1 + rng() % 8;
    Response a = cached.Get(windows);
    Response b = direct.Get(windows);
    ASSERT_EQ(a.status, b.status) << "step " << step;
    ASSERT_EQ(a.body, b.body) << "step " << step << " windows " << windows;
  }
}

TEST(HistoryTailCacheTest, ReusesUntilAWriteAndIsBounded) {
  store::MemoryHistoryStore history;
  RecordJsonCache json_cache(1 << 20, nullptr);
  json_cache.Attach(&history);
  HistoryTailCache tail(/*max_records=*/3);
  ASSERT_TRUE(history.Put({Record(0, 2, 1), Record(1, 2, 2), Record(2, 2, 3)}).ok());

  auto a = tail.Latest(history, &json_cache, kDevice, 2);
  ASSERT_TRUE(a.ok());
  ASSERT_EQ((*a)->size(), 2u);
  EXPECT_EQ((*a)->front().window_start_ns, kT0 + 2 * kMinute);
  auto b = tail.Latest(history, &json_cache, kDevice, 2);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->get(), a->get());  // the kept answer, not a new read
  EXPECT_EQ(tail.hits(), 1u);

  ASSERT_TRUE(history.Put({Record(3, 2, 4)}).ok());
  auto c = tail.Latest(history, &json_cache, kDevice, 2);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ((*c)->front().window_start_ns, kT0 + 3 * kMinute);
  EXPECT_EQ(tail.misses(), 2u);

  // More records than the bound: answered, never kept.
  auto d = tail.Latest(history, &json_cache, kDevice, 10);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ((*d)->size(), 4u);
  auto e = tail.Latest(history, &json_cache, kDevice, 10);
  EXPECT_EQ(tail.misses(), 4u);

  // Without an attached cache every call reads the store.
  auto f = tail.Latest(history, nullptr, kDevice, 2);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ((*f)->size(), 2u);
  EXPECT_EQ(tail.hits(), 1u);
}

}  // namespace
}  // namespace joule::api

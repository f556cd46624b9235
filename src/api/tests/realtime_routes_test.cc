// GET /v1/devices/{id}/metrics/realtime through the real router and route code: windows the
// latest store lacks come from history (higher version wins per window), and the kept
// history answer (HistoryTailCache) never differs from reading the store: after random
// interleavings of history writes (older windows, newer versions, new windows), latest-store
// writes and retention, a route whose context has the attached RecordJsonCache answers byte
// for byte what a route without it (reading the store every time) answers.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <iterator>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "api/api_context.h"
#include "api/auth.h"
#include "api/device_json.h"
#include "api/history_tail_cache.h"
#include "api/record_json_cache.h"
#include "api/routes.h"
#include "common/clock.h"
#include "common/json_writer.h"
#include "common/time_format.h"
#include "net/router.h"
#include "store/history_memory/memory_history_store.h"
#include "store/memory/memory_latest_store.h"
#include "store/sqlite/sqlite_metadata_store.h"

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
  std::string retry_after;  // the header's value, "" when absent
};

// One API context + router over shared stores; `json_cache` null = no HistoryTailCache reuse.
struct Api {
  Api(store::LatestStore* latest, store::HistoryStore* history, RecordJsonCache* json_cache,
      store::MetadataStore* metadata = nullptr)
      : auth("disabled", "", metadata) {
    ctx.metrics = &metrics;
    ctx.auth = &auth;
    ctx.latest = latest;
    ctx.history = history;
    ctx.history_json_cache = json_cache;
    AddRealtimeRoutes(router, ctx);
  }
  Response Get(size_t windows, std::string_view device = kDevice) {
    net::HttpRequest req;
    req.method = "GET";
    req.path = "/v1/devices/" + std::string(device) + "/metrics/realtime";
    req.query.emplace_back("windows", std::to_string(windows));
    Response out;
    router.Dispatch(req, net::Responder::FromCallback([&out](net::HttpResponse r) {
                      out.status = r.status;
                      out.body = std::move(r.body);
                      for (const auto& [name, value] : r.headers) {
                        if (name == "Retry-After") out.retry_after = value;
                      }
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

// The bytes of an answer, pinned: numbers in the shortest form that reads back exactly
// (integers without ".0", fixed notation for exponents -5 < e < 16, otherwise "1e+16" /
// "1e-05"), negative zero as 0, non-finite numbers as null; a window held by both stores
// with the same version comes from the latest store.
TEST(RealtimeRoutesTest, ResponseBytesArePinned) {
  ManualClock clock(kT0 + 10 * kMinute);
  store::MemoryHistoryStore history(store::HistoryRetention::Forever(), &clock);
  RecordJsonCache json_cache(1 << 20, nullptr);
  json_cache.Attach(&history);
  store::MemoryLatestStore latest;
  Api api(&latest, &history, &json_cache);

  model::Event e;
  e.device_id = kDevice;
  e.timestamp_ns = kT0 + 4 * kMinute + 5'250'000'000;
  e.received_at_ns = kT0 + 4 * kMinute + 6'000'999'999;
  const double values[] = {230.0,
                           -0.0,
                           0.1 + 0.2,
                           1e15,
                           1e16,
                           123456789012345678.0,
                           0.0001,
                           0.00001,
                           -1.5e-7,
                           5e-324,
                           1.7976931348623157e308,
                           -2.5,
                           9007199254740993.0,
                           4503599627370497.0,
                           -9007199254740991.0,
                           std::numeric_limits<double>::quiet_NaN(),
                           -std::numeric_limits<double>::infinity(),
                           107.97};
  for (size_t i = 0; i < std::size(values); ++i) {
    e.metrics.push_back({"m" + std::to_string(i), values[i]});
  }
  e.meta_json = R"({"firmware":"1.0.3"})";
  ASSERT_TRUE(latest.PutReading(e).ok());
  AggregateRecord r4 = Record(4, 1, 0.1);
  r4.metrics[0].sum = 1e21;
  r4.metrics[0].max = -0.0;
  ASSERT_TRUE(latest.PutRecord(r4).ok());
  AggregateRecord r3 = Record(3, 2, 12.5);
  ASSERT_TRUE(latest.PutRecord(r3).ok());
  ASSERT_TRUE(history.Put({Record(3, 2, 99), Record(2, 2, 1e-5)}).ok());

  const std::string expected =
      R"({"device_id":"plug-7","device":{"device_id":"plug-7"},"source":"memory","latest":{)"
      R"("timestamp":"2025-11-24T16:04:05.250Z","received_at":"2025-11-24T16:04:06.000Z",)"
      R"("metrics":{"m0":230,"m1":0,"m2":0.30000000000000004,"m3":1000000000000000,)"
      R"("m4":1e+16,"m5":1.2345678901234568e+17,"m6":0.0001,"m7":1e-05,"m8":-1.5e-07,)"
      R"("m9":5e-324,"m10":1.7976931348623157e+308,"m11":-2.5,"m12":9007199254740992,)"
      R"("m13":4503599627370497,"m14":-9007199254740991,"m15":null,"m16":null,"m17":107.97},)"
      R"("meta":{"firmware":"1.0.3"}},"data":[{"device_id":"plug-7","resolution":"1m",)"
      R"("window_start":"2025-11-24T16:04:00.000Z","window_end":"2025-11-24T16:05:00.000Z",)"
      R"("final":false,"version":1,"count":6,"avg_power_w":1.6666666666666666e+20,)"
      R"("max_power_w":0,"sum_energy_wh":0.0016666666666666668,"coverage":0.5,"metrics":{)"
      R"("power_w":{"count":6,"min":0.1,"max":0,"avg":1.6666666666666666e+20,"first":0.1,)"
      R"("last":0.6,"sum":1e+21,"twa":0.2,"energy_wh":0.0016666666666666668,)"
      R"("coverage":0.5}}},{"device_id":"plug-7","resolution":"1m",)"
      R"("window_start":"2025-11-24T16:03:00.000Z","window_end":"2025-11-24T16:04:00.000Z",)"
      R"("final":true,"version":2,"count":6,"avg_power_w":12.5,"max_power_w":13.5,)"
      R"("sum_energy_wh":0.20833333333333334,"coverage":0.5,"metrics":{"power_w":{"count":6,)"
      R"("min":12.5,"max":13.5,"avg":12.5,"first":12.5,"last":13,"sum":75,"twa":25,)"
      R"("energy_wh":0.20833333333333334,"coverage":0.5}}},{"device_id":"plug-7",)"
      R"("resolution":"1m","window_start":"2025-11-24T16:02:00.000Z",)"
      R"("window_end":"2025-11-24T16:03:00.000Z","final":true,"version":2,"count":6,)"
      R"("avg_power_w":1e-05,"max_power_w":1.00001,"sum_energy_wh":1.6666666666666668e-07,)"
      R"("coverage":0.5,"metrics":{"power_w":{"count":6,"min":1e-05,"max":1.00001,)"
      R"("avg":1e-05,"first":1e-05,"last":0.50001,"sum":6.000000000000001e-05,"twa":2e-05,)"
      R"("energy_wh":1.6666666666666668e-07,"coverage":0.5}}}]})";
  for (int i = 0; i < 2; ++i) {  // encoded, then from the route's JSON cache
    Response got = api.Get(5);
    ASSERT_EQ(got.status, 200);
    EXPECT_EQ(got.body, expected);
  }
}

// Names that need escaping (the latest store does not check them) are escaped as
// JsonWriter escapes them; a latest store without windows answers an empty list.
TEST(RealtimeRoutesTest, EscapesNamesInTheLatestReading) {
  store::MemoryLatestStore latest;
  Api api(&latest, nullptr, nullptr);
  model::Event e;
  e.device_id = kDevice;
  e.timestamp_ns = kT0;
  e.received_at_ns = kT0;
  e.metrics = {{"a\"b\\c", 1.5}, {std::string("t\tn\n\x01", 5), -2.0}};
  ASSERT_TRUE(latest.PutReading(e).ok());
  Response got = api.Get(3);
  ASSERT_EQ(got.status, 200);
  EXPECT_EQ(got.body, R"({"device_id":"plug-7","device":{"device_id":"plug-7"},"source":"memory",)"
                      R"("latest":{"timestamp":"2025-11-24T16:00:00.000Z",)"
                      R"("received_at":"2025-11-24T16:00:00.000Z","metrics":{"a\"b\\c":1.5,)"
                      R"("t\tn\n\u0001":-2},"meta":{}},"data":[]})");
}

// A latest store that does not answer (Redis frozen: every call times out).
class UnreachableLatestStore : public store::LatestStore {
 public:
  std::string_view backend() const override { return "redis"; }
  Status PutRecord(const AggregateRecord&) override { return Down(); }
  Status PutReading(const model::Event&) override { return Down(); }
  Result<bool> Get(std::string_view, size_t, store::LatestSnapshot*) override {
    ++gets;
    return Down();
  }
  int gets = 0;

 private:
  static Status Down() { return Status::Unavailable("redis: timed out"); }
};

// Found by a black-box test: while Redis was frozen, a read that timed out answered 503
// without Retry-After although history is the fallback, and the reads after it (Redis then
// marked down, so skipped) answered "source": "redis" with no data. Now a read that fails
// or skips the latest store answers from history — with what history holds, also nothing —
// and a failure marks the store down at once (the next read does not wait for a timeout).
TEST(RealtimeRoutesTest, UnreachableLatestStoreFallsBackToHistoryAtOnce) {
  char tmpl[] = "/tmp/realtime-routes-test-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  ManualClock clock(kT0 + 10 * kMinute);
  {
    auto metadata = store::SqliteMetadataStore::Open(dir + "/meta.db", &clock);
    ASSERT_TRUE(metadata.ok()) << metadata.status().ToString();
    store::Device registered;
    registered.device_id = kDevice;
    registered.owner_id = "home-1";
    std::string token;
    ASSERT_TRUE((*metadata)->CreateDevice(registered, &token).ok());
    store::MemoryHistoryStore history(store::HistoryRetention::Forever(), &clock);
    UnreachableLatestStore latest;
    Api api(&latest, &history, nullptr, metadata->get());
    bool up = true;
    std::vector<std::string> reported;
    api.ctx.latest_state = [&up] {
      ApiContext::LatestState s;
      s.up = up;
      return s;
    };
    api.ctx.latest_failed = [&](const Status& st) {
      up = false;
      reported.push_back(st.message());
    };

    // History holds nothing yet (no window emitted): the registered device's answer is
    // history's, empty — not a 503, not the latest store's name.
    Response first = api.Get(3);
    EXPECT_EQ(first.status, 200) << first.body;
    EXPECT_NE(first.body.find(R"("source":"history","latest":null,"data":[])"), std::string::npos)
        << first.body;
    EXPECT_EQ(latest.gets, 1);
    EXPECT_EQ(reported, std::vector<std::string>{"redis: timed out"});
    // Marked down: the next read skips the store, and still names history.
    Response second = api.Get(3);
    EXPECT_EQ(second.status, 200);
    EXPECT_EQ(second.body, first.body);
    EXPECT_EQ(latest.gets, 1);

    // History's windows, as soon as it has them, with the store down or failing.
    ASSERT_TRUE(history.Put({Record(0, 1, 1)}).ok());
    for (bool store_up : {false, true}) {
      up = store_up;
      Response got = api.Get(3);
      EXPECT_EQ(got.status, 200) << got.body;
      EXPECT_NE(got.body.find(R"("source":"history")"), std::string::npos) << got.body;
      EXPECT_EQ(Versions(got.body), std::vector<uint64_t>{1}) << got.body;
    }

    // An id that is not registered, with nothing in history: only the unreachable store
    // could tell whether it has data — 503 with Retry-After (skipped or failed alike).
    for (bool store_up : {false, true}) {
      up = store_up;
      Response unknown = api.Get(3, "plug-unknown");
      EXPECT_EQ(unknown.status, 503) << unknown.body;
      EXPECT_EQ(unknown.retry_after, "1");
      EXPECT_NE(unknown.body.find("\"code\":\"unavailable\""), std::string::npos) << unknown.body;
    }
  }
  std::filesystem::remove_all(dir);
}

// The device metadata JSON as JsonWriter wrote it before AppendDeviceJson (the reference).
std::string ReferenceDeviceJson(const store::Device& d) {
  JsonWriter w;
  w.BeginObject();
  if (d.owner_id.empty()) {
    if (!d.device_id.empty()) {
      w.Key("device_id");
      w.String(d.device_id);
    }
    w.EndObject();
    return w.Take();
  }
  w.Key("device_id");
  w.String(d.device_id);
  w.Key("owner_id");
  w.String(d.owner_id);
  w.Key("name");
  w.String(d.name);
  w.Key("model");
  w.String(d.model);
  w.Key("location");
  w.String(d.location);
  w.Key("timezone");
  w.String(d.timezone.empty() ? "UTC" : d.timezone);
  w.Key("installed_at");
  if (d.installed_at_ns) {
    w.String(FormatRfc3339Millis(*d.installed_at_ns));
  } else {
    w.Null();
  }
  w.Key("config");
  if (d.config_json.empty()) {
    w.BeginObject();
    w.EndObject();
  } else {
    w.Raw(d.config_json);
  }
  w.Key("created_at");
  w.String(FormatRfc3339Millis(d.created_at_ns));
  w.Key("updated_at");
  w.String(FormatRfc3339Millis(d.updated_at_ns));
  w.EndObject();
  return w.Take();
}

TEST(DeviceJsonTest, SameBytesAsJsonWriter) {
  std::vector<store::Device> devices(4);
  devices[1].device_id = "plug-7";
  devices[2].device_id = "plug-7";
  devices[2].owner_id = "owner-1";
  devices[2].timezone.clear();
  devices[2].created_at_ns = kT0 + 1'999'999;
  devices[2].updated_at_ns = -1;
  devices[3].device_id = "a:b.c_d-e";
  devices[3].owner_id = "o";
  devices[3].name = "Kitchen \"plug\" \\ \x01\x1f\t\n\r\b\f é";
  devices[3].model = std::string("x\0y", 3);
  devices[3].location = "ünïcødé ☃";
  devices[3].timezone = "Europe/Berlin";
  devices[3].installed_at_ns = kT0;
  devices[3].config_json = R"({"a":[1,2.5,"x"]})";
  devices[3].created_at_ns = std::numeric_limits<int64_t>::min();
  for (const store::Device& d : devices) {
    std::string got;
    AppendDeviceJson(&got, d);
    EXPECT_EQ(got, ReferenceDeviceJson(d));
    EXPECT_LE(got.size(), DeviceJsonSizeHint(d) + 5 * 6);  // two \u escapes in devices[3]
    JsonWriter w;
    w.BeginArray();
    WriteDeviceJson(w, d);
    WriteDeviceJson(w, d);
    w.EndArray();
    EXPECT_EQ(w.Take(), "[" + got + "," + got + "]");
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

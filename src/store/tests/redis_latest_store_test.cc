// Tests of the Redis latest store against a real redis-server (JOULE_TEST_REDIS_URL, set
// by scripts/test-services.sh), and of its JSON decoders (no server needed).
// The server may be shared: every test uses device ids with a per-run random suffix and
// never flushes anything.
#include "store/redis/redis_latest_store.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "common/time_format.h"
#include "model/aggregate_record.h"
#include "store/redis/reading_json.h"
#include "store/redis/record_json_decoder.h"

namespace joule::store {
namespace {

using model::AggregateRecord;
using model::MetricAggregate;
using model::MetricKind;

// 2026-11-28T19:00:00Z
constexpr int64_t kBaseNs = 1795892400LL * kNanosPerSecond;

MetricAggregate Power(uint64_t count, double base, int64_t covered_ns) {
  MetricAggregate m;
  m.name = "power_w";
  m.kind = MetricKind::kPower;
  m.count = count;
  if (count > 0) {
    m.min = base;
    m.max = base * 2.5;
    m.sum = base * 1.7 * static_cast<double>(count);
    m.first = base * 1.1;
    m.last = base * 2.1;
  }
  m.energy_wh = base / 7.0;
  m.covered_ns = covered_ns;
  return m;
}

MetricAggregate Counter(uint64_t count, double delta, uint64_t resets) {
  MetricAggregate m;
  m.name = "energy_wh";
  m.kind = MetricKind::kCounter;
  m.count = count;
  if (count > 0) {
    m.min = 10452.5;
    m.max = 10456.0;
    m.sum = 10454.1 * static_cast<double>(count);
    m.first = 10452.5;
    m.last = 10456.0;
  }
  m.delta = delta;
  m.resets = resets;
  return m;
}

MetricAggregate Gauge(std::string name, uint64_t count, double v) {
  MetricAggregate m;
  m.name = std::move(name);
  m.kind = MetricKind::kGauge;
  m.count = count;
  if (count > 0) {
    m.min = v - 0.3;
    m.max = v + 1.2;
    m.sum = v * static_cast<double>(count) + 0.1;
    m.first = v;
    m.last = v + 0.1;
  }
  return m;
}

// A base (1m) record with one metric of every kind; metrics sorted by name.
AggregateRecord Record(const std::string& device, int minute, uint64_t version) {
  AggregateRecord r;
  r.device_id = device;
  r.resolution = model::Resolution::kBase;
  r.window_start_ns = kBaseNs + minute * kNanosPerMinute;
  r.window_end_ns = r.window_start_ns + kNanosPerMinute;
  r.final = version > 1;
  r.version = version;
  r.count = 12 + static_cast<uint64_t>(minute);
  r.metrics.push_back(Counter(12, 3.5 + minute, static_cast<uint64_t>(minute % 2)));
  r.metrics.push_back(Power(12, 11.2 + minute, 58 * kNanosPerSecond + 123456789));
  r.metrics.push_back(Gauge("voltage_v", 12, 230.1 + 0.01 * minute));
  return r;
}

// ---------------------------------------------------------------- decoders (no Redis)

void ExpectRoundTrip(const AggregateRecord& r) {
  RecordJsonDecoder decoder;
  AggregateRecord decoded;
  const std::string json = model::RecordToJson(r);
  ASSERT_TRUE(decoder.Decode(json, &decoded).ok()) << json;
  EXPECT_EQ(decoded, r) << json;
  EXPECT_EQ(model::RecordToJson(decoded), json);
}

TEST(RecordJsonDecoderTest, RoundTripsEveryMetricKind) {
  ExpectRoundTrip(Record("plug-42", 0, 1));
  ExpectRoundTrip(Record("plug-42", 7, 9));
}

TEST(RecordJsonDecoderTest, RoundTripsEmptyAndPartialMetrics) {
  AggregateRecord r = Record("d", 3, 2);
  r.count = 0;
  r.metrics = {Counter(0, 0.25, 1), Power(0, 4.0, 17 * kNanosPerSecond), Power(0, 0, 0),
               Gauge("temp_c", 0, 0), Gauge("zz", 1, -3.25)};
  r.metrics[2].name = "solar_w";  // power with no coverage: no twa written
  std::sort(r.metrics.begin(), r.metrics.end(),
            [](const MetricAggregate& a, const MetricAggregate& b) { return a.name < b.name; });
  ExpectRoundTrip(r);
  r.metrics.clear();
  ExpectRoundTrip(r);
}

TEST(RecordJsonDecoderTest, RoundTripsHourDayAndOddBaseWindows) {
  AggregateRecord hour = Record("d", 0, 3);
  hour.resolution = model::Resolution::kHour;
  hour.window_end_ns = hour.window_start_ns + kNanosPerHour;
  ExpectRoundTrip(hour);

  AggregateRecord day = Record("d", 0, 1);
  day.resolution = model::Resolution::kDay;
  day.window_start_ns = kBaseNs - 19 * kNanosPerHour + kNanosPerHour;  // local midnight
  day.window_end_ns = day.window_start_ns + 25 * kNanosPerHour;        // a DST day
  day.local_date = "2026-10-25";
  day.timezone = "Europe/Berlin";
  day.metrics[1].covered_ns = 25 * kNanosPerHour - 1;
  ExpectRoundTrip(day);

  AggregateRecord thirty = Record("d", 0, 1);
  thirty.window_end_ns = thirty.window_start_ns + 30 * kNanosPerSecond;
  thirty.metrics[1].covered_ns = 29 * kNanosPerSecond + 999999999;
  ExpectRoundTrip(thirty);
}

// covered_ns is carried as a ratio: it must come back exact for any value in any window.
TEST(RecordJsonDecoderTest, CoverageRoundTripsExactly) {
  std::mt19937_64 rng(42);
  const int64_t windows[] = {kNanosPerSecond, kNanosPerMinute, kNanosPerHour, 25 * kNanosPerHour};
  for (int64_t window : windows) {
    std::uniform_int_distribution<int64_t> covered(0, window);
    for (int i = 0; i < 500; ++i) {
      AggregateRecord r = Record("d", 0, 1);
      r.window_end_ns = r.window_start_ns + window;
      // A base window of exactly 1h reads back as kHour (see record_json_decoder.h).
      if (window == kNanosPerHour) r.resolution = model::Resolution::kHour;
      r.metrics[1].covered_ns = covered(rng);
      r.metrics[1].energy_wh = std::ldexp(static_cast<double>(rng() >> 11), -40);
      r.metrics[2].sum = std::ldexp(static_cast<double>(rng() >> 11), -20) - 1e3;
      ExpectRoundTrip(r);
      if (HasFailure()) return;
    }
  }
}

TEST(RecordJsonDecoderTest, RejectsMalformedInput) {
  RecordJsonDecoder decoder;
  AggregateRecord r;
  const std::string good = model::RecordToJson(Record("d", 0, 1));
  for (std::string_view bad :
       {std::string_view(""), std::string_view("[]"), std::string_view("{\"device_id\":\"d\"}"),
        std::string_view(good).substr(0, good.size() - 1), std::string_view("{} {}"),
        std::string_view("{\"device_id\":\"d\",\"window_start\":\"yesterday\","
                         "\"window_end\":\"2026-01-01T00:00:00Z\",\"version\":1}"),
        std::string_view("{\"device_id\":\"d\",\"window_start\":\"2026-01-01T00:00:00Z\","
                         "\"window_end\":\"2026-01-01T00:01:00Z\",\"version\":-1}")}) {
    Status st = decoder.Decode(bad, &r);
    EXPECT_EQ(st.code(), StatusCode::kCorruption) << bad;
  }
  ASSERT_TRUE(decoder.Decode(good, &r).ok());  // the decoder is still usable
}

TEST(ReadingJsonTest, RoundTripsAtMillisecondPrecision) {
  model::Event e;
  e.device_id = "plug-42";
  e.timestamp_ns = kBaseNs + 5 * kNanosPerSecond + 250 * kNanosPerMilli + 123;
  e.received_at_ns = kBaseNs + 6 * kNanosPerSecond + 1;
  e.metrics = {{"voltage_v", 230.1}, {"power_w", 12.3}, {"energy_wh", 10452.5}};
  e.meta_json = R"({"firmware":"1.0.3","n":3,"ok":true})";
  e.event_id = "ignored";
  const std::string json = ReadingToJson(e);
  EXPECT_EQ(json,
            R"({"timestamp":"2026-11-28T19:00:05.250Z","received_at":"2026-11-28T19:00:06.000Z",)"
            R"("metrics":{"voltage_v":230.1,"power_w":12.3,"energy_wh":10452.5},)"
            R"("meta":{"firmware":"1.0.3","n":3,"ok":true}})");
  ReadingJsonDecoder decoder;
  LatestReading r;
  ASSERT_TRUE(decoder.Decode(json, &r).ok());
  EXPECT_EQ(r.timestamp_ns, kBaseNs + 5250 * kNanosPerMilli);
  EXPECT_EQ(r.received_at_ns, kBaseNs + 6 * kNanosPerSecond);
  EXPECT_EQ(r.metrics, e.metrics);
  EXPECT_EQ(r.meta_json, e.meta_json);

  e.meta_json.clear();
  ASSERT_TRUE(decoder.Decode(ReadingToJson(e), &r).ok());
  EXPECT_EQ(r.meta_json, "");
  EXPECT_EQ(decoder.Decode("{\"metrics\":{}}", &r).code(), StatusCode::kCorruption);
}

TEST(RedisUrlTest, Parses) {
  auto ep = ParseRedisUrl("redis://127.0.0.1:6380/3");
  ASSERT_TRUE(ep.ok()) << ep.status().ToString();
  EXPECT_EQ(ep->host, "127.0.0.1");
  EXPECT_EQ(ep->port, 6380);
  EXPECT_EQ(ep->db, 3);
  EXPECT_EQ(ep->password, "");

  ep = ParseRedisUrl("redis://cache");
  ASSERT_TRUE(ep.ok());
  EXPECT_EQ(ep->host, "cache");
  EXPECT_EQ(ep->port, 6379);
  EXPECT_EQ(ep->db, 0);

  ep = ParseRedisUrl("redis://joule:s3cr:et@[::1]:7000/0");
  ASSERT_TRUE(ep.ok());
  EXPECT_EQ(ep->host, "::1");
  EXPECT_EQ(ep->port, 7000);
  EXPECT_EQ(ep->username, "joule");
  EXPECT_EQ(ep->password, "s3cr:et");

  ep = ParseRedisUrl("redis://:pw@h/");
  ASSERT_TRUE(ep.ok());
  EXPECT_EQ(ep->username, "");
  EXPECT_EQ(ep->password, "pw");

  for (const char* bad : {"http://h:1/0", "redis://", "redis://h:0", "redis://h:99999",
                          "redis://h:x/0", "redis://h:1/-1", "redis://h:1/a", "redis://[::1"}) {
    EXPECT_EQ(ParseRedisUrl(bad).status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

// An error quotes the URL without its password (it reached the server's log in clear: found
// by a black-box test).
TEST(RedisUrlTest, ErrorsNeverQuoteThePassword) {
  for (const char* bad : {"redis://:hunter2@127.0.0.1:99999/0", "rediss://:hunter2@h:6379/0",
                          "redis://:hunter2@h:6379/x", "http://u:hunter2@h/0",
                          "redis://hunter2@h:1/x", "redis://u:hunter2@[::1"}) {
    auto ep = ParseRedisUrl(bad);
    ASSERT_FALSE(ep.ok()) << bad;
    EXPECT_EQ(ep.status().message().find("hunter2"), std::string::npos) << ep.status().message();
    EXPECT_NE(ep.status().message().find("<set>"), std::string::npos) << ep.status().message();
  }
  auto ep = ParseRedisUrl("redis://hunter2@h:1/0");  // redis://password@host
  ASSERT_TRUE(ep.ok());
  EXPECT_EQ(ep->password, "hunter2");
}

TEST(RedisLatestStoreOpenTest, ValidatesOptionsWithoutConnecting) {
  RedisLatestStoreOptions o;
  o.url = "redis://127.0.0.1:1/0";  // nothing listens: Open must not care
  EXPECT_TRUE(RedisLatestStore::Open(o).ok());
  o.windows_per_device = 0;
  EXPECT_EQ(RedisLatestStore::Open(o).status().code(), StatusCode::kInvalidArgument);
  o.windows_per_device = 60;
  o.connections = 0;
  EXPECT_EQ(RedisLatestStore::Open(o).status().code(), StatusCode::kInvalidArgument);
  o.connections = 1;
  o.client_name = "has space";
  EXPECT_EQ(RedisLatestStore::Open(o).status().code(), StatusCode::kInvalidArgument);
  o.client_name = "ok";
  o.url = "redis//nope";
  EXPECT_EQ(RedisLatestStore::Open(o).status().code(), StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------- against redis-server

struct ReplyFree {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyFree>;

// A plain hiredis client, to check what the store wrote independently of its code.
class RawRedis {
 public:
  explicit RawRedis(const RedisEndpoint& ep) {
    timeval tv{5, 0};
    ctx_ = redisConnectWithTimeout(ep.host.c_str(), ep.port, tv);
    if (ctx_ != nullptr && ctx_->err == 0) {
      redisSetTimeout(ctx_, tv);
      if (!ep.password.empty()) Run({"AUTH", ep.password});
      Run({"SELECT", std::to_string(ep.db)});
    }
  }
  ~RawRedis() {
    if (ctx_ != nullptr) redisFree(ctx_);
  }
  bool ok() const { return ctx_ != nullptr && ctx_->err == 0; }

  ReplyPtr Run(const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<size_t> lengths;
    for (const auto& a : args) {
      argv.push_back(a.data());
      lengths.push_back(a.size());
    }
    return ReplyPtr(static_cast<redisReply*>(
        redisCommandArgv(ctx_, static_cast<int>(argv.size()), argv.data(), lengths.data())));
  }
  std::optional<std::string> String(const std::vector<std::string>& args) {
    ReplyPtr r = Run(args);
    if (r == nullptr || r->type != REDIS_REPLY_STRING) return std::nullopt;
    return std::string(r->str, r->len);
  }
  long long Integer(const std::vector<std::string>& args) {
    ReplyPtr r = Run(args);
    return r != nullptr && r->type == REDIS_REPLY_INTEGER ? r->integer : -999;
  }
  std::vector<std::string> Strings(const std::vector<std::string>& args) {
    std::vector<std::string> out;
    ReplyPtr r = Run(args);
    if (r == nullptr || r->type != REDIS_REPLY_ARRAY) return out;
    for (size_t i = 0; i < r->elements; ++i) {
      out.emplace_back(r->element[i]->str, r->element[i]->len);
    }
    return out;
  }
  // Next pushed message on a subscribed connection: {kind, channel, payload}.
  std::optional<std::vector<std::string>> NextMessage() {
    void* raw = nullptr;
    if (redisGetReply(ctx_, &raw) != REDIS_OK || raw == nullptr) return std::nullopt;
    ReplyPtr r(static_cast<redisReply*>(raw));
    std::vector<std::string> parts;
    for (size_t i = 0; i < r->elements; ++i) {
      const redisReply* e = r->element[i];
      parts.push_back(e->type == REDIS_REPLY_INTEGER ? std::to_string(e->integer)
                                                     : std::string(e->str, e->len));
    }
    return parts;
  }

 private:
  redisContext* ctx_ = nullptr;
};

std::string RunId() {
  static const std::string id = [] {
    std::random_device rd;
    return fmt::format("{:08x}{:08x}", rd(), static_cast<uint32_t>(getpid()));
  }();
  return id;
}

class RedisLatestStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* url = std::getenv("JOULE_TEST_REDIS_URL");
    ASSERT_NE(url, nullptr)
        << "JOULE_TEST_REDIS_URL is not set. These tests need a real redis-server: run "
           "`eval \"$(scripts/test-services.sh start)\"` first (the test command does).";
    url_ = url;
    auto ep = ParseRedisUrl(url_);
    ASSERT_TRUE(ep.ok()) << ep.status().ToString();
    endpoint_ = *ep;
    raw_ = std::make_unique<RawRedis>(endpoint_);
    ASSERT_TRUE(raw_->ok()) << "cannot connect to " << url_;
    static std::atomic<int> instances{0};
    instance_ = ++instances;  // distinct ids under --gtest_repeat too
    device_ = Device("d");
  }

  // A device id no other test or run uses.
  std::string Device(std::string_view tag) const {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    return fmt::format("t-{}-{}-{}-{}", RunId(), instance_, info->name(), tag);
  }

  std::unique_ptr<RedisLatestStore> OpenStore(size_t windows = 60, size_t connections = 4,
                                              std::string client_name = "joule-test",
                                              std::string instance_id = "1") {
    RedisLatestStoreOptions o;
    o.instance_id = std::move(instance_id);
    o.url = url_;
    o.windows_per_device = windows;
    o.connections = connections;
    o.client_name = std::move(client_name);
    auto store = RedisLatestStore::Open(o);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    return store.ok() ? std::move(store).value() : nullptr;
  }

  // The version of the record JSON held at `key` (or in `field` of the hash `key`).
  std::optional<uint64_t> StoredVersion(const std::string& key, const std::string& field = "") {
    auto json = field.empty() ? raw_->String({"GET", key}) : raw_->String({"HGET", key, field});
    if (!json) return std::nullopt;
    RecordJsonDecoder decoder;
    AggregateRecord r;
    if (!decoder.Decode(*json, &r).ok()) return std::nullopt;
    return r.version;
  }

  int instance_ = 0;
  std::string url_;
  RedisEndpoint endpoint_;
  std::unique_ptr<RawRedis> raw_;
  std::string device_;
};

TEST_F(RedisLatestStoreTest, WritesTheContractLayout) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->backend(), "redis");
  ASSERT_TRUE(store->Ping().ok());
  const AggregateRecord r = Record(device_, 0, 1);
  ASSERT_TRUE(store->PutRecord(r).ok());

  const std::string json = model::RecordToJson(r);
  const std::string latest = "agg:device:" + device_ + ":latest";
  const std::string window = "agg:device:" + device_ + ":window:2026-11-28T19:00:00.000Z";
  EXPECT_EQ(RedisLatestKey(device_), latest);
  EXPECT_EQ(RedisWindowKey(device_, r.window_start_ns), window);
  EXPECT_EQ(raw_->String({"TYPE", latest}), std::nullopt);  // TYPE is a status reply
  EXPECT_EQ(raw_->Strings({"HKEYS", latest}), std::vector<std::string>{"2026-11-28T19:00:00.000Z"});
  EXPECT_EQ(raw_->String({"HGET", latest, "2026-11-28T19:00:00.000Z"}), json);
  EXPECT_EQ(raw_->String({"GET", window}), json);
  const long long ttl_ms = raw_->Integer({"PTTL", window});
  EXPECT_GT(ttl_ms, 47 * 3600 * 1000LL);
  EXPECT_LE(ttl_ms, 48 * 3600 * 1000LL);
  EXPECT_EQ(raw_->Integer({"PTTL", latest}), -1);  // the hash itself does not expire

  model::Event e;
  e.device_id = device_;
  e.timestamp_ns = kBaseNs + 5250 * kNanosPerMilli;
  e.received_at_ns = kBaseNs + 5300 * kNanosPerMilli;
  e.metrics = {{"power_w", 12.3}, {"voltage_v", 230.1}};
  e.meta_json = R"({"firmware":"1.0.3"})";
  ASSERT_TRUE(store->PutReading(e).ok());
  EXPECT_EQ(raw_->String({"GET", "agg:device:" + device_ + ":reading"}),
            R"({"timestamp":"2026-11-28T19:00:05.250Z","received_at":"2026-11-28T19:00:05.300Z",)"
            R"("metrics":{"power_w":12.3,"voltage_v":230.1},"meta":{"firmware":"1.0.3"}})");
}

// Found by a black-box test: a Redis last written by another (or a deleted) data dir kept
// its records, which outranked the new data dir's by version. A connection that finds
// another id in agg:instance bumps the generation and claims it; the first write of each
// device then replaces its keys, and ReplaceDevice (the processors' resync) writes
// whatever versions Redis held.
TEST_F(RedisLatestStoreTest, AnotherDataDirsRecordsAreReplaced) {
  const std::string a_id = "a-" + RunId() + Device("");
  const std::string b_id = "b-" + RunId() + Device("");
  auto a = OpenStore(60, 1, "joule-test", a_id);
  ASSERT_NE(a, nullptr);
  const std::string latest = RedisLatestKey(device_);
  ASSERT_TRUE(a->PutRecord(Record(device_, 0, 9)).ok());
  // Only the record script in the server's cache: a forget sent by EVALSHA would be
  // answered NOSCRIPT and re-sent after the writes that follow it, deleting them.
  ASSERT_EQ(raw_->Run({"SCRIPT", "FLUSH"})->type, REDIS_REPLY_STATUS);
  ASSERT_TRUE(a->PutRecord(Record(device_, 1, 9)).ok());
  EXPECT_EQ(raw_->String({"GET", "agg:instance"}), a_id);

  auto b = OpenStore(60, 1, "joule-test", b_id);
  ASSERT_NE(b, nullptr);
  const uint64_t before = b->InstanceGeneration();
  ASSERT_TRUE(b->PutRecord(Record(device_, 0, 1)).ok());
  EXPECT_GT(b->InstanceGeneration(), before);
  EXPECT_EQ(raw_->String({"GET", "agg:instance"}), b_id);
  EXPECT_EQ(StoredVersion(latest, "2026-11-28T19:00:00.000Z"), 1u);
  EXPECT_EQ(raw_->Strings({"HKEYS", latest}), std::vector<std::string>{"2026-11-28T19:00:00.000Z"});
  // The window key of a forgotten field is gone too.
  EXPECT_EQ(raw_->String({"GET", RedisWindowKey(device_, Record(device_, 1, 9).window_start_ns)}),
            std::nullopt);
  // Claimed: later writes are version-guarded again.
  ASSERT_TRUE(b->PutRecord(Record(device_, 1, 3)).ok());
  ASSERT_TRUE(b->PutRecord(Record(device_, 1, 2)).ok());
  EXPECT_EQ(StoredVersion(latest, "2026-11-28T19:01:00.000Z"), 3u);

  // ReplaceDevice: what the store held goes, whatever its version.
  const std::vector<AggregateRecord> rewrite = {Record(device_, 1, 2)};
  ASSERT_TRUE(b->ReplaceDevice(device_, rewrite, nullptr).ok());
  EXPECT_EQ(raw_->Strings({"HKEYS", latest}), std::vector<std::string>{"2026-11-28T19:01:00.000Z"});
  EXPECT_EQ(StoredVersion(latest, "2026-11-28T19:01:00.000Z"), 2u);
  EXPECT_EQ(StoredVersion(RedisWindowKey(device_, rewrite[0].window_start_ns)), 2u);

  // The same data dir again: no new instance.
  auto b2 = OpenStore(60, 1, "joule-test", b_id);
  ASSERT_NE(b2, nullptr);
  ASSERT_TRUE(b2->Ping().ok());
  EXPECT_EQ(b2->InstanceGeneration(), 0u);
}

TEST_F(RedisLatestStoreTest, HighestVersionWins) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  const std::string latest = RedisLatestKey(device_);
  const std::string field = "2026-11-28T19:00:00.000Z";
  const std::string window = RedisWindowKey(device_, kBaseNs);
  ASSERT_TRUE(store->PutRecord(Record(device_, 0, 2)).ok());
  ASSERT_TRUE(store->PutRecord(Record(device_, 0, 1)).ok());  // stale: ignored
  EXPECT_EQ(StoredVersion(latest, field), 2u);
  EXPECT_EQ(StoredVersion(window), 2u);
  AggregateRecord same = Record(device_, 0, 2);
  same.count = 999;  // equal version: a duplicate, ignored
  ASSERT_TRUE(store->PutRecord(same).ok());
  EXPECT_EQ(raw_->String({"HGET", latest, field}), model::RecordToJson(Record(device_, 0, 2)));
  ASSERT_TRUE(store->PutRecord(Record(device_, 0, 3)).ok());
  EXPECT_EQ(StoredVersion(latest, field), 3u);
  EXPECT_EQ(StoredVersion(window), 3u);

  LatestSnapshot snap;
  auto found = store->Get(device_, 10, &snap);
  ASSERT_TRUE(found.ok()) << found.status().ToString();
  ASSERT_TRUE(*found);
  ASSERT_EQ(snap.records.size(), 1u);
  EXPECT_EQ(snap.records[0], Record(device_, 0, 3));
}

// Writers in two stores (as two processes would be), two threads each, race on the same
// windows with interleaved versions: the highest version must win everywhere.
TEST_F(RedisLatestStoreTest, HighestVersionWinsUnderConcurrentWriters) {
  auto a = OpenStore(60, 2);
  auto b = OpenStore(60, 2);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  constexpr int kThreads = 4, kWindows = 4, kVersions = 120;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      RedisLatestStore* store = t % 2 == 0 ? a.get() : b.get();
      std::vector<std::pair<int, uint64_t>> writes;
      for (int w = 0; w < kWindows; ++w) {
        for (uint64_t v = 1 + t; v <= kVersions; v += kThreads) writes.emplace_back(w, v);
      }
      std::shuffle(writes.begin(), writes.end(), std::mt19937(static_cast<unsigned>(t)));
      for (size_t i = 0; i < writes.size(); ++i) {
        Status st;
        if (i % 3 == 0) {
          std::vector<AggregateRecord> batch = {Record(device_, writes[i].first, writes[i].second)};
          if (i + 1 < writes.size()) {
            ++i;
            batch.push_back(Record(device_, writes[i].first, writes[i].second));
          }
          st = store->PutRecords(batch);
        } else {
          st = store->PutRecord(Record(device_, writes[i].first, writes[i].second));
        }
        if (!st.ok()) failures.fetch_add(1);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  for (int w = 0; w < kWindows; ++w) {
    const int64_t start = kBaseNs + w * kNanosPerMinute;
    EXPECT_EQ(StoredVersion(RedisLatestKey(device_), FormatRfc3339Millis(start)),
              uint64_t{kVersions});
    EXPECT_EQ(StoredVersion(RedisWindowKey(device_, start)), uint64_t{kVersions});
  }
  LatestSnapshot snap;
  ASSERT_TRUE(*a->Get(device_, 60, &snap));
  ASSERT_EQ(snap.records.size(), size_t{kWindows});
  for (int w = 0; w < kWindows; ++w) {
    EXPECT_EQ(snap.records[w], Record(device_, kWindows - 1 - w, kVersions));
  }
}

TEST_F(RedisLatestStoreTest, TrimsTheHashToTheNewestWindows) {
  auto store = OpenStore(/*windows=*/3);
  ASSERT_NE(store, nullptr);
  for (int m : {2, 0, 4, 1, 3}) ASSERT_TRUE(store->PutRecord(Record(device_, m, 1)).ok());
  const std::string latest = RedisLatestKey(device_);
  std::vector<std::string> fields = raw_->Strings({"HKEYS", latest});
  std::sort(fields.begin(), fields.end());
  EXPECT_EQ(fields,
            (std::vector<std::string>{"2026-11-28T19:02:00.000Z", "2026-11-28T19:03:00.000Z",
                                      "2026-11-28T19:04:00.000Z"}));
  // Trimmed windows keep their window keys (until the TTL).
  EXPECT_EQ(StoredVersion(RedisWindowKey(device_, kBaseNs)), 1u);

  LatestSnapshot snap;
  ASSERT_TRUE(*store->Get(device_, 10, &snap));
  ASSERT_EQ(snap.records.size(), 3u);
  EXPECT_EQ(snap.records[0], Record(device_, 4, 1));
  EXPECT_EQ(snap.records[1], Record(device_, 3, 1));
  EXPECT_EQ(snap.records[2], Record(device_, 2, 1));
  ASSERT_TRUE(*store->Get(device_, 2, &snap));
  ASSERT_EQ(snap.records.size(), 2u);
  EXPECT_EQ(snap.records[0].window_start_ns, kBaseNs + 4 * kNanosPerMinute);

  // A late update of a window already trimmed from the hash updates its window key and
  // leaves the hash as it was; a stale one is still rejected by the window key.
  ASSERT_TRUE(store->PutRecord(Record(device_, 0, 3)).ok());
  ASSERT_TRUE(store->PutRecord(Record(device_, 0, 2)).ok());
  EXPECT_EQ(StoredVersion(RedisWindowKey(device_, kBaseNs)), 3u);
  EXPECT_EQ(raw_->Integer({"HLEN", latest}), 3);
  EXPECT_EQ(raw_->Integer({"HEXISTS", latest, "2026-11-28T19:00:00.000Z"}), 0);
}

TEST_F(RedisLatestStoreTest, PublishesEveryWriteOnTheUpdatesChannel) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  RawRedis subscriber(endpoint_);
  ASSERT_TRUE(subscriber.ok());
  const std::string channel = "agg:device:" + device_ + ":updates";
  EXPECT_EQ(RedisUpdatesChannel(device_), channel);
  ReplyPtr subscribed = subscriber.Run({"SUBSCRIBE", channel});
  ASSERT_NE(subscribed, nullptr);  // the confirmation: the subscription is active now

  const AggregateRecord r = Record(device_, 0, 2);
  ASSERT_TRUE(store->PutRecord(r).ok());
  auto message = subscriber.NextMessage();
  ASSERT_TRUE(message.has_value());
  EXPECT_EQ(*message, (std::vector<std::string>{"message", channel, model::RecordToJson(r)}));

  model::Event e;
  e.device_id = device_;
  e.timestamp_ns = kBaseNs;
  e.received_at_ns = kBaseNs + kNanosPerMilli;
  e.metrics = {{"power_w", 1.5}};
  ASSERT_TRUE(store->PutReading(e).ok());
  message = subscriber.NextMessage();
  ASSERT_TRUE(message.has_value());
  EXPECT_EQ(*message, (std::vector<std::string>{"message", channel, ReadingToJson(e)}));

  // Stale writes publish nothing: the next message is the fresh record after them.
  ASSERT_TRUE(store->PutRecord(Record(device_, 0, 1)).ok());
  model::Event old = e;
  old.timestamp_ns -= 1;
  ASSERT_TRUE(store->PutReading(old).ok());
  const AggregateRecord next = Record(device_, 1, 1);
  ASSERT_TRUE(store->PutRecords(std::vector<AggregateRecord>{next}).ok());
  message = subscriber.NextMessage();
  ASSERT_TRUE(message.has_value());
  EXPECT_EQ(*message, (std::vector<std::string>{"message", channel, model::RecordToJson(next)}));
}

TEST_F(RedisLatestStoreTest, GetReturnsWhatWasWrittenNewestFirst) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  LatestSnapshot snap;
  auto found = store->Get(device_, 10, &snap);
  ASSERT_TRUE(found.ok());
  EXPECT_FALSE(*found);

  std::vector<AggregateRecord> written;
  for (int m = 0; m < 6; ++m) {
    AggregateRecord r = Record(device_, m, 1 + m % 3);
    if (m == 2) {  // every kind present but empty
      r.count = 0;
      r.metrics = {Counter(0, 0.5, 0), Power(0, 2.0, 30 * kNanosPerSecond),
                   Gauge("voltage_v", 0, 0)};
    }
    if (m == 4) r.metrics.clear();
    written.push_back(r);
  }
  ASSERT_TRUE(store->PutRecords(written).ok());
  AggregateRecord hour = Record(device_, 60, 1);
  hour.resolution = model::Resolution::kHour;  // not base: ignored
  ASSERT_TRUE(store->PutRecord(hour).ok());

  ASSERT_TRUE(*store->Get(device_, 60, &snap));
  EXPECT_FALSE(snap.has_reading);
  ASSERT_EQ(snap.records.size(), written.size());
  for (size_t i = 0; i < written.size(); ++i) {
    EXPECT_EQ(snap.records[i], written[written.size() - 1 - i]) << i;
  }

  model::Event e;
  e.device_id = device_;
  e.timestamp_ns = kBaseNs + 7 * kNanosPerSecond + 5;
  e.received_at_ns = kBaseNs + 8 * kNanosPerSecond;
  e.metrics = {{"voltage_v", 229.5}, {"power_w", 0.0}, {"energy_wh", 10452.5}};
  e.meta_json = R"({"location":"kitchen"})";
  ASSERT_TRUE(store->PutReading(e).ok());
  model::Event older = e;
  older.timestamp_ns -= 1;  // 1 ns older: the order key compares at full precision
  older.metrics = {{"power_w", 99.0}};
  ASSERT_TRUE(store->PutReading(older).ok());
  model::Event same = e;  // the same time: a duplicate the engine drops; the first stays
  same.metrics = {{"power_w", 98.0}};
  ASSERT_TRUE(store->PutReading(same).ok());
  ASSERT_TRUE(*store->Get(device_, 1, &snap));
  ASSERT_EQ(snap.records.size(), 1u);
  EXPECT_EQ(snap.records[0], written.back());
  ASSERT_TRUE(snap.has_reading);
  EXPECT_EQ(snap.reading.timestamp_ns, kBaseNs + 7 * kNanosPerSecond);  // ms precision
  EXPECT_EQ(snap.reading.received_at_ns, e.received_at_ns);
  EXPECT_EQ(snap.reading.metrics, e.metrics);
  EXPECT_EQ(snap.reading.meta_json, e.meta_json);

  // A device with only a reading is found.
  model::Event only = e;
  only.device_id = Device("reading-only");
  ASSERT_TRUE(store->PutReading(only).ok());
  ASSERT_TRUE(*store->Get(only.device_id, 60, &snap));
  EXPECT_TRUE(snap.has_reading);
  EXPECT_TRUE(snap.records.empty());
}

TEST_F(RedisLatestStoreTest, PipelinedBatchesMatchSingleWrites) {
  auto store = OpenStore(/*windows=*/50);
  ASSERT_NE(store, nullptr);
  const std::string other = Device("other");
  std::vector<AggregateRecord> batch;
  for (int m = 0; m < 300; ++m) {  // more than one pipeline chunk
    batch.push_back(Record(m % 2 ? device_ : other, m / 2, 2));
    batch.push_back(Record(m % 2 ? device_ : other, m / 2, 1));  // stale right after
  }
  ASSERT_TRUE(store->PutRecords(batch).ok());
  for (const std::string& d : {device_, other}) {
    EXPECT_EQ(raw_->Integer({"HLEN", RedisLatestKey(d)}), 50);
    LatestSnapshot snap;
    ASSERT_TRUE(*store->Get(d, 60, &snap));
    ASSERT_EQ(snap.records.size(), 50u);
    EXPECT_EQ(snap.records[0], Record(d, 149, 2));
    EXPECT_EQ(snap.records[49], Record(d, 100, 2));
  }
}

// A processor's batch of readings in one pipelined call: the newest event time per device
// wins, ties go to the earlier event (a later copy of the same time is a duplicate), as with
// one PutReading per event in order.
TEST_F(RedisLatestStoreTest, PipelinedReadingsMatchSingleWrites) {
  auto store = OpenStore(/*windows=*/5);
  ASSERT_NE(store, nullptr);
  const std::string other = Device("other");
  std::vector<model::Event> batch;
  for (int i = 0; i < 600; ++i) {  // more than two pipeline chunks
    model::Event e;
    e.device_id = i % 2 ? device_ : other;
    e.timestamp_ns = kBaseNs + ((i * 37) % 101) * kNanosPerMilli;  // out of order, ties
    e.received_at_ns = kBaseNs + i * kNanosPerMilli;
    e.metrics = {{"power_w", static_cast<double>(i)}};
    batch.push_back(e);
  }
  ASSERT_TRUE(store->PutReadings(batch).ok());
  ASSERT_TRUE(store->PutReadings({}).ok());
  for (const std::string& d : {device_, other}) {
    const model::Event* want = nullptr;
    for (const model::Event& e : batch) {
      if (e.device_id == d && (want == nullptr || e.timestamp_ns > want->timestamp_ns)) want = &e;
    }
    LatestSnapshot snap;
    ASSERT_TRUE(*store->Get(d, 1, &snap));
    ASSERT_TRUE(snap.has_reading);
    EXPECT_EQ(snap.reading.timestamp_ns, want->timestamp_ns) << d;
    EXPECT_EQ(snap.reading.received_at_ns, want->received_at_ns) << d;
    EXPECT_EQ(snap.reading.metrics, want->metrics) << d;
  }
}

TEST_F(RedisLatestStoreTest, ReconnectsAfterTheServerDropsTheConnection) {
  const std::string name = "joule-test-" + RunId() + "-reconnect";
  auto store = OpenStore(60, 2, name);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->PutRecord(Record(device_, 0, 1)).ok());
  ASSERT_TRUE(store->Ping().ok());
  // Kill every connection of this store.
  auto list = raw_->String({"CLIENT", "LIST"});
  ASSERT_TRUE(list.has_value());
  int killed = 0;
  size_t pos = 0;
  while ((pos = list->find("id=", pos)) != std::string::npos) {
    const size_t end = list->find('\n', pos);
    const std::string line = list->substr(pos, end - pos);
    pos = end;
    if (line.find(" name=" + name + " ") == std::string::npos) continue;
    const std::string id = line.substr(3, line.find(' ') - 3);
    killed += static_cast<int>(raw_->Integer({"CLIENT", "KILL", "ID", id}));
  }
  ASSERT_GE(killed, 1);
  for (int i = 0; i < 4; ++i) {  // every pooled connection is stale now
    Status st = store->PutRecord(Record(device_, 0, static_cast<uint64_t>(2 + i)));
    ASSERT_TRUE(st.ok()) << st.ToString();
  }
  LatestSnapshot snap;
  ASSERT_TRUE(*store->Get(device_, 1, &snap));
  EXPECT_EQ(snap.records.at(0).version, 5u);
}

// The scripts are sent by EVALSHA; a server that does not know them (restarted, or
// SCRIPT FLUSH) answers NOSCRIPT and the store re-sends them by EVAL, for single writes
// and pipelined batches alike. (SCRIPT FLUSH only empties the script cache: every Lua
// user in Joule is this store, which recovers as tested here.)
TEST_F(RedisLatestStoreTest, FallsBackToEvalWhenTheServerForgetsTheScripts) {
  auto store = OpenStore(60, 1);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->PutRecord(Record(device_, 0, 1)).ok());
  ASSERT_EQ(raw_->Run({"SCRIPT", "FLUSH"})->type, REDIS_REPLY_STATUS);
  Status st = store->PutRecord(Record(device_, 0, 2));
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(StoredVersion(RedisWindowKey(device_, kBaseNs)), 2u);

  ASSERT_EQ(raw_->Run({"SCRIPT", "FLUSH"})->type, REDIS_REPLY_STATUS);
  std::vector<AggregateRecord> batch = {Record(device_, 1, 1), Record(device_, 0, 1),
                                        Record(device_, 2, 4)};
  st = store->PutRecords(batch);
  ASSERT_TRUE(st.ok()) << st.ToString();

  ASSERT_EQ(raw_->Run({"SCRIPT", "FLUSH"})->type, REDIS_REPLY_STATUS);
  model::Event e;
  e.device_id = device_;
  e.timestamp_ns = kBaseNs;
  e.metrics = {{"power_w", 2.0}};
  st = store->PutReading(e);
  ASSERT_TRUE(st.ok()) << st.ToString();

  LatestSnapshot snap;
  ASSERT_TRUE(*store->Get(device_, 60, &snap));
  ASSERT_EQ(snap.records.size(), 3u);
  EXPECT_EQ(snap.records[0], Record(device_, 2, 4));
  EXPECT_EQ(snap.records[1], Record(device_, 1, 1));
  EXPECT_EQ(snap.records[2], Record(device_, 0, 2));
  EXPECT_TRUE(snap.has_reading);
}

// Found by a black-box test: a key of the wrong type set by hand (WRONGTYPE) made every
// write of that device fail with nothing but counters; now the error names the device and
// the key, and it is logged (at most once per 10 s).
TEST_F(RedisLatestStoreTest, ARefusedWriteNamesTheDeviceAndKeyAndIsLogged) {
  auto store = OpenStore(60, 1);
  ASSERT_NE(store, nullptr);
  const std::string bad = Device("bad");
  ASSERT_EQ(raw_->Run({"SET", RedisLatestKey(bad), "x"})->type, REDIS_REPLY_STATUS);
  ::testing::internal::CaptureStderr();
  std::vector<AggregateRecord> batch = {Record(device_, 0, 1), Record(bad, 0, 1)};
  Status st = store->PutRecords(batch);
  Status again = store->PutRecord(Record(bad, 1, 1));
  const std::string log = ::testing::internal::GetCapturedStderr();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.code(), StatusCode::kUnavailable) << st.ToString();
  EXPECT_NE(st.message().find("WRONGTYPE"), std::string::npos) << st.ToString();
  EXPECT_NE(st.message().find("device " + bad), std::string::npos) << st.ToString();
  EXPECT_NE(st.message().find("key " + RedisLatestKey(bad)), std::string::npos) << st.ToString();
  EXPECT_FALSE(again.ok());
  size_t lines = 0;
  for (size_t at = log.find("redis refused a write"); at != std::string::npos;
       at = log.find("redis refused a write", at + 1)) {
    ++lines;
  }
  EXPECT_EQ(lines, 1u) << log;  // rate-limited
  EXPECT_NE(log.find(RedisLatestKey(bad)), std::string::npos) << log;
  EXPECT_EQ(StoredVersion(RedisWindowKey(device_, kBaseNs)), 1u);  // the others are written
  raw_->Run({"DEL", RedisLatestKey(bad)});
}

// A TCP proxy to the test server that can hold the server's bytes back, as a frozen
// (SIGSTOPped) Redis does, and release them later into the connection they were sent on.
// One thread polls every connection; a connection closed by either end is closed on both.
class FreezingProxy {
 public:
  explicit FreezingProxy(const RedisEndpoint& target) : target_(target) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (listen_fd_ < 0 || bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
        listen(listen_fd_, 16) != 0 ||
        getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      ADD_FAILURE() << "proxy: cannot listen";
      return;
    }
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Run(); });
  }
  ~FreezingProxy() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    if (listen_fd_ >= 0) close(listen_fd_);
  }
  int port() const { return port_; }
  void set_frozen(bool frozen) { frozen_ = frozen; }

 private:
  struct Pair {
    int client;
    int upstream;
  };

  int ConnectUpstream() const {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(target_.port));
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || inet_pton(AF_INET, target_.host.c_str(), &addr.sin_addr) != 1 ||
        connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      if (fd >= 0) close(fd);
      return -1;
    }
    return fd;
  }

  // Moves what `from` has to `to`; false when either is closed.
  static bool Pump(int from, int to) {
    char buf[16384];
    const ssize_t n = read(from, buf, sizeof buf);
    if (n <= 0) return false;
    for (ssize_t done = 0; done < n;) {
      const ssize_t w = write(to, buf + done, static_cast<size_t>(n - done));
      if (w <= 0) return false;
      done += w;
    }
    return true;
  }

  void Run() {
    std::vector<Pair> pairs;
    while (!stop_) {
      const bool frozen = frozen_;
      std::vector<pollfd> fds = {{listen_fd_, POLLIN, 0}};
      for (const Pair& p : pairs) {
        fds.push_back({p.client, POLLIN, 0});
        fds.push_back({p.upstream, static_cast<short>(frozen ? 0 : POLLIN), 0});
      }
      if (poll(fds.data(), fds.size(), 10) <= 0) continue;
      std::vector<Pair> open;
      for (size_t i = 0; i < pairs.size(); ++i) {
        const Pair& p = pairs[i];
        const auto ready = [&](size_t at) {
          return (fds[at].revents & (POLLIN | POLLHUP | POLLERR)) != 0;
        };
        bool alive = !ready(1 + 2 * i) || Pump(p.client, p.upstream);
        if (alive && !frozen && ready(2 + 2 * i)) alive = Pump(p.upstream, p.client);
        if (alive) {
          open.push_back(p);
        } else {
          close(p.client);
          close(p.upstream);
        }
      }
      pairs = std::move(open);
      if (fds[0].revents & POLLIN) {
        const int client = accept(listen_fd_, nullptr, nullptr);
        const int upstream = ConnectUpstream();
        if (client >= 0 && upstream >= 0) {
          pairs.push_back({client, upstream});
        } else {
          if (client >= 0) close(client);
          if (upstream >= 0) close(upstream);
        }
      }
    }
    for (const Pair& p : pairs) {
      close(p.client);
      close(p.upstream);
    }
  }

  RedisEndpoint target_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> frozen_{false};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Asked by a black-box test (a frozen Redis, then empty realtime answers): may the reply
// to a timed-out request, arriving late, be taken for the next request's — another
// device's data? No: a timeout drops the connection (its late reply goes nowhere) and the
// next call opens a new one. Were the connection kept, the next read would get the stale
// reply, which leads the stream.
TEST_F(RedisLatestStoreTest, LateReplyOfATimedOutReadIsNeverTakenForTheNext) {
  const std::string a = Device("a"), b = Device("b");
  auto direct = OpenStore();
  ASSERT_NE(direct, nullptr);
  ASSERT_TRUE(direct->PutRecord(Record(a, 0, 1)).ok());
  ASSERT_TRUE(direct->PutRecord(Record(b, 5, 7)).ok());
  FreezingProxy proxy(endpoint_);
  ASSERT_NE(proxy.port(), 0);
  RedisLatestStoreOptions o;
  o.url = endpoint_.password.empty()
              ? fmt::format("redis://127.0.0.1:{}/{}", proxy.port(), endpoint_.db)
              : fmt::format("redis://{}:{}@127.0.0.1:{}/{}", endpoint_.username, endpoint_.password,
                            proxy.port(), endpoint_.db);
  o.connections = 1;  // one connection: a kept one would be the next call's
  o.command_timeout_ns = 100 * kNanosPerMilli;
  o.instance_id.clear();  // only reads here
  auto store = RedisLatestStore::Open(o);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  LatestSnapshot snap;
  ASSERT_TRUE(*(*store)->Get(a, 10, &snap));

  proxy.set_frozen(true);
  const Result<bool> timed_out = (*store)->Get(a, 10, &snap);
  EXPECT_EQ(timed_out.status().code(), StatusCode::kUnavailable);
  proxy.set_frozen(false);  // a's late replies go out now
  for (int i = 0; i < 3; ++i) {
    LatestSnapshot got;
    Result<bool> found = (*store)->Get(b, 10, &got);
    ASSERT_TRUE(found.ok()) << found.status().ToString();
    ASSERT_TRUE(*found);
    ASSERT_EQ(got.records.size(), 1u);
    EXPECT_EQ(got.records[0].device_id, b);
    EXPECT_EQ(got.records[0], Record(b, 5, 7));
    found = (*store)->Get(a, 10, &got);
    ASSERT_TRUE(found.ok() && *found);
    ASSERT_EQ(got.records.size(), 1u);
    EXPECT_EQ(got.records[0], Record(a, 0, 1));
  }
}

// A port where nothing listens: every call is Unavailable, promptly, and the store keeps
// working (trying to reconnect) call after call.
TEST(RedisLatestStoreDownTest, RefusedConnectionIsUnavailable) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  close(fd);  // bound, never listened, now closed: connecting is refused

  RedisLatestStoreOptions o;
  o.url = fmt::format("redis://127.0.0.1:{}/0", ntohs(addr.sin_port));
  auto store = RedisLatestStore::Open(o);
  ASSERT_TRUE(store.ok());
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ((*store)->PutRecord(Record("d", 0, 1)).code(), StatusCode::kUnavailable);
    std::vector<AggregateRecord> batch = {Record("d", 1, 1)};
    EXPECT_EQ((*store)->PutRecords(batch).code(), StatusCode::kUnavailable);
    model::Event e;
    e.device_id = "d";
    e.metrics = {{"power_w", 1}};
    EXPECT_EQ((*store)->PutReading(e).code(), StatusCode::kUnavailable);
    LatestSnapshot snap;
    EXPECT_EQ((*store)->Get("d", 10, &snap).status().code(), StatusCode::kUnavailable);
    Status ping = (*store)->Ping();
    EXPECT_EQ(ping.code(), StatusCode::kUnavailable);
    EXPECT_NE(ping.message().find("cannot connect"), std::string::npos) << ping.message();
  }
  // A generous bound that only a hang would exceed (15 refused connects).
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

// A server that accepts the connection (the kernel does, from the backlog) and never
// answers: the command timeout turns the wait into Unavailable.
TEST(RedisLatestStoreDownTest, SilentServerTimesOut) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(fd, 16), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);

  RedisLatestStoreOptions o;
  o.url = fmt::format("redis://127.0.0.1:{}/0", ntohs(addr.sin_port));
  o.command_timeout_ns = 100 * kNanosPerMilli;
  o.connections = 1;
  auto store = RedisLatestStore::Open(o);
  ASSERT_TRUE(store.ok());
  const auto start = std::chrono::steady_clock::now();
  Status st = (*store)->PutRecord(Record("d", 0, 1));
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_NE(st.message().find("timed out"), std::string::npos) << st.message();
  LatestSnapshot snap;
  EXPECT_EQ((*store)->Get("d", 10, &snap).status().code(), StatusCode::kUnavailable);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  close(fd);
}

}  // namespace
}  // namespace joule::store

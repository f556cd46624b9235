// GET /v1/devices/{id}/metrics/history through the real router and route code over a
// real RocksDB history store: paging across window and day boundaries (UTC midnight and
// a local-day boundary, at 1m, 1h and 1d, JSON and CSV) neither skips nor repeats; the
// JSON cache answers byte for byte what encoding does, also after late updates and under
// concurrent writers of many versions; retention hides expired records from the API.
#include <gtest/gtest.h>
#include <simdjson.h>
#include <stdlib.h>
#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "api/api_context.h"
#include "api/auth.h"
#include "api/record_json_cache.h"
#include "api/routes.h"
#include "common/clock.h"
#include "common/time_format.h"
#include "net/router.h"
#include "store/memory/memory_latest_store.h"
#include "store/rocksdb/rocksdb_history_store.h"

namespace joule::api {
namespace {

using model::AggregateRecord;
using model::MetricAggregate;
using model::MetricKind;
using model::Resolution;

int64_t Utc(int y, unsigned mo, unsigned d, int h = 0, int mi = 0) {
  return (DaysFromCivil(y, mo, d) * 86400 + h * 3600 + mi * 60) * kNanosPerSecond;
}

constexpr char kDevice[] = "plug-42";

int64_t ParseTime(std::string_view text) {
  int64_t ns = 0;
  EXPECT_TRUE(ParseRfc3339(text, &ns)) << text;
  return ns;
}

AggregateRecord MakeRecord(Resolution r, int64_t start, int64_t end, uint64_t version,
                           double seed) {
  AggregateRecord rec;
  rec.device_id = kDevice;
  rec.resolution = r;
  rec.window_start_ns = start;
  rec.window_end_ns = end;
  rec.final = version > 1;
  rec.version = version;
  rec.count = 6;
  if (r == Resolution::kDay) {
    rec.timezone = "Europe/Berlin";
    rec.local_date = "local-" + std::to_string(start / kNanosPerSecond);
  }
  MetricAggregate p{"power_w",  MetricKind::kPower, 6,          seed,
                    seed + 0.5, 6 * seed + 1.25,    seed + 0.1, seed + 0.3,
                    seed / 7.0, (end - start) / 2,  0,          0};
  MetricAggregate e{
      "energy_wh", MetricKind::kCounter, 6, 1000 + seed, 1001 + seed,      6006 + seed,
      1000 + seed, 1001 + seed,          0, 0,           1.0 / 3.0 + seed, 1};
  MetricAggregate v{
      "voltage_v", MetricKind::kGauge, 6, 229.5, 231.25, 1381.5, 230.0, 230.1, 0, 0, 0, 0};
  rec.metrics = {e, p, v};
  return rec;
}

struct Response {
  int status = 0;
  std::string body;
  net::HttpHeaders headers;
  std::string Header(std::string_view name) const {
    for (const auto& [k, v] : headers) {
      if (k == name) return v;
    }
    return "";
  }
};

// One API context + router; `cache` decides whether it answers through the JSON cache.
struct Api {
  Api(store::HistoryStore* history, const Clock* clock, RecordJsonCache* cache)
      : auth("disabled", "", nullptr) {
    ctx.clock = clock;
    ctx.metrics = &metrics;
    ctx.auth = &auth;
    ctx.latest = &latest;
    ctx.history = history;
    ctx.history_json_cache = cache;
    AddHistoryRoutes(router, ctx);
  }
  Response Get(const std::string& device, const std::map<std::string, std::string>& query,
               const net::HttpHeaders& headers = {}) {
    net::HttpRequest req;
    req.method = "GET";
    req.headers = headers;
    req.path = "/v1/devices/" + device + "/metrics/history";
    for (const auto& [k, v] : query) req.query.emplace_back(k, v);
    Response out;
    router.Dispatch(req, net::Responder::FromCallback([&out](net::HttpResponse r) {
                      out.status = r.status;
                      out.body = std::move(r.body);
                      out.headers = std::move(r.headers);
                    }));
    return out;
  }
  MetricsRegistry metrics;
  Authenticator auth;
  store::MemoryLatestStore latest;
  ApiContext ctx;
  net::Router router;
};

struct Page {
  std::vector<std::string> records;  // each record's JSON, minified
  std::string next_cursor;           // "" = null
  std::string resolution;
};

Page ParsePage(const Response& r) {
  Page page;
  EXPECT_EQ(r.status, 200) << r.body;
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  auto error = parser.parse(r.body).get(doc);
  EXPECT_FALSE(error) << r.body.substr(0, 300);
  if (error) return page;
  for (simdjson::dom::element e : doc["data"].get_array()) {
    page.records.push_back(simdjson::minify(e));
  }
  simdjson::dom::element cursor = doc["next_cursor"];
  if (!cursor.is_null()) page.next_cursor = std::string(std::string_view(cursor.get_string()));
  page.resolution = std::string(std::string_view(doc["resolution"].get_string()));
  return page;
}

class HistoryRoutesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/joule-history-routes-XXXXXX";
    dir_ = mkdtemp(tmpl);
    Open(store::HistoryRetention::Forever());
  }
  void TearDown() override {
    cached_.reset();
    uncached_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  void Open(store::HistoryRetention retention) {
    cached_.reset();
    uncached_.reset();
    store_.reset();
    store::RocksDbHistoryOptions o;
    o.path = dir_ + "/history";
    o.retention = retention;
    o.clock = &clock_;
    auto opened = store::RocksDbHistoryStore::Open(o, nullptr);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    store_ = std::move(opened).value();
    cache_ = std::make_unique<RecordJsonCache>(64 << 20, &cache_metrics_);
    cache_->Attach(store_.get());
    cached_ = std::make_unique<Api>(store_.get(), &clock_, cache_.get());
    uncached_ = std::make_unique<Api>(store_.get(), &clock_, nullptr);
  }
  void Put(const std::vector<AggregateRecord>& records) {
    Status s = store_->Put(records);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  // n consecutive 1m records from `start`, version 1, window k with value k.
  void PutMinutes(int64_t start, int n) {
    std::vector<AggregateRecord> batch;
    for (int k = 0; k < n; ++k) {
      const int64_t s = start + k * kNanosPerMinute;
      batch.push_back(MakeRecord(Resolution::kBase, s, s + kNanosPerMinute, 1, k));
    }
    Put(batch);
  }

  // resolution=1m over [start, start + 1 h), plus `extra` parameters.
  static std::map<std::string, std::string> HourQuery(
      int64_t start, std::map<std::string, std::string> extra = {}) {
    extra["resolution"] = "1m";
    extra["from"] = FormatRfc3339Millis(start);
    extra["to"] = FormatRfc3339Millis(start + kNanosPerHour);
    return extra;
  }

  // Pages through [from, to) with `limit` and checks that the concatenation equals the
  // unpaged answer (cached and uncached alike, byte for byte), with the expected number
  // of pages, each at most `limit` long.
  void CheckPaging(const std::string& resolution, int64_t from, int64_t to,
                   size_t expected_records) {
    std::map<std::string, std::string> q = {{"resolution", resolution},
                                            {"from", FormatRfc3339Millis(from)},
                                            {"to", FormatRfc3339Millis(to)},
                                            {"limit", "10000"}};
    Page whole = ParsePage(uncached_->Get(kDevice, q));
    ASSERT_EQ(whole.records.size(), expected_records) << resolution;
    EXPECT_EQ(whole.next_cursor, "");
    Page whole_cached = ParsePage(cached_->Get(kDevice, q));
    EXPECT_EQ(whole_cached.records, whole.records) << "cache differs from encoding";
    const size_t n = expected_records;
    for (size_t limit :
         {size_t{1}, size_t{7}, size_t{59}, size_t{60}, size_t{61}, n - 1, n, n + 1}) {
      if (limit == 0) continue;
      for (Api* api : {cached_.get(), uncached_.get()}) {
        std::vector<std::string> all;
        std::map<std::string, std::string> pq = q;
        pq["limit"] = std::to_string(limit);
        size_t pages = 0;
        while (true) {
          Page page = ParsePage(api->Get(kDevice, pq));
          ASSERT_LE(page.records.size(), limit);
          ASSERT_FALSE(page.records.empty()) << resolution << " limit " << limit;
          all.insert(all.end(), page.records.begin(), page.records.end());
          ++pages;
          ASSERT_LE(pages, n + 1) << "paging does not end";
          if (page.next_cursor.empty()) break;
          pq["cursor"] = page.next_cursor;
        }
        EXPECT_EQ(pages, (n + limit - 1) / limit) << resolution << " limit " << limit;
        EXPECT_EQ(all, whole.records) << resolution << " limit " << limit;
      }
    }
  }

  std::string dir_;
  ManualClock clock_{Utc(2026, 4, 30)};
  std::unique_ptr<store::RocksDbHistoryStore> store_;
  MetricsRegistry cache_metrics_;
  std::unique_ptr<RecordJsonCache> cache_;
  std::unique_ptr<Api> cached_, uncached_;
};

// 1m windows from 22:00Z to 02:00Z: crosses Berlin's local midnight (23:00Z, CET) and UTC
// midnight, on the night the clocks change (2026-03-29). A gap and a from/to that do not
// fall on window starts are included.
TEST_F(HistoryRoutesTest, MinutePagesAcrossMidnightsNeitherSkipNorRepeat) {
  const int64_t start = Utc(2026, 3, 28, 22, 0);
  std::vector<AggregateRecord> batch;
  for (int k = 0; k < 240; ++k) {
    if (k >= 100 && k < 105) continue;  // a gap of five minutes
    const int64_t s = start + k * kNanosPerMinute;
    batch.push_back(MakeRecord(Resolution::kBase, s, s + kNanosPerMinute, 1 + k % 3, k));
  }
  Put(batch);
  // from 30 s into the first window: that window starts before `from` and is excluded.
  CheckPaging("1m", start + 30 * kNanosPerSecond, start + 240 * kNanosPerMinute, 234);
  CheckPaging("1m", start, start + 240 * kNanosPerMinute, 235);
}

TEST_F(HistoryRoutesTest, HourPagesAcrossDaysNeitherSkipNorRepeat) {
  const int64_t start = Utc(2026, 3, 27, 12);
  std::vector<AggregateRecord> batch;
  for (int k = 0; k < 72; ++k) {
    const int64_t s = start + k * kNanosPerHour;
    batch.push_back(MakeRecord(Resolution::kHour, s, s + kNanosPerHour, 2, 10.0 * k));
  }
  Put(batch);
  CheckPaging("1h", start, start + 72 * kNanosPerHour, 72);
}

// Local days of Europe/Berlin over March and April 2026: 24 h days, the 23 h day of the
// DST change, then days starting at 22:00Z.
TEST_F(HistoryRoutesTest, LocalDayPagesAcrossTheDstChangeNeitherSkipNorRepeat) {
  std::vector<AggregateRecord> batch;
  std::vector<int64_t> starts;
  for (unsigned month : {3u, 4u}) {
    for (unsigned day = 1; day <= (month == 3 ? 31u : 30u); ++day) {
      const bool summer = month == 4 || day >= 30;  // the 29th starts in CET
      starts.push_back(Utc(2026, month, day) - (summer ? 2 : 1) * kNanosPerHour);
    }
  }
  starts.push_back(Utc(2026, 5, 1) - 2 * kNanosPerHour);
  for (size_t i = 0; i + 1 < starts.size(); ++i) {
    batch.push_back(MakeRecord(Resolution::kDay, starts[i], starts[i + 1], 3, 1.5 * i));
  }
  EXPECT_EQ(starts[29] - starts[28], 23 * kNanosPerHour) << "2026-03-29 is 23 h long";
  Put(batch);
  CheckPaging("1d", starts.front(), starts.back(), starts.size() - 1);
  // A range starting in the middle of a local day: that day is not included.
  CheckPaging("1d", Utc(2026, 3, 29, 12), starts.back(), 32);
}

TEST_F(HistoryRoutesTest, CsvPagesNeitherSkipNorRepeat) {
  const int64_t start = Utc(2026, 3, 28, 23, 30);
  std::vector<AggregateRecord> batch;
  for (int k = 0; k < 61; ++k) {
    const int64_t s = start + k * kNanosPerMinute;
    batch.push_back(MakeRecord(Resolution::kBase, s, s + kNanosPerMinute, 1, 0.1 * k));
  }
  Put(batch);
  std::map<std::string, std::string> q = HourQuery(start, {{"format", "csv"}});
  auto lines = [](const std::string& text) {
    std::vector<std::string> out;
    size_t at = 0;
    while (at < text.size()) {
      size_t nl = text.find('\n', at);
      out.push_back(text.substr(at, nl - at));
      at = nl + 1;
    }
    return out;
  };
  Response whole = cached_->Get(kDevice, q);
  ASSERT_EQ(whole.status, 200);
  EXPECT_EQ(whole.Header("X-Next-Cursor"), "");
  std::vector<std::string> expected = lines(whole.body);
  ASSERT_EQ(expected.size(), 61u) << "header + 60 windows in [from, to)";
  for (size_t limit : {1u, 7u, 59u, 60u}) {
    std::vector<std::string> rows;
    std::map<std::string, std::string> pq = q;
    pq["limit"] = std::to_string(limit);
    size_t pages = 0;
    while (true) {
      Response r = cached_->Get(kDevice, pq);
      ASSERT_EQ(r.status, 200) << r.body;
      std::vector<std::string> l = lines(r.body);
      ASSERT_GE(l.size(), 2u);
      ASSERT_LE(l.size(), limit + 1);
      EXPECT_EQ(l[0], expected[0]) << "every page has the header row";
      rows.insert(rows.end(), l.begin() + 1, l.end());
      ++pages;
      ASSERT_LE(pages, 61u);
      const std::string cursor = r.Header("X-Next-Cursor");
      if (cursor.empty()) break;
      pq["cursor"] = cursor;
    }
    EXPECT_EQ(pages, (60 + limit - 1) / limit);
    EXPECT_EQ(rows, std::vector<std::string>(expected.begin() + 1, expected.end()));
  }
}

// Decompresses every frame of `in` (the streaming API reads concatenated frames).
std::string Unzstd(const std::string& in) {
  std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> d(ZSTD_createDCtx(), &ZSTD_freeDCtx);
  std::string out;
  ZSTD_inBuffer src{in.data(), in.size(), 0};
  std::string chunk(1 << 16, '\0');
  while (src.pos < src.size) {
    ZSTD_outBuffer dst{chunk.data(), chunk.size(), 0};
    size_t rc = ZSTD_decompressStream(d.get(), &dst, &src);
    EXPECT_FALSE(ZSTD_isError(rc)) << ZSTD_getErrorName(rc);
    if (ZSTD_isError(rc)) return "";
    out.append(chunk.data(), dst.pos);
  }
  return out;
}

// A client that accepts zstd gets a repeated (cached) page compressed: two frames that
// decompress to exactly the uncompressed body; q=0 or no header: plain JSON.
TEST_F(HistoryRoutesTest, CachedPageInZstd) {
  const int64_t start = Utc(2026, 4, 29, 10);
  PutMinutes(start, 60);
  std::map<std::string, std::string> q = HourQuery(start);
  const std::string plain = uncached_->Get(kDevice, q).body;
  cached_->Get(kDevice, q);  // reads the store, covers the range
  Response z = cached_->Get(kDevice, q, {{"accept-encoding", "gzip, deflate, br, zstd"}});
  EXPECT_EQ(z.status, 200);
  EXPECT_EQ(z.Header("Content-Encoding"), "zstd");
  EXPECT_EQ(z.Header("Vary"), "Accept-Encoding");
  EXPECT_LT(z.body.size(), plain.size() / 4);
  EXPECT_EQ(Unzstd(z.body), plain);
  // Again (the compressed page now comes from the cache), then after a late update.
  EXPECT_EQ(Unzstd(cached_->Get(kDevice, q, {{"accept-encoding", "zstd"}}).body), plain);
  Put({MakeRecord(Resolution::kBase, start + 7 * kNanosPerMinute, start + 8 * kNanosPerMinute, 2,
                  777)});
  const std::string updated = uncached_->Get(kDevice, q).body;
  EXPECT_NE(updated, plain);
  EXPECT_EQ(Unzstd(cached_->Get(kDevice, q, {{"accept-encoding", "ZSTD;q=0.5"}}).body), updated);
  for (const char* refused : {"zstd;q=0", "gzip", "zstd;q=0.000", "identity"}) {
    Response r = cached_->Get(kDevice, q, {{"accept-encoding", refused}});
    EXPECT_EQ(r.Header("Content-Encoding"), "") << refused;
    EXPECT_EQ(r.body, updated) << refused;
  }
}

// CSV is kept per request parameters: repeated answers equal the uncached ones, before and
// after a late update and a new window inside the range, with and without metrics=.
TEST_F(HistoryRoutesTest, CsvPagesFollowWrites) {
  const int64_t start = Utc(2026, 4, 29, 10);
  PutMinutes(start, 40);
  for (const char* metrics : {"", "power_w"}) {
    // metrics= JSON is kept the same way.
    std::map<std::string, std::string> jq = HourQuery(start, {{"metrics", "power_w,voltage_v"}});
    if (*metrics != '\0') jq["limit"] = "25";
    const std::string json = uncached_->Get(kDevice, jq).body;
    EXPECT_EQ(cached_->Get(kDevice, jq).body, json);
    EXPECT_EQ(cached_->Get(kDevice, jq).body, json);
    std::map<std::string, std::string> q = HourQuery(start, {{"format", "csv"}, {"limit", "30"}});
    if (*metrics != '\0') q["metrics"] = metrics;
    Response plain = uncached_->Get(kDevice, q);
    ASSERT_EQ(plain.status, 200);
    EXPECT_EQ(cached_->Get(kDevice, q).body, plain.body) << metrics;
    Response again = cached_->Get(kDevice, q);
    EXPECT_EQ(again.body, plain.body) << metrics;
    EXPECT_EQ(again.Header("X-Next-Cursor"), plain.Header("X-Next-Cursor"));
    EXPECT_FALSE(again.Header("X-Next-Cursor").empty());
  }
  std::map<std::string, std::string> q = HourQuery(start, {{"format", "csv"}});
  Counter* covered = cache_metrics_.GetCounter("joule_history_json_cache_covered_reads_total", "");
  const std::string before = cached_->Get(kDevice, q).body;
  const uint64_t covered_before = covered->Value();
  EXPECT_EQ(cached_->Get(kDevice, q).body, before);
  EXPECT_EQ(covered->Value(), covered_before + 1) << "the CSV was kept";
  Put({MakeRecord(Resolution::kBase, start + 5 * kNanosPerMinute, start + 6 * kNanosPerMinute, 2,
                  555),
       MakeRecord(Resolution::kBase, start + 50 * kNanosPerMinute, start + 51 * kNanosPerMinute, 1,
                  50)});
  const std::string after = uncached_->Get(kDevice, q).body;
  EXPECT_NE(after, before);
  EXPECT_EQ(cached_->Get(kDevice, q).body, after);
  EXPECT_EQ(cached_->Get(kDevice, q).body, after);
  std::map<std::string, std::string> jq = HourQuery(start, {{"metrics", "power_w"}});
  const std::string json_before = cached_->Get(kDevice, jq).body;
  EXPECT_EQ(cached_->Get(kDevice, jq).body, json_before);
  EXPECT_EQ(covered->Value(), covered_before + 3) << "the filtered JSON was kept";
  Put({MakeRecord(Resolution::kBase, start + 9 * kNanosPerMinute, start + 10 * kNanosPerMinute, 2,
                  999)});
  const std::string json_after = uncached_->Get(kDevice, jq).body;
  EXPECT_NE(json_after, json_before);
  EXPECT_EQ(cached_->Get(kDevice, jq).body, json_after);
}

// The cache never answers an older version: after late updates (higher versions, changed
// values) and new windows, cached and uncached answers stay identical and show them.
TEST_F(HistoryRoutesTest, CacheFollowsLateUpdates) {
  const int64_t start = Utc(2026, 4, 29, 10);
  PutMinutes(start, 30);
  std::map<std::string, std::string> q = HourQuery(start);
  Response first = cached_->Get(kDevice, q);
  EXPECT_EQ(first.body, uncached_->Get(kDevice, q).body);
  Counter* covered = cache_metrics_.GetCounter("joule_history_json_cache_covered_reads_total", "");
  Counter* misses = cache_metrics_.GetCounter("joule_history_json_cache_misses_total", "");
  const uint64_t covered_before = covered->Value(), misses_before = misses->Value();
  EXPECT_EQ(first.body, cached_->Get(kDevice, q).body) << "served from the cache";
  EXPECT_EQ(covered->Value(), covered_before + 1) << "without reading the store";
  EXPECT_EQ(misses->Value(), misses_before);
  EXPECT_GT(cache_->bytes(), 30u * 500);

  // Late updates of every third window, one stale write, and new windows.
  std::vector<AggregateRecord> late;
  for (int k = 0; k < 30; k += 3) {
    const int64_t s = start + k * kNanosPerMinute;
    late.push_back(MakeRecord(Resolution::kBase, s, s + kNanosPerMinute, 2, 1000 + k));
  }
  late.push_back(MakeRecord(Resolution::kBase, start + kNanosPerMinute, start + 2 * kNanosPerMinute,
                            1, 5555));  // equal version: ignored
  for (int k = 30; k < 35; ++k) {
    const int64_t s = start + k * kNanosPerMinute;
    late.push_back(MakeRecord(Resolution::kBase, s, s + kNanosPerMinute, 1, k));
  }
  Put(late);
  Response second = cached_->Get(kDevice, q);
  EXPECT_EQ(covered->Value(), covered_before + 2) << "the writes kept the range covered";
  EXPECT_EQ(second.body, uncached_->Get(kDevice, q).body);
  EXPECT_NE(second.body, first.body);
  Page page = ParsePage(second);
  ASSERT_EQ(page.records.size(), 35u);
  for (int k = 0; k < 35; ++k) {
    const bool updated = k < 30 && k % 3 == 0;
    const std::string version = updated ? "\"version\":2" : "\"version\":1";
    EXPECT_NE(page.records[k].find(version), std::string::npos) << k << page.records[k];
  }
  EXPECT_EQ(page.records[1].find("5555"), std::string::npos) << "the stale write is ignored";

  // metrics= bypasses the cache and still answers the newest versions.
  q["metrics"] = "voltage_v";
  EXPECT_EQ(cached_->Get(kDevice, q).body, uncached_->Get(kDevice, q).body);
}

// Many threads write many versions of the same keys, in shuffled order, while readers page
// through the API (cached): a reader never sees a version go down, and at the end every
// key shows its highest version, identical with and without the cache.
TEST_F(HistoryRoutesTest, ConcurrentLateUpdatesHighestVersionWinsThroughTheApi) {
  constexpr int kWindows = 120, kVersions = 12, kWriters = 4;
  const int64_t start = Utc(2026, 4, 29, 23);  // crosses UTC midnight
  std::vector<std::pair<int, int>> work;       // (window, version)
  for (int k = 0; k < kWindows; ++k) {
    for (int v = 1; v <= kVersions; ++v) work.emplace_back(k, v);
  }
  std::shuffle(work.begin(), work.end(), std::mt19937(7));
  std::atomic<size_t> next{0};
  std::atomic<bool> done{false};
  std::vector<std::thread> writers;
  for (int t = 0; t < kWriters; ++t) {
    writers.emplace_back([&] {
      while (true) {
        const size_t i = next.fetch_add(3);
        if (i >= work.size()) break;
        std::vector<AggregateRecord> batch;  // three versions of (mostly) different keys
        for (size_t j = i; j < std::min(i + 3, work.size()); ++j) {
          const auto [k, v] = work[j];
          const int64_t s = start + k * kNanosPerMinute;
          batch.push_back(MakeRecord(Resolution::kBase, s, s + kNanosPerMinute,
                                     static_cast<uint64_t>(v), 100.0 * v + k));
        }
        EXPECT_TRUE(store_->Put(batch).ok());
      }
    });
  }
  std::map<std::string, std::string> q = {
      {"resolution", "1m"},
      {"from", FormatRfc3339Millis(start)},
      {"to", FormatRfc3339Millis(start + kWindows * kNanosPerMinute)},
      {"limit", "50"}};
  // before_first_write: the reader may ask before any writer's first record has landed,
  // when the device has no history yet (404); that answer counts as "nothing seen".
  auto versions_of = [&](Api& api, bool before_first_write = false) {
    std::map<std::string, uint64_t> out;  // window_start -> version
    std::map<std::string, std::string> pq = q;
    while (true) {
      Response r = api.Get(kDevice, pq);
      if (before_first_write && r.status == 404 && out.empty()) return out;
      EXPECT_EQ(r.status, 200) << r.body;
      if (r.status != 200) return out;
      simdjson::dom::parser parser;
      simdjson::dom::element doc = parser.parse(r.body);
      for (simdjson::dom::element e : doc["data"].get_array()) {
        const std::string ws(std::string_view(e["window_start"].get_string()));
        const uint64_t v = e["version"].get_uint64();
        // The record's values belong to its version: no mixing of versions.
        const double min = e["metrics"]["power_w"]["min"].get_double();
        const int k = static_cast<int>((ParseTime(ws) - start) / kNanosPerMinute);
        EXPECT_EQ(min, 100.0 * static_cast<double>(v) + k) << ws;
        EXPECT_TRUE(out.emplace(ws, v).second) << "repeated " << ws;
      }
      if (doc["next_cursor"].is_null()) break;
      pq["cursor"] = std::string(std::string_view(doc["next_cursor"].get_string()));
    }
    return out;
  };
  std::thread reader([&] {
    std::map<std::string, uint64_t> seen;
    while (!done.load()) {
      for (const auto& [ws, v] : versions_of(*cached_, seen.empty())) {
        uint64_t& before = seen[ws];
        EXPECT_GE(v, before) << "version went down at " << ws;
        before = v;
      }
    }
  });
  for (auto& w : writers) w.join();
  done = true;
  reader.join();
  std::map<std::string, uint64_t> cached = versions_of(*cached_);
  ASSERT_EQ(cached.size(), static_cast<size_t>(kWindows));
  for (const auto& [ws, v] : cached) EXPECT_EQ(v, static_cast<uint64_t>(kVersions)) << ws;
  q["limit"] = "10000";
  EXPECT_EQ(cached_->Get(kDevice, q).body, uncached_->Get(kDevice, q).body);
}

TEST_F(HistoryRoutesTest, RetentionHidesExpiredRecordsAlsoWhenCached) {
  store::HistoryRetention retention;  // 1m: 30 days
  Open(retention);
  const int64_t now = clock_.NowNanos();
  std::vector<AggregateRecord> batch;
  for (int days_ago : {29, 20, 1}) {
    const int64_t s = now - days_ago * kNanosPerDay;
    batch.push_back(MakeRecord(Resolution::kBase, s, s + kNanosPerMinute, 1, days_ago));
  }
  Put(batch);
  std::map<std::string, std::string> q = {{"resolution", "1m"},
                                          {"from", FormatRfc3339Millis(now - 40 * kNanosPerDay)},
                                          {"to", FormatRfc3339Millis(now)}};
  EXPECT_EQ(ParsePage(cached_->Get(kDevice, q)).records.size(), 3u);
  clock_.Advance(15 * kNanosPerDay);  // now the first two are 44 and 35 days old
  q["to"] = FormatRfc3339Millis(clock_.NowNanos());
  Page page = ParsePage(cached_->Get(kDevice, q));
  ASSERT_EQ(page.records.size(), 1u);
  EXPECT_NE(page.records[0].find(FormatRfc3339Millis(now - kNanosPerDay)), std::string::npos);
  EXPECT_EQ(ParsePage(uncached_->Get(kDevice, q)).records, page.records);
}

TEST_F(HistoryRoutesTest, UnknownDeviceIs404AndBadCursorIs400) {
  Put({MakeRecord(Resolution::kBase, Utc(2026, 4, 29), Utc(2026, 4, 29, 0, 1), 1, 1)});
  Response r = cached_->Get("nobody", {{"resolution", "1m"}});
  EXPECT_EQ(r.status, 404) << r.body;
  r = cached_->Get(kDevice, {{"resolution", "1m"},
                             {"from", FormatRfc3339Millis(Utc(2026, 4, 28))},
                             {"to", FormatRfc3339Millis(Utc(2026, 4, 30))},
                             {"cursor", "not-a-cursor"}});
  EXPECT_EQ(r.status, 400) << r.body;
}

// Found by the archive's black-box test (session 31): with auth.mode = "disabled" a device
// sending without registration got 404 "no such device" for a range without records and
// 200 for one with. A device Joule knows — history has any record of it (any resolution),
// the latest store a reading — gets an empty page, as realtime answers it; only an id Joule
// has never seen is 404. JSON (through the cache and without) and CSV alike.
TEST_F(HistoryRoutesTest, AKnownUnregisteredDeviceGetsAnEmptyPage) {
  const int64_t day = Utc(2026, 4, 29);
  Put({MakeRecord(Resolution::kBase, day, day + kNanosPerMinute, 1, 1)});
  const std::map<std::string, std::string> later = {
      {"resolution", "1d"},
      {"from", FormatRfc3339Millis(day + 10 * kNanosPerDay)},
      {"to", FormatRfc3339Millis(day + 20 * kNanosPerDay)}};
  for (Api* api : {cached_.get(), uncached_.get()}) {
    Response r = api->Get(kDevice, later);
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_TRUE(ParsePage(r).records.empty()) << r.body;
    std::map<std::string, std::string> csv = later;
    csv["format"] = "csv";
    r = api->Get(kDevice, csv);
    EXPECT_EQ(r.status, 200) << r.body;
    r = api->Get(kDevice, {{"resolution", "1m"}, {"metrics", "power_w"}});
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(api->Get("nobody", later).status, 404);
    csv["format"] = "csv";
    EXPECT_EQ(api->Get("nobody", csv).status, 404);
  }
  // Only a latest reading (nothing in history yet, e.g. before its first window ends).
  model::Event e;
  e.device_id = "fresh-1";
  e.timestamp_ns = day;
  e.received_at_ns = day;
  e.metrics = {{"power_w", 5.0}};
  ASSERT_TRUE(uncached_->latest.PutReading(e).ok());
  Response r = uncached_->Get("fresh-1", later);
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(cached_->Get("fresh-1", later).status, 404);  // its own latest store is empty
  // Only an hour in history (its minutes past retention): known too.
  AggregateRecord hour = MakeRecord(Resolution::kHour, day, day + kNanosPerHour, 1, 1);
  hour.device_id = "hourly-1";
  Put({hour});
  EXPECT_EQ(uncached_->Get("hourly-1", later).status, 200);
}

// resolution=auto counts the windows a range selects (those starting in [from, to)), partial
// ones included: 1500 whole minutes are 1m, one millisecond more is 1501 windows, so 1h
// (found by a black-box test: the span was divided with truncation).
TEST_F(HistoryRoutesTest, AutoCountsThePartialLastWindow) {
  // (every `to` below lies before the clock's now: a range is counted up to now + the
  // future skew, test OpenEndedRangeIsCountedUpToWhereDataCanEnd)
  const int64_t from = Utc(2026, 1, 28, 0, 0);
  // (records in the range: an id Joule has never seen would be 404)
  Put({MakeRecord(Resolution::kBase, from, from + kNanosPerMinute, 1, 0),
       MakeRecord(Resolution::kBase, from + kNanosPerMinute, from + 2 * kNanosPerMinute, 1, 0),
       MakeRecord(Resolution::kHour, from, from + kNanosPerHour, 1, 0),
       MakeRecord(Resolution::kDay, from, from + kNanosPerDay, 1, 0)});
  auto resolution_for = [&](int64_t to, int64_t start = 0) {
    std::map<std::string, std::string> q = {{"resolution", "auto"},
                                            {"from", FormatRfc3339Millis(start ? start : from)},
                                            {"to", FormatRfc3339Millis(to)}};
    return ParsePage(uncached_->Get(kDevice, q)).resolution;
  };
  EXPECT_EQ(resolution_for(from + 1500 * kNanosPerMinute), "1m");
  EXPECT_EQ(resolution_for(from + 1500 * kNanosPerMinute + kNanosPerMilli), "1h");
  EXPECT_EQ(resolution_for(from + 1500 * kNanosPerHour), "1h");
  EXPECT_EQ(resolution_for(from + 1500 * kNanosPerHour + kNanosPerMilli), "1d");
  // Unaligned: from one millisecond into a minute, 1500 minutes later selects 1500 starts.
  EXPECT_EQ(resolution_for(from + kNanosPerMilli + 1500 * kNanosPerMinute, from + kNanosPerMilli),
            "1m");
}

// resolution=auto skips a resolution whose retention does not reach back to `from` (found by a
// black-box test: a day older than the 1m retention got 1m and `data: []` although its 1h
// records existed).
TEST_F(HistoryRoutesTest, AutoSkipsAResolutionWhoseRetentionDoesNotReachFrom) {
  store::HistoryRetention retention;  // 1m: 30 days, 1h: 730 days, 1d: forever
  Open(retention);
  const int64_t today = clock_.NowNanos() / kNanosPerDay * kNanosPerDay;
  std::vector<AggregateRecord> batch;
  for (int days_ago : {800, 35, 20}) {
    const int64_t s = today - days_ago * kNanosPerDay;
    batch.push_back(MakeRecord(Resolution::kBase, s, s + kNanosPerMinute, 1, days_ago));
    batch.push_back(MakeRecord(Resolution::kHour, s, s + kNanosPerHour, 1, days_ago));
    batch.push_back(MakeRecord(Resolution::kDay, s, s + kNanosPerDay, 1, days_ago));
  }
  Put(batch);
  auto page_for = [&](int days_ago) {
    const int64_t s = today - days_ago * kNanosPerDay;
    return ParsePage(uncached_->Get(kDevice, {{"resolution", "auto"},
                                              {"from", FormatRfc3339Millis(s)},
                                              {"to", FormatRfc3339Millis(s + kNanosPerDay)}}));
  };
  Page p = page_for(20);
  EXPECT_EQ(p.resolution, "1m");
  EXPECT_EQ(p.records.size(), 1u);
  p = page_for(35);  // 1m expired, 1h kept
  EXPECT_EQ(p.resolution, "1h");
  EXPECT_EQ(p.records.size(), 1u);
  p = page_for(800);  // 1h expired too
  EXPECT_EQ(p.resolution, "1d");
  EXPECT_EQ(p.records.size(), 1u);
}

// `to=9999-12-31T23:59:59Z` asks for everything from `from` on (src/api/README.md): the
// windows of a range are counted against the limit, and by `auto`, only up to now + the
// future skew, where data ends (found by a black-box test: 1h from 2026 to 9999 was refused
// as more than 100,000 windows). The `to` asked is echoed (clamped to 2170) and filtered on.
// A long explicit range in the past is still refused, with a clear message.
TEST_F(HistoryRoutesTest, OpenEndedRangeIsCountedUpToWhereDataCanEnd) {
  const int64_t now = clock_.NowNanos();
  const int64_t start = now - 2 * kNanosPerHour;
  Put({MakeRecord(Resolution::kBase, start, start + kNanosPerMinute, 1, 1),
       MakeRecord(Resolution::kHour, start, start + kNanosPerHour, 1, 1),
       MakeRecord(Resolution::kDay, Utc(2026, 1, 1), Utc(2026, 1, 2), 1, 1)});
  const std::string everything = "9999-12-31T23:59:59Z";
  Response r = uncached_->Get(
      kDevice, {{"resolution", "1h"}, {"from", "2026-01-01T00:00:00Z"}, {"to", everything}});
  Page p = ParsePage(r);
  EXPECT_EQ(p.resolution, "1h");
  EXPECT_EQ(p.records.size(), 1u);
  EXPECT_NE(r.body.find("\"to\":\"2170-01-01T00:00:00.000Z\""), std::string::npos) << r.body;
  // auto: two hours up to "everything" are 1m.
  p = ParsePage(uncached_->Get(
      kDevice, {{"resolution", "auto"}, {"from", FormatRfc3339Millis(start)}, {"to", everything}}));
  EXPECT_EQ(p.resolution, "1m");
  EXPECT_EQ(p.records.size(), 1u);
  // An explicit range of more than 100,000 minutes is refused.
  r = uncached_->Get(
      kDevice,
      {{"resolution", "1m"}, {"from", "2025-01-01T00:00:00Z"}, {"to", "2026-01-01T00:00:00Z"}});
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("more than 100000 windows of 1m"), std::string::npos) << r.body;
}

// The limit counts the windows a range selects, a partial one included (CONTRACT §3; found
// by a black-box test: 100,000 minutes and 1 ms more passed, as did 100,000.999).
TEST_F(HistoryRoutesTest, RangeLimitCountsAPartialWindow) {
  Put({MakeRecord(Resolution::kBase, Utc(2025, 9, 1), Utc(2025, 9, 1, 0, 1), 1, 1)});
  auto get = [&](const char* to) {
    return uncached_->Get(kDevice,
                          {{"resolution", "1m"}, {"from", "2025-09-01T00:00:00Z"}, {"to", to}});
  };
  // 2025-09-01T00:00Z + 100,000 min = 2025-11-09T10:40Z.
  EXPECT_EQ(get("2025-11-09T10:40:00Z").status, 200);
  for (const char* to : {"2025-11-09T10:40:00.001Z", "2025-11-09T10:40:59.999Z"}) {
    Response r = get(to);
    EXPECT_EQ(r.status, 400) << to;
    EXPECT_NE(r.body.find("more than 100000 windows of 1m"), std::string::npos) << r.body;
  }
}

// from after to is a 400 also when both clamp to 2170 (found by a black-box test:
// from=2200…&to=2180… answered an empty 200).
TEST_F(HistoryRoutesTest, FromAfterToIs400BeforeTheClamp) {
  Put({MakeRecord(Resolution::kBase, Utc(2026, 4, 29), Utc(2026, 4, 29, 0, 1), 1, 1)});
  for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
           {"2200-01-01T00:00:00Z", "2180-01-01T00:00:00Z"},
           {"99999999999999", "9999999999999"},
           {"1800-01-01T00:00:00Z", "1700-01-01T00:00:00Z"}}) {
    Response r = uncached_->Get(kDevice, {{"resolution", "1d"}, {"from", from}, {"to", to}});
    EXPECT_EQ(r.status, 400) << from << " " << to;
    EXPECT_NE(r.body.find("from must not be after to"), std::string::npos) << r.body;
  }
  Response r = uncached_->Get(
      kDevice,
      {{"resolution", "1d"}, {"from", "2180-01-01T00:00:00Z"}, {"to", "2200-01-01T00:00:00Z"}});
  EXPECT_NE(r.status, 400) << r.body;
}

// The flat avg_power_w, max_power_w, sum_energy_wh, coverage fields describe power_w
// (CONTRACT §2): a metrics= filter without power_w leaves them out of JSON, as it leaves
// power_w out (found by a black-box test: they stayed). CSV has no flat columns.
TEST_F(HistoryRoutesTest, MetricsFilterWithoutPowerDropsTheFlatPowerFields) {
  const int64_t start = Utc(2026, 4, 29);
  Put({MakeRecord(Resolution::kBase, start, start + kNanosPerMinute, 1, 2)});
  auto query = [&](const std::string& metrics, const std::string& format) {
    return std::map<std::string, std::string>{{"resolution", "1m"},
                                              {"from", FormatRfc3339Millis(start)},
                                              {"to", FormatRfc3339Millis(start + kNanosPerHour)},
                                              {"metrics", metrics},
                                              {"format", format}};
  };
  for (Api* api : {uncached_.get(), cached_.get()}) {
    for (int repeat = 0; repeat < 2; ++repeat) {  // the second from the kept page
      Response r = api->Get(kDevice, query("voltage_v,energy_wh", "json"));
      Page p = ParsePage(r);
      ASSERT_EQ(p.records.size(), 1u);
      for (const char* flat : {"avg_power_w", "max_power_w", "sum_energy_wh", "\"coverage\""}) {
        EXPECT_EQ(p.records[0].find(flat), std::string::npos) << flat << " " << p.records[0];
      }
      EXPECT_NE(p.records[0].find("\"voltage_v\""), std::string::npos);
      p = ParsePage(api->Get(kDevice, query("power_w", "json")));
      ASSERT_EQ(p.records.size(), 1u);
      for (const char* flat : {"avg_power_w", "max_power_w", "sum_energy_wh"}) {
        EXPECT_NE(p.records[0].find(flat), std::string::npos) << flat << " " << p.records[0];
      }
      r = api->Get(kDevice, query("voltage_v", "csv"));
      EXPECT_EQ(r.status, 200);
      EXPECT_EQ(r.body.find("power"), std::string::npos) << r.body;
    }
  }
}

}  // namespace
}  // namespace joule::api

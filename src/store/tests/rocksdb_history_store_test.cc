// The HistoryStore contract, run against both backends (typed tests), then what only the
// RocksDB backend has: persistence, physical retention, the on-disk codec, corruption.
#include "store/rocksdb/rocksdb_history_store.h"

#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/file_system.h>
#include <stdlib.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <thread>
#include <tuple>

#include "common/clock.h"
#include "common/metrics.h"
#include "store/history_memory/memory_history_store.h"
#include "store/history_store.h"
#include "store/rocksdb/history_record_codec.h"

namespace joule::store {
namespace {

using model::AggregateRecord;
using model::MetricAggregate;
using model::MetricKind;
using model::Resolution;

constexpr int64_t kNow = 1795824000LL * kNanosPerSecond;  // 2026-11-28T00:00:00Z

// Format 1's encoder, kept as the reference for reading old values (at the end).
namespace reference {
std::string Value(const model::AggregateRecord& r);
}  // namespace reference

std::string MakeTempDir() {
  std::string tmpl = (std::filesystem::path(::testing::TempDir()) / "history_XXXXXX").string();
  char* dir = ::mkdtemp(tmpl.data());
  EXPECT_NE(dir, nullptr);
  return tmpl;
}

AggregateRecord MakeRecord(std::string device, Resolution r, int64_t start, uint64_t version = 1) {
  AggregateRecord rec;
  rec.device_id = std::move(device);
  rec.resolution = r;
  rec.window_start_ns = start;
  const int64_t width = r == Resolution::kBase   ? kNanosPerMinute
                        : r == Resolution::kHour ? kNanosPerHour
                                                 : kNanosPerDay;
  // Saturate at the end of time (the edge-case record starts at INT64_MAX).
  if (__builtin_add_overflow(start, width, &rec.window_end_ns)) {
    rec.window_end_ns = std::numeric_limits<int64_t>::max();
  }
  rec.final = true;
  rec.version = version;
  rec.count = 12;
  MetricAggregate p;
  p.name = "power_w";
  p.kind = MetricKind::kPower;
  p.count = 12;
  p.min = 3.1;
  p.max = 20.3;
  p.sum = 134.4;
  p.first = 4.0;
  p.last = 9.5 + static_cast<double>(version);
  p.energy_wh = 3.5;
  p.covered_ns = 58 * kNanosPerSecond;
  rec.metrics.push_back(p);
  return rec;
}

// Every field of every kind set, a 1d record with its local day.
AggregateRecord FullDayRecord() {
  AggregateRecord rec;
  rec.device_id = "plug-42";
  rec.resolution = Resolution::kDay;
  rec.window_start_ns = kNow - kNanosPerHour;                    // local midnight in Europe/Berlin
  rec.window_end_ns = rec.window_start_ns + 25 * kNanosPerHour;  // a DST day
  rec.final = false;
  rec.version = 300;
  rec.count = 17280;
  rec.timezone = "Europe/Berlin";
  rec.local_date = "2026-11-28";
  MetricAggregate counter{"energy_wh", MetricKind::kCounter,
                          12,          10452.5,
                          10456.0,     125470.0,
                          10452.5,     10456.0,
                          0,           0,
                          3.5,         2};
  MetricAggregate power{"power_w", MetricKind::kPower,      12, 3.1, 20.3, 134.4, 4.0, 9.5,
                        3.5,       86000 * kNanosPerSecond, 0,  0};
  MetricAggregate negative{
      "temp_c", MetricKind::kGauge, 3, -12.5, -0.0, -30.25, -12.5, -1e-300, 0, 0, 0, 0};
  MetricAggregate odd{"weird", MetricKind::kGauge, 0, 0, 0, 0, 0, 0, 1.25, -7, -2.5, 9};
  rec.metrics = {counter, power, negative, odd};
  return rec;
}

struct RocksBackend {
  static constexpr bool kPersistent = true;
  static std::unique_ptr<HistoryStore> Open(const std::string& dir, HistoryRetention retention,
                                            const Clock* clock, MetricsRegistry* metrics) {
    RocksDbHistoryOptions o;
    o.path = dir + "/history";
    o.retention = retention;
    o.clock = clock;
    auto store = RocksDbHistoryStore::Open(o, metrics);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    return store.ok() ? std::move(store).value() : nullptr;
  }
};

struct MemoryBackend {
  static constexpr bool kPersistent = false;
  static std::unique_ptr<HistoryStore> Open(const std::string& /*dir*/, HistoryRetention retention,
                                            const Clock* clock, MetricsRegistry* /*metrics*/) {
    return std::make_unique<MemoryHistoryStore>(retention, clock);
  }
};

template <typename Backend>
class HistoryStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir();
    Open(HistoryRetention::Forever());
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  void Open(HistoryRetention retention) {
    store_.reset();
    store_ = Backend::Open(dir_, retention, &clock_, &metrics_);
    ASSERT_NE(store_, nullptr);
  }
  void PutOk(const std::vector<AggregateRecord>& records) {
    Status s = store_->Put(records);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  std::optional<AggregateRecord> GetOk(std::string_view device, Resolution r, int64_t start) {
    auto got = store_->Get(device, r, start);
    EXPECT_TRUE(got.ok()) << got.status().ToString();
    return got.ok() ? *got : std::nullopt;
  }
  HistoryPage RangeOk(const HistoryQuery& q) {
    auto page = store_->Range(q);
    EXPECT_TRUE(page.ok()) << page.status().ToString();
    return page.ok() ? *page : HistoryPage{};
  }
  static std::vector<int64_t> Starts(const std::vector<AggregateRecord>& records) {
    std::vector<int64_t> out;
    for (const auto& r : records) out.push_back(r.window_start_ns);
    return out;
  }

  std::string dir_;
  ManualClock clock_{kNow};
  MetricsRegistry metrics_;
  std::unique_ptr<HistoryStore> store_;
};

using Backends = ::testing::Types<RocksBackend, MemoryBackend>;
class BackendNames {
 public:
  template <typename T>
  static std::string GetName(int) {
    return T::kPersistent ? "RocksDb" : "Memory";
  }
};
TYPED_TEST_SUITE(HistoryStoreTest, Backends, BackendNames);

TYPED_TEST(HistoryStoreTest, RoundTripsAFullRecord) {
  const AggregateRecord day = FullDayRecord();
  AggregateRecord minute = MakeRecord("plug-42", Resolution::kBase, kNow);
  this->PutOk({day, minute});
  EXPECT_EQ(this->GetOk("plug-42", Resolution::kDay, day.window_start_ns), day);
  EXPECT_EQ(this->GetOk("plug-42", Resolution::kBase, kNow), minute);
  // Same key in another resolution is another record.
  EXPECT_EQ(this->GetOk("plug-42", Resolution::kHour, kNow), std::nullopt);
  EXPECT_EQ(this->GetOk("plug-4", Resolution::kBase, kNow), std::nullopt);
  HistoryPage page = this->RangeOk(
      {"plug-42", Resolution::kDay, kNow - kNanosPerDay, kNow + kNanosPerDay, 10, ""});
  ASSERT_EQ(page.records.size(), 1u);
  EXPECT_EQ(page.records[0], day);
  EXPECT_EQ(page.next_cursor, "");
  Status flushed = this->store_->Flush();
  EXPECT_TRUE(flushed.ok()) << flushed.ToString();
}

TYPED_TEST(HistoryStoreTest, KeepsTheHighestVersion) {
  AggregateRecord v2 = MakeRecord("d", Resolution::kBase, kNow, 2);
  this->PutOk({v2});
  AggregateRecord v1 = MakeRecord("d", Resolution::kBase, kNow, 1);
  this->PutOk({v1});
  EXPECT_EQ(this->GetOk("d", Resolution::kBase, kNow), v2) << "lower version ignored";
  AggregateRecord v2b = v2;
  v2b.count = 999;
  this->PutOk({v2b});
  EXPECT_EQ(this->GetOk("d", Resolution::kBase, kNow), v2) << "equal version ignored";
  AggregateRecord v3 = MakeRecord("d", Resolution::kBase, kNow, 3);
  this->PutOk({v3});
  EXPECT_EQ(this->GetOk("d", Resolution::kBase, kNow), v3) << "higher version replaces";

  // Within one batch the same rule applies, in order.
  AggregateRecord v5 = MakeRecord("d", Resolution::kBase, kNow, 5);
  AggregateRecord v5b = v5;
  v5b.count = 1;
  this->PutOk({MakeRecord("d", Resolution::kBase, kNow, 4), v5, v5b,
               MakeRecord("d", Resolution::kBase, kNow, 2)});
  EXPECT_EQ(this->GetOk("d", Resolution::kBase, kNow), v5);
}

TYPED_TEST(HistoryStoreTest, RangeIsFromInclusiveToExclusive) {
  std::vector<AggregateRecord> batch;
  for (int k = 0; k < 10; ++k) {
    batch.push_back(MakeRecord("a", Resolution::kBase, kNow + k * kNanosPerMinute));
    // Neighbours in key space that must never leak into "a"'s range.
    batch.push_back(MakeRecord("ab", Resolution::kBase, kNow + k * kNanosPerMinute));
    batch.push_back(MakeRecord("a", Resolution::kHour, kNow + k * kNanosPerMinute));
  }
  batch.push_back(MakeRecord("a", Resolution::kBase, -5 * kNanosPerMinute));  // before 1970
  this->PutOk(batch);
  const int64_t m = kNanosPerMinute;
  HistoryPage page = this->RangeOk({"a", Resolution::kBase, kNow + 2 * m, kNow + 5 * m, 100, ""});
  EXPECT_EQ(this->Starts(page.records),
            (std::vector<int64_t>{kNow + 2 * m, kNow + 3 * m, kNow + 4 * m}));
  for (const auto& r : page.records) {
    EXPECT_EQ(r.device_id, "a");
    EXPECT_EQ(r.resolution, Resolution::kBase);
  }
  // A `from` between windows starts at the next window; `to` one past a start includes it.
  page = this->RangeOk({"a", Resolution::kBase, kNow + 2 * m + 1, kNow + 5 * m + 1, 100, ""});
  EXPECT_EQ(this->Starts(page.records),
            (std::vector<int64_t>{kNow + 3 * m, kNow + 4 * m, kNow + 5 * m}));
  EXPECT_TRUE(
      this->RangeOk({"a", Resolution::kBase, kNow + 5 * m, kNow + 5 * m, 100, ""}).records.empty());
  EXPECT_TRUE(this->RangeOk({"a", Resolution::kBase, kNow + 6 * m, kNow, 100, ""}).records.empty());
  EXPECT_TRUE(this->RangeOk({"zz", Resolution::kBase, 0, kNow * 2, 100, ""}).records.empty());
  // Negative times sort before positive ones.
  page = this->RangeOk(
      {"a", Resolution::kBase, std::numeric_limits<int64_t>::min(), kNow + m, 100, ""});
  EXPECT_EQ(this->Starts(page.records), (std::vector<int64_t>{-5 * m, kNow}));
}

TYPED_TEST(HistoryStoreTest, PagesCoverTheRangeExactlyOnce) {
  constexpr int kRecords = 1000;
  std::vector<AggregateRecord> batch;
  for (int k = 0; k < kRecords; ++k) {
    batch.push_back(MakeRecord("dev", Resolution::kBase, kNow + k * kNanosPerMinute));
  }
  this->PutOk(batch);
  for (size_t limit : {1u, 7u, 100u, 999u, 1000u, 1001u}) {
    HistoryQuery q{"dev", Resolution::kBase, kNow, kNow + kRecords * kNanosPerMinute, limit, ""};
    std::vector<int64_t> all;
    int pages = 0;
    do {
      HistoryPage page = this->RangeOk(q);
      ASSERT_LE(page.records.size(), limit);
      ASSERT_FALSE(page.records.empty());
      for (int64_t s : this->Starts(page.records)) all.push_back(s);
      q.cursor = page.next_cursor;
      ASSERT_LT(++pages, 2 * kRecords);
    } while (!q.cursor.empty());
    EXPECT_EQ(pages, static_cast<int>((kRecords + limit - 1) / limit)) << "limit " << limit;
    std::vector<int64_t> expected;
    for (int k = 0; k < kRecords; ++k) expected.push_back(kNow + k * kNanosPerMinute);
    EXPECT_EQ(all, expected) << "limit " << limit;
  }
}

TYPED_TEST(HistoryStoreTest, PagingNeitherSkipsNorRepeatsUnderConcurrentInserts) {
  const int64_t m = kNanosPerMinute;
  std::vector<AggregateRecord> batch;
  for (int k = 0; k < 10; k += 2)
    batch.push_back(MakeRecord("dev", Resolution::kBase, kNow + k * m));
  this->PutOk(batch);  // 0 2 4 6 8
  HistoryQuery q{"dev", Resolution::kBase, kNow, kNow + 10 * m, 2, ""};
  HistoryPage first = this->RangeOk(q);
  EXPECT_EQ(this->Starts(first.records), (std::vector<int64_t>{kNow, kNow + 2 * m}));
  // Inserted behind the cursor (not seen) and ahead of it (seen).
  this->PutOk({MakeRecord("dev", Resolution::kBase, kNow + 1 * m),
               MakeRecord("dev", Resolution::kBase, kNow + 5 * m)});
  q.cursor = first.next_cursor;
  HistoryPage second = this->RangeOk(q);
  EXPECT_EQ(this->Starts(second.records), (std::vector<int64_t>{kNow + 4 * m, kNow + 5 * m}));
  q.cursor = second.next_cursor;
  HistoryPage third = this->RangeOk(q);
  EXPECT_EQ(this->Starts(third.records), (std::vector<int64_t>{kNow + 6 * m, kNow + 8 * m}));
  EXPECT_EQ(third.next_cursor, "");
}

TYPED_TEST(HistoryStoreTest, RejectsBadQueriesAndCursors) {
  std::vector<AggregateRecord> batch;
  for (int k = 0; k < 5; ++k) {
    batch.push_back(MakeRecord("dev", Resolution::kBase, kNow + k * kNanosPerMinute));
  }
  this->PutOk(batch);
  HistoryQuery q{"dev", Resolution::kBase, kNow, kNow + kNanosPerHour, 2, ""};
  HistoryPage page = this->RangeOk(q);
  ASSERT_FALSE(page.next_cursor.empty());
  auto code = [&](HistoryQuery bad) { return this->store_->Range(bad).status().code(); };

  HistoryQuery other_device = q;
  other_device.device_id = "dev2";
  other_device.cursor = page.next_cursor;
  EXPECT_EQ(code(other_device), StatusCode::kInvalidArgument);
  HistoryQuery other_resolution = q;
  other_resolution.resolution = Resolution::kHour;
  other_resolution.cursor = page.next_cursor;
  EXPECT_EQ(code(other_resolution), StatusCode::kInvalidArgument);
  HistoryQuery outside = q;
  outside.from_ns = kNow + 30 * kNanosPerMinute;
  outside.cursor = page.next_cursor;
  EXPECT_EQ(code(outside), StatusCode::kInvalidArgument);
  for (const std::string& garbage : std::vector<std::string>{
           "x", "zz", std::string(28, 'g'), std::string(28, '0'), page.next_cursor + "00"}) {
    HistoryQuery g = q;
    g.cursor = garbage;
    EXPECT_EQ(code(g), StatusCode::kInvalidArgument) << garbage;
  }
  HistoryQuery zero = q;
  zero.limit = 0;
  EXPECT_EQ(code(zero), StatusCode::kInvalidArgument);
  HistoryQuery no_device = q;
  no_device.device_id = "";
  EXPECT_EQ(code(no_device), StatusCode::kInvalidArgument);

  // A bad record rejects the whole batch: nothing written.
  Status s = this->store_->Put(
      {MakeRecord("new", Resolution::kBase, kNow), MakeRecord("", Resolution::kBase, kNow)});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(this->GetOk("new", Resolution::kBase, kNow), std::nullopt);
  s = this->store_->Put({MakeRecord(std::string(256, 'x'), Resolution::kBase, kNow)});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
}

TYPED_TEST(HistoryStoreTest, LatestIsNewestFirst) {
  std::vector<AggregateRecord> batch;
  for (int k = 0; k < 20; ++k) {
    batch.push_back(MakeRecord("dev", Resolution::kBase, kNow + k * kNanosPerMinute));
    batch.push_back(MakeRecord("dev0", Resolution::kBase, kNow + (k + 100) * kNanosPerMinute));
    batch.push_back(MakeRecord("dev", Resolution::kHour, kNow + (k + 100) * kNanosPerHour));
  }
  this->PutOk(batch);
  auto latest = this->store_->Latest("dev", Resolution::kBase, 3);
  ASSERT_TRUE(latest.ok()) << latest.status().ToString();
  EXPECT_EQ(this->Starts(*latest),
            (std::vector<int64_t>{kNow + 19 * kNanosPerMinute, kNow + 18 * kNanosPerMinute,
                                  kNow + 17 * kNanosPerMinute}));
  for (const auto& r : *latest) EXPECT_EQ(r.device_id, "dev");
  latest = this->store_->Latest("dev", Resolution::kBase, 100);
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ(latest->size(), 20u);
  EXPECT_EQ(latest->back().window_start_ns, kNow);
  latest = this->store_->Latest("dev", Resolution::kBase, 0);
  ASSERT_TRUE(latest.ok());
  EXPECT_TRUE(latest->empty());
  latest = this->store_->Latest("nobody", Resolution::kDay, 5);
  ASSERT_TRUE(latest.ok());
  EXPECT_TRUE(latest->empty());
  // The largest possible window start is found too.
  this->PutOk({MakeRecord("edge", Resolution::kBase, std::numeric_limits<int64_t>::max())});
  latest = this->store_->Latest("edge", Resolution::kBase, 1);
  ASSERT_TRUE(latest.ok());
  ASSERT_EQ(latest->size(), 1u);
  EXPECT_EQ(latest->at(0).window_start_ns, std::numeric_limits<int64_t>::max());
}

TYPED_TEST(HistoryStoreTest, RetentionDropsOldBaseRecordsButKeepsDays) {
  HistoryRetention retention;  // defaults: 1m 30 days, 1h 730 days, 1d forever
  this->Open(retention);
  const int64_t day = kNanosPerDay;
  this->PutOk({MakeRecord("d", Resolution::kBase, kNow - 40 * day),  // already expired
               MakeRecord("d", Resolution::kBase, kNow - 20 * day),
               MakeRecord("d", Resolution::kBase, kNow - day),
               MakeRecord("d", Resolution::kHour, kNow - 40 * day),
               MakeRecord("d", Resolution::kDay, kNow - 4000 * day),
               MakeRecord("d", Resolution::kDay, kNow - 20 * day)});
  EXPECT_EQ(this->GetOk("d", Resolution::kBase, kNow - 40 * day), std::nullopt);
  EXPECT_NE(this->GetOk("d", Resolution::kBase, kNow - 20 * day), std::nullopt);

  this->clock_.Advance(15 * day);  // now the record of 20 days ago is 35 days old
  EXPECT_EQ(this->GetOk("d", Resolution::kBase, kNow - 20 * day), std::nullopt);
  EXPECT_NE(this->GetOk("d", Resolution::kBase, kNow - day), std::nullopt);
  HistoryPage page =
      this->RangeOk({"d", Resolution::kBase, kNow - 100 * day, kNow + 100 * day, 100, ""});
  EXPECT_EQ(this->Starts(page.records), (std::vector<int64_t>{kNow - day}));
  auto latest = this->store_->Latest("d", Resolution::kBase, 10);
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ(this->Starts(*latest), (std::vector<int64_t>{kNow - day}));
  EXPECT_NE(this->GetOk("d", Resolution::kHour, kNow - 40 * day), std::nullopt);
  page = this->RangeOk({"d", Resolution::kDay, std::numeric_limits<int64_t>::min(),
                        std::numeric_limits<int64_t>::max(), 100, ""});
  EXPECT_EQ(this->Starts(page.records), (std::vector<int64_t>{kNow - 4000 * day, kNow - 20 * day}));
}

TYPED_TEST(HistoryStoreTest, ConcurrentWritersKeepTheHighestVersion) {
  constexpr int kThreads = 4, kDevices = 50, kVersions = 20;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      std::vector<int> versions(kVersions);
      for (int v = 0; v < kVersions; ++v) versions[v] = v + 1;
      std::shuffle(versions.begin(), versions.end(), rng);
      for (int v : versions) {
        std::vector<AggregateRecord> batch;
        for (int dev = 0; dev < kDevices; ++dev) {
          batch.push_back(MakeRecord("dev-" + std::to_string(dev), Resolution::kBase, kNow,
                                     static_cast<uint64_t>(v)));
        }
        EXPECT_TRUE(this->store_->Put(batch).ok());
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int dev = 0; dev < kDevices; ++dev) {
    auto got = this->GetOk("dev-" + std::to_string(dev), Resolution::kBase, kNow);
    ASSERT_TRUE(got.has_value());
    EXPECT_EQ(got->version, static_cast<uint64_t>(kVersions));
    EXPECT_EQ(*got, MakeRecord("dev-" + std::to_string(dev), Resolution::kBase, kNow, kVersions));
  }
}

// Late updates from many writers at once: every version of every key is written exactly
// once, by one of several threads, in shuffled batches that mix keys, resolutions and
// versions (several versions of one key in one batch too). Readers (Range, Scan, Latest,
// Get) run all the while: a key's version never goes down between reads, and the content
// read always belongs to the version read. At the end the highest version wins everywhere.
TYPED_TEST(HistoryStoreTest, ConcurrentLateUpdatesOfTheSameKeysHighestVersionWins) {
  constexpr int kWriters = 6, kDevices = 6, kWindows = 12, kVersions = 15;
  const std::array<Resolution, 3> resolutions = {Resolution::kBase, Resolution::kHour,
                                                 Resolution::kDay};
  auto start_of = [](Resolution r, int w) {
    return kNow + w * (r == Resolution::kBase   ? kNanosPerMinute
                       : r == Resolution::kHour ? kNanosPerHour
                                                : kNanosPerDay);
  };
  struct Write {
    int device, resolution, window, version;
  };
  std::vector<Write> work;
  for (int d = 0; d < kDevices; ++d) {
    for (int r = 0; r < 3; ++r) {
      for (int w = 0; w < kWindows; ++w) {
        for (int v = 1; v <= kVersions; ++v) work.push_back({d, r, w, v});
      }
    }
  }
  std::shuffle(work.begin(), work.end(), std::mt19937(42));
  auto record_of = [&](const Write& w) {
    const Resolution r = resolutions[static_cast<size_t>(w.resolution)];
    return MakeRecord("dev-" + std::to_string(w.device), r, start_of(r, w.window),
                      static_cast<uint64_t>(w.version));
  };
  // The content of a version: MakeRecord puts the version into power_w.last.
  auto check_content = [](const AggregateRecord& rec) {
    ASSERT_EQ(rec.metrics.size(), 1u);
    EXPECT_EQ(rec.metrics[0].last, 9.5 + static_cast<double>(rec.version));
  };

  std::atomic<size_t> next{0};
  std::atomic<bool> writing{true};
  std::vector<std::thread> writers;
  for (int t = 0; t < kWriters; ++t) {
    writers.emplace_back([&, t] {
      std::mt19937 rng(static_cast<uint32_t>(t));
      while (true) {
        const size_t batch_size = 1 + rng() % 9;
        const size_t i = next.fetch_add(batch_size);
        if (i >= work.size()) break;
        std::vector<AggregateRecord> batch;
        for (size_t j = i; j < std::min(i + batch_size, work.size()); ++j) {
          batch.push_back(record_of(work[j]));
        }
        EXPECT_TRUE(this->store_->Put(batch).ok());
      }
    });
  }
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t) {
    readers.emplace_back([&, t] {
      std::map<std::tuple<int, int, int64_t>, uint64_t> seen;
      auto saw = [&](int d, int r, const AggregateRecord& rec) {
        check_content(rec);
        uint64_t& before = seen[{d, r, rec.window_start_ns}];
        EXPECT_GE(rec.version, before) << "version went down";
        before = rec.version;
      };
      while (writing.load()) {
        for (int d = 0; d < kDevices; ++d) {
          const std::string dev = "dev-" + std::to_string(d);
          for (int r = 0; r < 3; ++r) {
            const Resolution res = resolutions[static_cast<size_t>(r)];
            HistoryQuery q{dev, res, kNow, start_of(res, kWindows), 5, ""};
            if (t == 0) {
              do {  // paged Range
                auto page = this->store_->Range(q);
                ASSERT_TRUE(page.ok()) << page.status().ToString();
                for (const auto& rec : page->records) saw(d, r, rec);
                q.cursor = page->next_cursor;
              } while (!q.cursor.empty());
            } else {  // Scan (decoding each entry), Latest and Get
              q.limit = 100;
              auto cursor = this->store_->Scan(q, [&](const HistoryEntry& e) -> Status {
                auto rec = e.Decode();
                if (!rec.ok()) return rec.status();
                EXPECT_EQ(rec->version, e.version);
                EXPECT_EQ(rec->window_start_ns, e.window_start_ns);
                saw(d, r, *rec);
                return Status::Ok();
              });
              ASSERT_TRUE(cursor.ok()) << cursor.status().ToString();
              auto latest = this->store_->Latest(dev, res, 3);
              ASSERT_TRUE(latest.ok());
              for (const auto& rec : *latest) saw(d, r, rec);
              auto one = this->store_->Get(dev, res, start_of(res, kWindows / 2));
              ASSERT_TRUE(one.ok());
              if (one->has_value()) saw(d, r, **one);
            }
          }
        }
      }
    });
  }
  for (auto& w : writers) w.join();
  writing = false;
  for (auto& r : readers) r.join();
  for (int d = 0; d < kDevices; ++d) {
    for (int r = 0; r < 3; ++r) {
      const Resolution res = resolutions[static_cast<size_t>(r)];
      HistoryPage page =
          this->RangeOk({"dev-" + std::to_string(d), res, kNow, start_of(res, kWindows), 1000, ""});
      ASSERT_EQ(page.records.size(), static_cast<size_t>(kWindows));
      for (int w = 0; w < kWindows; ++w) {
        EXPECT_EQ(page.records[static_cast<size_t>(w)], record_of({d, r, w, kVersions}));
      }
    }
  }
}

// The write observer sees exactly the records a Put wrote: not stale or equal versions,
// not expired ones, not the loser of two versions of one key in one batch; and it runs
// after the write is visible to reads.
TYPED_TEST(HistoryStoreTest, WriteObserverSeesExactlyTheWrittenRecords) {
  HistoryRetention retention;  // 1m: 30 days
  this->Open(retention);
  std::vector<std::pair<int64_t, uint64_t>> seen;
  this->store_->SetWriteObserver([&](const AggregateRecord& r) {
    seen.emplace_back(r.window_start_ns, r.version);
    auto stored = this->store_->Get(r.device_id, r.resolution, r.window_start_ns);
    ASSERT_TRUE(stored.ok() && stored->has_value());
    EXPECT_GE((*stored)->version, r.version) << "visible before the observer runs";
  });
  const int64_t m = kNanosPerMinute;
  this->PutOk({MakeRecord("d", Resolution::kBase, kNow, 2),
               MakeRecord("d", Resolution::kBase, kNow + m, 1),
               MakeRecord("d", Resolution::kBase, kNow - 40 * kNanosPerDay, 1)});  // expired
  this->PutOk({MakeRecord("d", Resolution::kBase, kNow, 2),                        // equal: stale
               MakeRecord("d", Resolution::kBase, kNow, 1),                        // lower: stale
               MakeRecord("d", Resolution::kBase, kNow + m, 3),                    // in-batch loser
               MakeRecord("d", Resolution::kBase, kNow + m, 4)});  // in-batch winner
  // The memory backend applies a batch in order, so it also reports the in-batch loser
  // (written, then replaced); RocksDB writes only the winner.
  std::erase(seen, std::pair<int64_t, uint64_t>{kNow + m, 3});
  EXPECT_EQ(seen,
            (std::vector<std::pair<int64_t, uint64_t>>{{kNow, 2}, {kNow + m, 1}, {kNow + m, 4}}));
  EXPECT_EQ(this->store_->ReadHorizon(Resolution::kBase), kNow - 30 * kNanosPerDay);
  EXPECT_EQ(this->store_->ReadHorizon(Resolution::kDay), std::numeric_limits<int64_t>::min());
  this->store_->SetWriteObserver(nullptr);
}

// ---- RocksDB only ----

class RocksDbHistoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir();
    options_.path = dir_ + "/history";
    options_.clock = &clock_;
    Open();
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  void Open() {
    store_.reset();
    auto opened = RocksDbHistoryStore::Open(options_, &metrics_);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    store_ = std::move(opened).value();
  }
  // `n` base records of 500 devices, a minute apart per device, in batches of 1,000.
  void PutBaseRecords(int n) {
    std::vector<AggregateRecord> batch;
    for (int k = 0; k < n; ++k) {
      batch.push_back(MakeRecord("d" + std::to_string(k % 500), Resolution::kBase,
                                 kNow + (k / 500) * kNanosPerMinute));
      if (batch.size() == 1000) {
        ASSERT_TRUE(store_->Put(batch).ok());
        batch.clear();
      }
    }
    ASSERT_TRUE(store_->Put(batch).ok());
  }
  // Opens the database directly, bypassing the store (which must be closed).
  std::unique_ptr<rocksdb::DB> OpenRaw(std::vector<rocksdb::ColumnFamilyHandle*>* handles) {
    rocksdb::DBOptions o;
    std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
    for (const char* name : {"default", "base", "hour", "day"})
      cfs.emplace_back(name, rocksdb::ColumnFamilyOptions());
    rocksdb::DB* db = nullptr;
    rocksdb::Status s = rocksdb::DB::Open(o, options_.path, cfs, handles, &db);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return std::unique_ptr<rocksdb::DB>(db);
  }
  size_t CountKeys(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* cf) {
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), cf));
    size_t n = 0;
    for (it->SeekToFirst(); it->Valid(); it->Next()) ++n;
    return n;
  }
  static void Close(rocksdb::DB* db, std::vector<rocksdb::ColumnFamilyHandle*>& handles) {
    for (auto* h : handles) EXPECT_TRUE(db->DestroyColumnFamilyHandle(h).ok());
    handles.clear();
  }

  std::string dir_;
  ManualClock clock_{kNow};
  MetricsRegistry metrics_;
  RocksDbHistoryOptions options_;
  std::unique_ptr<RocksDbHistoryStore> store_;
};

TEST_F(RocksDbHistoryTest, ReopenKeepsData) {
  const AggregateRecord day = FullDayRecord();
  ASSERT_TRUE(store_->Put({day, MakeRecord("d", Resolution::kBase, kNow, 7)}).ok());
  ASSERT_TRUE(store_->Flush().ok());
  Open();
  auto got = store_->Get("plug-42", Resolution::kDay, day.window_start_ns);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, day);
  got = store_->Get("d", Resolution::kBase, kNow);
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->version, 7u);
  // Version rule holds across restarts.
  ASSERT_TRUE(store_->Put({MakeRecord("d", Resolution::kBase, kNow, 6)}).ok());
  EXPECT_EQ((*store_->Get("d", Resolution::kBase, kNow))->version, 7u);
}

TEST_F(RocksDbHistoryTest, CountsStaleWritesAndExportsSizes) {
  ASSERT_TRUE(store_->Put({MakeRecord("d", Resolution::kBase, kNow, 2)}).ok());
  ASSERT_TRUE(store_
                  ->Put({MakeRecord("d", Resolution::kBase, kNow, 2),
                         MakeRecord("d", Resolution::kBase, kNow, 1)})
                  .ok());
  // Written, not flushed: in the memtable.
  const std::string before = metrics_.Render();
  EXPECT_NE(before.find("joule_history_memtable_bytes{resolution=\"base\"}"), std::string::npos);
  EXPECT_EQ(before.find("joule_history_memtable_bytes{resolution=\"base\"} 0\n"), std::string::npos)
      << before;
  ASSERT_TRUE(store_->CompactAll().ok());
  ASSERT_TRUE(store_->Get("d", Resolution::kBase, kNow).ok());  // a read from an SST block
  const std::string text = metrics_.Render();
  EXPECT_NE(text.find("joule_history_block_cache_bytes "), std::string::npos) << text;
  EXPECT_EQ(text.find("joule_history_block_cache_bytes 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("joule_history_put_records_total 3"), std::string::npos) << text;
  EXPECT_NE(text.find("joule_history_stale_writes_total 2"), std::string::npos) << text;
  EXPECT_NE(text.find("joule_history_put_latency_seconds_count 2"), std::string::npos) << text;
  EXPECT_NE(text.find("joule_history_sst_bytes{resolution=\"base\"}"), std::string::npos);
  EXPECT_EQ(text.find("joule_history_sst_bytes{resolution=\"base\"} 0\n"), std::string::npos);
  auto usage = store_->DiskUsage(Resolution::kBase);
  ASSERT_TRUE(usage.ok());
  EXPECT_GT(usage->sst_bytes, 0u);
  store_.reset();
  // Gauges outlive the store safely.
  EXPECT_NE(metrics_.Render().find("joule_history_sst_bytes{resolution=\"base\"} 0"),
            std::string::npos);
}

TEST_F(RocksDbHistoryTest, CompactionPhysicallyDropsExpiredRecords) {
  std::vector<AggregateRecord> batch;
  for (int k = 0; k < 100; ++k) {
    batch.push_back(MakeRecord("d" + std::to_string(k % 7), Resolution::kBase,
                               kNow - k * kNanosPerDay / 2));  // 0 .. 49.5 days old
    batch.push_back(MakeRecord("d", Resolution::kDay, kNow - k * kNanosPerDay));
  }
  ASSERT_TRUE(store_->Put(batch).ok());
  ASSERT_TRUE(store_->CompactAll().ok());
  clock_.Advance(10 * kNanosPerDay);  // base records older than 20 days (at put time) expire
  ASSERT_TRUE(store_->CompactExpired().ok());
  store_.reset();
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  auto db = OpenRaw(&handles);
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(CountKeys(db.get(), handles[1]), 41u);  // k = 0..40: at most 30 days old now
  EXPECT_EQ(CountKeys(db.get(), handles[3]), 100u);
  Close(db.get(), handles);
}

TEST_F(RocksDbHistoryTest, CorruptValueIsCorruptionNotACrash) {
  ASSERT_TRUE(store_
                  ->Put({MakeRecord("d", Resolution::kBase, kNow),
                         MakeRecord("e", Resolution::kBase, kNow)})
                  .ok());
  store_.reset();
  {
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    auto db = OpenRaw(&handles);
    ASSERT_NE(db, nullptr);
    // "d": body truncated, header (format, version 1) intact. "e": not even a header.
    std::string value = history_codec::EncodeValue(MakeRecord("d", Resolution::kBase, kNow));
    value.resize(value.size() - 3);
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), handles[1],
                        history_codec::EncodeKey(Resolution::kBase, "d", kNow), value)
                    .ok());
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), handles[1],
                        history_codec::EncodeKey(Resolution::kBase, "e", kNow), "\x07junk")
                    .ok());
    Close(db.get(), handles);
  }
  Open();
  for (const char* device : {"d", "e"}) {
    EXPECT_EQ(store_->Get(device, Resolution::kBase, kNow).status().code(),
              StatusCode::kCorruption);
    EXPECT_EQ(store_->Range({device, Resolution::kBase, 0, kNow * 2, 10, ""}).status().code(),
              StatusCode::kCorruption);
    EXPECT_EQ(store_->Latest(device, Resolution::kBase, 1).status().code(),
              StatusCode::kCorruption);
  }
  // Put reads only the header: "d"'s stored version 1 still rejects version 1, and a higher
  // version heals it; "e"'s unreadable header is overwritten by any version.
  ASSERT_TRUE(store_
                  ->Put({MakeRecord("d", Resolution::kBase, kNow, 1),
                         MakeRecord("e", Resolution::kBase, kNow, 1)})
                  .ok());
  EXPECT_EQ(store_->Get("d", Resolution::kBase, kNow).status().code(), StatusCode::kCorruption);
  auto got = store_->Get("e", Resolution::kBase, kNow);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, MakeRecord("e", Resolution::kBase, kNow, 1));
  ASSERT_TRUE(store_->Put({MakeRecord("d", Resolution::kBase, kNow, 2)}).ok());
  got = store_->Get("d", Resolution::kBase, kNow);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, MakeRecord("d", Resolution::kBase, kNow, 2));
  EXPECT_NE(metrics_.Render().find("joule_history_corrupt_values_total 1"), std::string::npos);
}

// ---- the version cache (history_version_cache.h) and the persisted frontiers ----

uint64_t CounterValue(MetricsRegistry& m, const char* name) {
  return m.GetCounter(name, "")->Value();
}

TEST_F(RocksDbHistoryTest, NewWindowsAndRepeatedWritesNeedNoRead) {
  const char* kReads = "joule_history_version_reads_total";
  for (int minute = 0; minute < 5; ++minute) {
    const int64_t w = kNow + minute * kNanosPerMinute;
    // A partial, the final, a re-delivery and an older version of each window.
    ASSERT_TRUE(store_->Put({MakeRecord("d", Resolution::kBase, w, 1)}).ok());
    ASSERT_TRUE(store_
                    ->Put({MakeRecord("d", Resolution::kBase, w, 2),
                           MakeRecord("d", Resolution::kHour, kNow, minute + 1)})
                    .ok());
    ASSERT_TRUE(store_->Put({MakeRecord("d", Resolution::kBase, w, 2)}).ok());
    ASSERT_TRUE(store_->Put({MakeRecord("d", Resolution::kBase, w, 1)}).ok());
  }
  EXPECT_EQ(CounterValue(metrics_, kReads), 0u);
  EXPECT_EQ(CounterValue(metrics_, "joule_history_stale_writes_total"), 10u);
  for (int minute = 0; minute < 5; ++minute) {
    auto got = store_->Get("d", Resolution::kBase, kNow + minute * kNanosPerMinute);
    ASSERT_TRUE(got.ok() && got->has_value());
    EXPECT_EQ((*got)->version, 2u);
  }
  EXPECT_EQ((*store_->Get("d", Resolution::kHour, kNow))->version, 5u);
  // A late update of a window the cache no longer remembers is read, then applied.
  ASSERT_TRUE(store_->Put({MakeRecord("d", Resolution::kBase, kNow, 1)}).ok());
  EXPECT_EQ(CounterValue(metrics_, kReads), 1u);
  ASSERT_TRUE(store_->Put({MakeRecord("d", Resolution::kBase, kNow, 3)}).ok());
  EXPECT_EQ((*store_->Get("d", Resolution::kBase, kNow))->version, 3u);
  EXPECT_EQ(CounterValue(metrics_, kReads), 1u);
}

TEST_F(RocksDbHistoryTest, VersionsNeverGoBackAcrossRestarts) {
  const char* kReads = "joule_history_version_reads_total";
  ASSERT_TRUE(store_
                  ->Put({MakeRecord("d", Resolution::kBase, kNow, 7),
                         MakeRecord("d", Resolution::kDay, kNow, 7)})
                  .ok());
  Open();  // no Flush: the WAL survives a process restart
  const uint64_t reads0 = CounterValue(metrics_, kReads);
  ASSERT_TRUE(store_
                  ->Put({MakeRecord("d", Resolution::kBase, kNow, 6),
                         MakeRecord("d", Resolution::kDay, kNow, 7),
                         MakeRecord("e", Resolution::kBase, kNow, 1)})
                  .ok());
  EXPECT_EQ(CounterValue(metrics_, kReads) - reads0, 3u);  // at or before the frontier: read
  EXPECT_EQ((*store_->Get("d", Resolution::kBase, kNow))->version, 7u);
  EXPECT_EQ((*store_->Get("e", Resolution::kBase, kNow))->version, 1u);
  // Past the persisted frontier (the newest window start rounded up by an hour or two),
  // a window is known to be new without a read, also for a device never seen before.
  ASSERT_TRUE(store_->Put({MakeRecord("f", Resolution::kBase, kNow + 3 * kNanosPerHour, 1)}).ok());
  EXPECT_EQ(CounterValue(metrics_, kReads) - reads0, 3u);
  // A far-future window moves the frontier past everything: after a restart all is read.
  ASSERT_TRUE(store_->Put({MakeRecord("g", Resolution::kBase, kNow + 400 * kNanosPerDay, 2)}).ok());
  Open();
  const uint64_t reads1 = CounterValue(metrics_, kReads);
  ASSERT_TRUE(store_
                  ->Put({MakeRecord("f", Resolution::kBase, kNow + 3 * kNanosPerHour, 1),
                         MakeRecord("g", Resolution::kBase, kNow + 400 * kNanosPerDay, 1)})
                  .ok());
  EXPECT_EQ(CounterValue(metrics_, kReads) - reads1, 2u);
  EXPECT_EQ((*store_->Get("g", Resolution::kBase, kNow + 400 * kNanosPerDay))->version, 2u);
}

TEST_F(RocksDbHistoryTest, ADatabaseWithoutFrontiersIsReadBeforeWriting) {
  ASSERT_TRUE(store_->Put({MakeRecord("d", Resolution::kBase, kNow, 5)}).ok());
  store_.reset();
  {
    // What a build before the frontiers left: the format marker only.
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    auto db = OpenRaw(&handles);
    ASSERT_NE(db, nullptr);
    for (const char* k : {"joule.history.frontier.base", "joule.history.frontier.hour",
                          "joule.history.frontier.day"}) {
      ASSERT_TRUE(db->Delete(rocksdb::WriteOptions(), handles[0], k).ok());
    }
    // A key far after anything the store wrote (another writer, or an old build).
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), handles[1],
                        history_codec::EncodeKey(Resolution::kBase, "d", kNow + kNanosPerDay),
                        history_codec::EncodeValue(
                            MakeRecord("d", Resolution::kBase, kNow + kNanosPerDay, 9)))
                    .ok());
    Close(db.get(), handles);
  }
  Open();
  ASSERT_TRUE(store_
                  ->Put({MakeRecord("d", Resolution::kBase, kNow, 4),
                         MakeRecord("d", Resolution::kBase, kNow + kNanosPerDay, 8)})
                  .ok());
  EXPECT_EQ((*store_->Get("d", Resolution::kBase, kNow))->version, 5u);
  EXPECT_EQ((*store_->Get("d", Resolution::kBase, kNow + kNanosPerDay))->version, 9u);
  EXPECT_EQ(CounterValue(metrics_, "joule_history_version_reads_total"), 2u);
  EXPECT_EQ(CounterValue(metrics_, "joule_history_stale_writes_total"), 2u);
}

// Random batches over few keys (duplicates, late and far-future windows, every resolution),
// restarts in between, a cache far smaller than the device count: the store must end with
// exactly the highest version of every key and count exactly the model's stale writes.
TEST_F(RocksDbHistoryTest, ASmallVersionCacheStaysExactAgainstAModel) {
  options_.version_cache_devices = 8;
  Open();
  std::mt19937_64 rng(7);
  std::map<std::tuple<std::string, int, int64_t>, uint64_t> model;
  uint64_t model_stale = 0;
  const std::array<int64_t, 6> starts = {kNow - kNanosPerDay,      kNow,
                                         kNow + kNanosPerMinute,   kNow + kNanosPerHour,
                                         kNow + 5 * kNanosPerHour, kNow + 90 * kNanosPerDay};
  for (int round = 0; round < 300; ++round) {
    if (round % 60 == 59) Open();
    std::vector<AggregateRecord> batch;
    std::map<std::tuple<std::string, int, int64_t>, uint64_t> in_batch;
    const int n = 1 + static_cast<int>(rng() % 20);
    for (int i = 0; i < n; ++i) {
      const std::string device = "dev-" + std::to_string(rng() % 40);
      const auto r = static_cast<Resolution>(rng() % 3);
      const int64_t start = starts[rng() % starts.size()];
      const uint64_t version = 1 + rng() % 6;
      batch.push_back(MakeRecord(device, r, start, version));
      const auto key = std::make_tuple(device, static_cast<int>(r), start);
      auto [it, inserted] = in_batch.try_emplace(key, version);
      if (!inserted) {
        // Within a batch a later record replaces an earlier one only with a higher version
        // (the replaced one is not counted as stale); otherwise the later one is stale.
        if (version > it->second) {
          it->second = version;
        } else {
          ++model_stale;
        }
      }
    }
    for (const auto& [key, version] : in_batch) {
      auto [it, inserted] = model.try_emplace(key, version);
      if (inserted) continue;
      if (it->second >= version) {
        ++model_stale;
      } else {
        it->second = version;
      }
    }
    ASSERT_TRUE(store_->Put(batch).ok());
  }
  for (const auto& [key, version] : model) {
    const auto& [device, r, start] = key;
    auto got = store_->Get(device, static_cast<Resolution>(r), start);
    ASSERT_TRUE(got.ok() && got->has_value()) << device;
    EXPECT_EQ((*got)->version, version) << device << " " << r << " " << start;
  }
  EXPECT_EQ(CounterValue(metrics_, "joule_history_stale_writes_total"), model_stale);
  EXPECT_GT(CounterValue(metrics_, "joule_history_version_reads_total"), 0u);
}

// A clean close leaves the records in SST files and no WAL to replay (the WAL holds every
// record uncompressed, every rewrite included: it was the whole directory after a stop).
TEST_F(RocksDbHistoryTest, ACleanCloseLeavesSstFilesAndNoWal) {
  std::vector<AggregateRecord> batch;
  for (int m = 0; m < 300; ++m) {
    for (uint64_t version = 1; version <= 3; ++version) {
      batch.push_back(MakeRecord("d" + std::to_string(m % 5), Resolution::kBase,
                                 kNow - m * kNanosPerMinute, version));
    }
    ASSERT_TRUE(store_->Put(batch).ok());
    batch.clear();
  }
  ASSERT_TRUE(store_->Flush().ok());
  store_.reset();
  uint64_t wal_bytes = 0, sst_files = 0;
  for (const auto& e : std::filesystem::directory_iterator(options_.path)) {
    const std::string name = e.path().filename().string();
    if (name.ends_with(".log") && name != "LOG") wal_bytes += e.file_size();
    if (name.ends_with(".sst")) ++sst_files;
  }
  EXPECT_EQ(wal_bytes, 0u);
  EXPECT_GE(sst_files, 2u);  // base records and the default family's frontier
  Open();
  for (int m = 0; m < 300; ++m) {
    auto got =
        store_->Get("d" + std::to_string(m % 5), Resolution::kBase, kNow - m * kNanosPerMinute);
    ASSERT_TRUE(got.ok() && got->has_value()) << m;
    EXPECT_EQ((*got)->version, 3u);
  }
  // The frontier was flushed too: a window past it is written without a read.
  const uint64_t reads = CounterValue(metrics_, "joule_history_version_reads_total");
  ASSERT_TRUE(store_->Put({MakeRecord("d0", Resolution::kBase, kNow + 3 * kNanosPerHour)}).ok());
  EXPECT_EQ(CounterValue(metrics_, "joule_history_version_reads_total"), reads);
}

// The WAL stays within max_total_wal_bytes, also behind a family written rarely (one day
// record): past it the families holding the oldest WAL file are flushed. With RocksDB's
// default limit (4 × the memtables, ~2 GB here) these 400k records left 21 MB of WAL.
// The flushes, and the deletion of the WAL files they free, run in the background: the bound
// holds once they are done (on a loaded CI machine 9.5 MB were still there right after the
// writes), so the check waits for them, writing one record per poll as a live server would.
TEST_F(RocksDbHistoryTest, TheWalStaysWithinMaxTotalWalBytes) {
  store_.reset();
  options_.max_total_wal_bytes = 2 << 20;
  Open();
  ASSERT_TRUE(store_->Put({MakeRecord("day", Resolution::kDay, kNow)}).ok());
  PutBaseRecords(400'000);
  auto wal = [&] {
    uint64_t bytes = 0;
    for (const auto& e : std::filesystem::directory_iterator(options_.path)) {
      const std::string name = e.path().filename().string();
      if (name.ends_with(".log") && name != "LOG") bytes += e.file_size();
    }
    return bytes;
  };
  uint64_t wal_bytes = wal();
  for (int i = 0; i < 200 && wal_bytes >= uint64_t{6} << 20; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ASSERT_TRUE(store_->Put({MakeRecord("poll", Resolution::kBase, kNow)}).ok());
    wal_bytes = wal();
  }
  EXPECT_LT(wal_bytes, uint64_t{6} << 20) << wal_bytes;
  // Nothing lost by the flushes.
  auto got = store_->Get("day", Resolution::kDay, kNow);
  ASSERT_TRUE(got.ok() && got->has_value());
}

// The memtables of all families stay within memtable_bytes: past it the largest is flushed
// (RocksDB's defaults let them grow to 64 MiB per family, two each: a soak's RSS crept for
// hours). Flushes run in the background: the bound holds once they are done, and is checked
// at writes: a family whose flush is still running is not picked again, and what it took in
// meanwhile waits for the next write (on a loaded CI machine the base family's memtable was
// left at 4.2 MB for good once the writes stopped). A live server writes every minute; here
// each poll writes one record, as that would.
TEST_F(RocksDbHistoryTest, TheMemtablesStayWithinTheirBudget) {
  store_.reset();
  options_.memtable_bytes = 2 << 20;
  Open();
  PutBaseRecords(200'000);
  auto memtables = [&] {
    const std::string text = metrics_.Render();
    double sum = 0;
    for (size_t at = text.find("\njoule_history_memtable_bytes{"); at != std::string::npos;
         at = text.find("\njoule_history_memtable_bytes{", at + 1)) {
      sum += std::stod(text.substr(text.find("} ", at) + 2));
    }
    return sum;
  };
  double last = memtables();
  for (int i = 0; i < 200 && last > 4 << 20; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ASSERT_TRUE(store_->Put({MakeRecord("poll", Resolution::kBase, kNow)}).ok());
    last = memtables();
  }
  EXPECT_LT(last, 4 << 20) << "memtables of " << last << " bytes\n" << metrics_.Render();
  EXPECT_GT(last, 0);
  // Nothing lost by the flushes.
  auto got = store_->Get("d7", Resolution::kBase, kNow + 399 * kNanosPerMinute);
  ASSERT_TRUE(got.ok() && got->has_value());
}

// A filesystem that answers ENOSPC to every append while `full` is set, as a full disk
// does (files are still created; RocksDB's own error is NoSpace, retryable), and reports no
// free space then — unless `claims_space` is set.
class FullDiskFileSystem final : public rocksdb::FileSystemWrapper {
 public:
  explicit FullDiskFileSystem(std::atomic<bool>* full)
      : FileSystemWrapper(rocksdb::FileSystem::Default()), full_(full) {}
  const char* Name() const override { return "FullDiskFileSystem"; }
  std::atomic<bool> claims_space{false};
  rocksdb::IOStatus GetFreeSpace(const std::string& path, const rocksdb::IOOptions& o,
                                 uint64_t* free_space, rocksdb::IODebugContext* dbg) override {
    if (full_->load() && !claims_space.load()) {
      *free_space = 0;
      return rocksdb::IOStatus::OK();
    }
    return target()->GetFreeSpace(path, o, free_space, dbg);
  }
  rocksdb::IOStatus NewWritableFile(const std::string& f, const rocksdb::FileOptions& o,
                                    std::unique_ptr<rocksdb::FSWritableFile>* r,
                                    rocksdb::IODebugContext* dbg) override {
    std::unique_ptr<rocksdb::FSWritableFile> file;
    rocksdb::IOStatus s = target()->NewWritableFile(f, o, &file, dbg);
    if (s.ok()) *r = std::make_unique<File>(std::move(file), full_);
    return s;
  }
  rocksdb::IOStatus ReopenWritableFile(const std::string& f, const rocksdb::FileOptions& o,
                                       std::unique_ptr<rocksdb::FSWritableFile>* r,
                                       rocksdb::IODebugContext* dbg) override {
    std::unique_ptr<rocksdb::FSWritableFile> file;
    rocksdb::IOStatus s = target()->ReopenWritableFile(f, o, &file, dbg);
    if (s.ok()) *r = std::make_unique<File>(std::move(file), full_);
    return s;
  }

 private:
  class File final : public rocksdb::FSWritableFileOwnerWrapper {
   public:
    File(std::unique_ptr<rocksdb::FSWritableFile> f, std::atomic<bool>* full)
        : FSWritableFileOwnerWrapper(std::move(f)), full_(full) {}
    rocksdb::IOStatus Append(const rocksdb::Slice& d, const rocksdb::IOOptions& o,
                             rocksdb::IODebugContext* dbg) override {
      if (full_->load()) return NoSpace();
      return target()->Append(d, o, dbg);
    }
    rocksdb::IOStatus Append(const rocksdb::Slice& d, const rocksdb::IOOptions& o,
                             const rocksdb::DataVerificationInfo& v,
                             rocksdb::IODebugContext* dbg) override {
      if (full_->load()) return NoSpace();
      return target()->Append(d, o, v, dbg);
    }
    rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& d, uint64_t off,
                                       const rocksdb::IOOptions& o,
                                       rocksdb::IODebugContext* dbg) override {
      if (full_->load()) return NoSpace();
      return target()->PositionedAppend(d, off, o, dbg);
    }

   private:
    static rocksdb::IOStatus NoSpace() {
      rocksdb::IOStatus s = rocksdb::IOStatus::NoSpace("append", "No space left on device");
      s.SetRetryable(true);
      return s;
    }
    std::atomic<bool>* full_;
  };
  std::atomic<bool>* full_;
};

// A full disk under the history store (found by a black-box test: the server aborted in a
// RocksDB assertion, "sync_without_flush_called_", when it synced or appended to the WAL
// after a failed append). The store refuses writes and WAL syncs without touching RocksDB
// until DB::Resume() succeeds once there is space; nothing written before is lost, and the
// refused records are written when the caller retries.
TEST_F(RocksDbHistoryTest, AFullDiskRefusesWritesUntilSpaceReturns) {
  std::atomic<bool> full{false};
  auto fs = std::make_shared<FullDiskFileSystem>(&full);
  std::unique_ptr<rocksdb::Env> env = rocksdb::NewCompositeEnv(fs);
  options_.env = env.get();
  options_.resume_interval_ns = 0;
  Open();
  std::vector<AggregateRecord> before, during;
  for (int m = 0; m < 50; ++m) {
    before.push_back(
        MakeRecord("d" + std::to_string(m % 3), Resolution::kBase, kNow + m * kNanosPerMinute));
    during.push_back(
        MakeRecord("e" + std::to_string(m % 3), Resolution::kBase, kNow + m * kNanosPerMinute));
  }
  ASSERT_TRUE(store_->Put(before).ok());
  ASSERT_TRUE(store_->Flush().ok());

  full = true;
  Status st = store_->Put(during);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(st.code() == StatusCode::kIoError || st.code() == StatusCode::kUnavailable)
      << st.ToString();
  EXPECT_NE(st.message().find("No space left"), std::string::npos) << st.ToString();
  EXPECT_TRUE(store_->WriteState().failing);
  // Neither a retry, nor a WAL sync (a checkpoint), nor a close may reach the failed WAL file.
  for (int i = 0; i < 3; ++i) {
    st = store_->Put(during);
    EXPECT_FALSE(st.ok());
    st = store_->Flush();
    EXPECT_FALSE(st.ok());
  }
  auto got = store_->Get("d1", Resolution::kBase, kNow + kNanosPerMinute);
  ASSERT_TRUE(got.ok() && got->has_value()) << "reads go on";

  full = false;
  st = store_->Put(during);
  ASSERT_TRUE(st.ok()) << st.ToString();
  ASSERT_TRUE(store_->Flush().ok());
  EXPECT_FALSE(store_->WriteState().failing);
  EXPECT_EQ(CounterValue(metrics_, "joule_history_resumes_total"), 1u);
  EXPECT_GE(CounterValue(metrics_, "joule_history_write_failures_total"), 1u);

  // Failing again, then a close while failing: the next open has everything written.
  full = true;
  EXPECT_FALSE(store_->Put({MakeRecord("f", Resolution::kBase, kNow)}).ok());
  store_.reset();
  full = false;
  Open();
  for (const auto* batch : {&before, &during}) {
    for (const auto& r : *batch) {
      auto g = store_->Get(r.device_id, r.resolution, r.window_start_ns);
      ASSERT_TRUE(g.ok() && g->has_value()) << r.device_id << " " << r.window_start_ns;
    }
  }
  store_.reset();  // before the environment goes
}

// RocksDB 7.8 keeps using a WAL file whose append failed when DB::Resume() has no memtable to
// switch (every memtable was empty when the append failed: right after a resume, which
// flushes them all, or after an open), and the next append or sync of that file trips its
// assertion `sync_without_flush_called_` (found by a crash test: the server aborted at
// SIGTERM on a full disk, flushing history after a resume). Here appends fail while no
// memtable holds anything, then space returns and the store is recovered once by a WAL sync
// (Flush) and once by a Put.
void FailWithEmptyMemtablesThenRecover(RocksDbHistoryOptions options, MetricsRegistry* metrics,
                                       std::atomic<bool>* full) {
  auto opened = RocksDbHistoryStore::Open(options, metrics);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  std::unique_ptr<RocksDbHistoryStore> store = std::move(opened).value();
  auto batch = [](const std::string& device) {
    std::vector<AggregateRecord> b;
    for (int m = 0; m < 20; ++m) b.push_back(MakeRecord(device, Resolution::kBase, kNow + m));
    return b;
  };
  const std::vector<AggregateRecord> a = batch("a"), b = batch("b");
  ASSERT_TRUE(store->Put(a).ok());
  *full = true;
  ASSERT_FALSE(store->Put(b).ok());
  *full = false;
  Status st = store->Flush();  // recovers: the memtables are flushed, nothing is written
  ASSERT_TRUE(st.ok()) << st.ToString();

  *full = true;
  ASSERT_FALSE(store->Put(b).ok());  // a WAL append fails, no memtable holds anything
  *full = false;
  st = store->Flush();  // recovers, then syncs the WAL
  ASSERT_TRUE(st.ok()) << st.ToString();

  *full = true;
  ASSERT_FALSE(store->Put(b).ok());  // the same, nothing was written since
  *full = false;
  st = store->Put(b);  // recovers, then appends to the WAL
  ASSERT_TRUE(st.ok()) << st.ToString();
  ASSERT_TRUE(store->Flush().ok());
  EXPECT_FALSE(store->WriteState().failing);
  EXPECT_EQ(CounterValue(*metrics, "joule_history_resumes_total"), 3u);
  for (const auto* records : {&a, &b}) {
    for (const auto& r : *records) {
      auto got = store->Get(r.device_id, r.resolution, r.window_start_ns);
      ASSERT_TRUE(got.ok() && got->has_value()) << r.device_id << " " << r.window_start_ns;
    }
  }
  store.reset();
  opened = RocksDbHistoryStore::Open(options, metrics);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  for (const auto* records : {&a, &b}) {
    for (const auto& r : *records) {
      auto got = (*opened)->Get(r.device_id, r.resolution, r.window_start_ns);
      ASSERT_TRUE(got.ok() && got->has_value()) << r.device_id << " " << r.window_start_ns;
    }
  }
}

TEST_F(RocksDbHistoryTest, NeverWritesToAWalWhoseAppendFailedWhileTheMemtablesWereEmpty) {
  store_.reset();
  std::atomic<bool> full{false};
  auto fs = std::make_shared<FullDiskFileSystem>(&full);
  std::unique_ptr<rocksdb::Env> env = rocksdb::NewCompositeEnv(fs);
  options_.env = env.get();
  options_.resume_interval_ns = 0;
  // In a child first: the failure is RocksDB's abort, which would end this test binary.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        FailWithEmptyMemtablesThenRecover(options_, &metrics_, &full);
        const bool failed = ::testing::Test::HasFailure();
        std::filesystem::remove_all(dir_);
        std::exit(failed ? 1 : 0);
      },
      ::testing::ExitedWithCode(0), "");
  if (HasFailure()) return;
  options_.path = dir_ + "/history-parent";
  FailWithEmptyMemtablesThenRecover(options_, &metrics_, &full);
}

// Recovering closes and opens the database again, once there is space: with no memtable to
// flush, DB::Resume() succeeds on a full disk, so until the free space says otherwise the
// resumed database stays open (not written). When the open fails all the same (the
// filesystem claims space it does not have), the database is opened read-only. Either way
// reads go on, writes are refused, and the store recovers once there is space.
TEST_F(RocksDbHistoryTest, ReadsGoOnWhileTheDatabaseCannotBeReopened) {
  std::atomic<bool> full{false};
  auto fs = std::make_shared<FullDiskFileSystem>(&full);
  std::unique_ptr<rocksdb::Env> env = rocksdb::NewCompositeEnv(fs);
  options_.env = env.get();
  options_.resume_interval_ns = 0;
  Open();
  const AggregateRecord a = MakeRecord("a", Resolution::kBase, kNow);
  const AggregateRecord b = MakeRecord("b", Resolution::kBase, kNow);
  const AggregateRecord c = MakeRecord("c", Resolution::kBase, kNow);
  ASSERT_TRUE(store_->Put({a}).ok());
  full = true;
  ASSERT_FALSE(store_->Put({b}).ok());
  full = false;
  ASSERT_TRUE(store_->Flush().ok());  // recovered; no memtable holds anything now

  for (bool claims_space : {false, true}) {
    SCOPED_TRACE(claims_space ? "the filesystem claims space" : "no free space");
    fs->claims_space = claims_space;
    full = true;
    ASSERT_FALSE(store_->Put({b}).ok());
    for (int attempt = 0; attempt < 3; ++attempt) {
      Status st = store_->Put({b});
      EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.ToString();
      EXPECT_FALSE(store_->Flush().ok());
      auto got = store_->Get("a", Resolution::kBase, kNow);
      ASSERT_TRUE(got.ok() && got->has_value()) << "reads go on: " << got.status().ToString();
      auto latest = store_->Latest("a", Resolution::kBase, 5);
      ASSERT_TRUE(latest.ok() && latest->size() == 1u) << latest.status().ToString();
      auto page = store_->Range({"a", Resolution::kBase, kNow, kNow + kNanosPerMinute, 10, ""});
      ASSERT_TRUE(page.ok() && page->records.size() == 1u) << page.status().ToString();
    }
    const HistoryWriteState state = store_->WriteState();
    EXPECT_TRUE(state.failing);
    EXPECT_NE(state.error.find("No space left"), std::string::npos) << state.error;
    EXPECT_FALSE(store_->CompactAll().ok());

    full = false;
    Status st = store_->Flush();  // recovers without writing: no memtable holds anything
    ASSERT_TRUE(st.ok()) << st.ToString();
    EXPECT_FALSE(store_->WriteState().failing);
  }
  // Closed while waiting for space to reopen: the close skips the WAL file that failed.
  fs->claims_space = false;
  full = true;
  ASSERT_FALSE(store_->Put({b}).ok());
  ASSERT_FALSE(store_->Put({b}).ok());
  EXPECT_EQ(CounterValue(metrics_, "joule_history_resumes_total"), 3u);
  store_.reset();
  full = false;
  Open();
  ASSERT_TRUE(store_->Put({b}).ok());
  ASSERT_TRUE(store_->Put({c}).ok());
  Open();
  for (const auto& r : {a, b, c}) {
    auto got = store_->Get(r.device_id, r.resolution, r.window_start_ns);
    ASSERT_TRUE(got.ok() && got->has_value()) << r.device_id;
  }
  store_.reset();  // before the environment goes
}

// A database written before session 9: marker "1", values of format 1. It opens, is marked
// "2" (older builds then refuse it instead of taking format 2 values for corruption), its
// records read back exactly (Get, Range, Latest, the energy walk), and the version rule
// holds against them.
TEST_F(RocksDbHistoryTest, ReadsADatabaseOfFormat1) {
  store_.reset();
  const AggregateRecord day = FullDayRecord();
  std::vector<AggregateRecord> base;
  for (int m = 0; m < 10; ++m)
    base.push_back(MakeRecord("d", Resolution::kBase, kNow + m * kNanosPerMinute, 3));
  {
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    auto db = OpenRaw(&handles);
    ASSERT_NE(db, nullptr);
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), handles[0], "joule.history.format", "1").ok());
    // Frontiers that vouch for these keys: none (the store then reads before writing).
    for (const char* k : {"joule.history.frontier.base", "joule.history.frontier.hour",
                          "joule.history.frontier.day"}) {
      ASSERT_TRUE(db->Delete(rocksdb::WriteOptions(), handles[0], k).ok());
    }
    ASSERT_TRUE(
        db->Put(rocksdb::WriteOptions(), handles[3],
                history_codec::EncodeKey(day.resolution, day.device_id, day.window_start_ns),
                reference::Value(day))
            .ok());
    for (const auto& r : base) {
      ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), handles[1],
                          history_codec::EncodeKey(r.resolution, r.device_id, r.window_start_ns),
                          reference::Value(r))
                      .ok());
    }
    Close(db.get(), handles);
  }
  Open();
  auto got = store_->Get(day.device_id, Resolution::kDay, day.window_start_ns);
  ASSERT_TRUE(got.ok() && got->has_value()) << got.status().ToString();
  EXPECT_EQ(**got, day);
  auto page = store_->Range({"d", Resolution::kBase, kNow, kNow + kNanosPerHour, 100, ""});
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->records, base);
  auto latest = store_->Latest("d", Resolution::kBase, 1);
  ASSERT_TRUE(latest.ok() && latest->size() == 1u);
  EXPECT_EQ(latest->front(), base.back());
  double energy = 0;
  ASSERT_TRUE(store_
                  ->Scan({day.device_id, Resolution::kDay, kNow - kNanosPerDay, kNow + kNanosPerDay,
                          10, ""},
                         [&](const HistoryEntry& e) {
                           HistoryEnergyFields f;
                           AggregateRecord scratch;
                           JOULE_RETURN_IF_ERROR(e.DecodeEnergy("energy_wh", &f, &scratch));
                           energy += f.delta;
                           return Status::Ok();
                         })
                  .ok());
  EXPECT_EQ(energy, 3.5);
  // Lower or equal versions lose to format 1 values; a higher one replaces it in format 2.
  ASSERT_TRUE(store_
                  ->Put({MakeRecord("d", Resolution::kBase, kNow, 3),
                         MakeRecord("d", Resolution::kBase, kNow + kNanosPerMinute, 4)})
                  .ok());
  EXPECT_EQ(CounterValue(metrics_, "joule_history_stale_writes_total"), 1u);
  EXPECT_EQ((*store_->Get("d", Resolution::kBase, kNow))->version, 3u);
  EXPECT_EQ((*store_->Get("d", Resolution::kBase, kNow + kNanosPerMinute))->version, 4u);
  store_.reset();
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  auto db = OpenRaw(&handles);
  ASSERT_NE(db, nullptr);
  std::string marker, value;
  ASSERT_TRUE(db->Get(rocksdb::ReadOptions(), handles[0], "joule.history.format", &marker).ok());
  EXPECT_EQ(marker, "2");
  ASSERT_TRUE(db->Get(rocksdb::ReadOptions(), handles[1],
                      history_codec::EncodeKey(Resolution::kBase, "d", kNow + kNanosPerMinute),
                      &value)
                  .ok());
  EXPECT_EQ(value[0], 2);
  Close(db.get(), handles);
}

TEST_F(RocksDbHistoryTest, RefusesAnotherFormat) {
  store_.reset();
  {
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    auto db = OpenRaw(&handles);
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), handles[0], "joule.history.format", "3").ok());
    Close(db.get(), handles);
  }
  auto opened = RocksDbHistoryStore::Open(options_, &metrics_);
  EXPECT_EQ(opened.status().code(), StatusCode::kInvalidArgument);
}

// ---- codec ----

TEST(HistoryCodecTest, KeysSortByDeviceThenTime) {
  using history_codec::EncodeKey;
  const int64_t m = kNanosPerMinute;
  EXPECT_LT(EncodeKey(Resolution::kBase, "a", -m), EncodeKey(Resolution::kBase, "a", 0));
  EXPECT_LT(EncodeKey(Resolution::kBase, "a", 0), EncodeKey(Resolution::kBase, "a", m));
  EXPECT_LT(EncodeKey(Resolution::kBase, "a", std::numeric_limits<int64_t>::max()),
            EncodeKey(Resolution::kBase, "ab", std::numeric_limits<int64_t>::min()));
  EXPECT_LT(EncodeKey(Resolution::kBase, "zz", 0), EncodeKey(Resolution::kHour, "a", 0));
  const std::string key = EncodeKey(Resolution::kHour, "plug-42", kNow);
  EXPECT_EQ(key.size(), 10u + 7u);
  auto decoded = history_codec::DecodeKey(key);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->resolution, Resolution::kHour);
  EXPECT_EQ(decoded->device_id, "plug-42");
  EXPECT_EQ(decoded->window_start_ns, kNow);
  EXPECT_FALSE(history_codec::DecodeKey(key.substr(0, 12)).ok());
}

TEST(HistoryCodecTest, ValueIsCompactAndExact) {
  const AggregateRecord rec = FullDayRecord();
  const std::string key =
      history_codec::EncodeKey(rec.resolution, rec.device_id, rec.window_start_ns);
  const std::string value = history_codec::EncodeValue(rec);
  auto decoded = history_codec::DecodeRecord(key, value);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(*decoded, rec);
  // -0.0 survives (operator== cannot tell; the bits can).
  EXPECT_TRUE(std::signbit(decoded->metrics[2].max));
  EXPECT_EQ(*history_codec::DecodeVersion(value), 300u);
  // A 1m record with one power metric (format 2): 7 header + 8 name + 3 tag/count + 2
  // covered_ns + 6 short decimals of 2-3 bytes (header + varint; 15) = 35 bytes before
  // compression (format 1: 76, the doubles as 8 bytes each).
  const AggregateRecord one = MakeRecord("d", Resolution::kBase, kNow);
  const std::string small = history_codec::EncodeValue(one);
  EXPECT_EQ(small.size(), 35u);
  EXPECT_EQ(*history_codec::DecodeRecord(key, small), [&] {
    AggregateRecord r = one;
    r.device_id = rec.device_id;
    r.resolution = rec.resolution;
    r.window_start_ns = rec.window_start_ns;
    r.window_end_ns = rec.window_start_ns + kNanosPerMinute;
    return r;
  }());
}

// Format 2's compact numbers (docs/formats/history.md): equal fields are references, short
// decimals are m / 10^e, a single trapezoid's energy and a single counter increment are
// small integers; everything else is 8 raw bytes. All of them decode to the same bits.
TEST(HistoryCodecTest, CompactNumbersDecodeToTheSameBits) {
  AggregateRecord r = MakeRecord("d", Resolution::kBase, kNow);
  MetricAggregate& p = r.metrics[0];  // r.metrics grows below: p is not used after that
  p.count = 1;
  p.min = p.max = p.sum = p.first = p.last = 54.8;
  p.covered_ns = kNanosPerMinute;
  p.energy_wh = (54.8 + 54.53) * 0.5 * (static_cast<double>(kNanosPerMinute) / 3.6e12);
  MetricAggregate c;
  c.name = "energy_wh";
  c.kind = MetricKind::kCounter;
  c.count = 1;
  c.min = c.max = c.sum = c.first = c.last = 9922.323;
  c.delta = 9922.323 - 9921.414;  // 0.9089999999996508
  const double energy_wh = p.energy_wh;
  r.metrics.push_back(c);
  const std::string key = history_codec::EncodeKey(r.resolution, r.device_id, r.window_start_ns);
  const std::string value = history_codec::EncodeValue(r);
  // 7 header; power: 8 name, 3 tag/count, 2 covered, 3 + 4 refs, energy 4; counter: 10 name,
  // 3 tag/count, 5 + 4 refs, delta 3 (format 1: 137).
  EXPECT_EQ(value.size(), 56u);
  EXPECT_EQ(reference::Value(r).size(), 137u);
  auto got = history_codec::DecodeRecord(key, value);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, r);
  EXPECT_EQ(std::bit_cast<uint64_t>(got->metrics[0].energy_wh), std::bit_cast<uint64_t>(energy_wh));
  EXPECT_EQ(std::bit_cast<uint64_t>(got->metrics[1].delta), std::bit_cast<uint64_t>(c.delta));
  // Values no short form fits: raw, still exact.
  for (double d :
       {0.1 + 0.2, 1.0 / 3, -0.0, 1e300, -1e-300, 9007199254740993.0, 123456789.125,
        std::numeric_limits<double>::infinity(), std::numeric_limits<double>::quiet_NaN(),
        std::numeric_limits<double>::denorm_min(), 4.35, -4.35, 1e15, 0.000001}) {
    AggregateRecord x = r;
    x.metrics[1].delta = d;
    x.metrics[0].energy_wh = d;
    x.metrics[0].sum = d;
    auto back = history_codec::DecodeRecord(key, history_codec::EncodeValue(x));
    ASSERT_TRUE(back.ok()) << d;
    EXPECT_EQ(std::bit_cast<uint64_t>(back->metrics[1].delta), std::bit_cast<uint64_t>(d)) << d;
    EXPECT_EQ(std::bit_cast<uint64_t>(back->metrics[0].energy_wh), std::bit_cast<uint64_t>(d)) << d;
    EXPECT_EQ(std::bit_cast<uint64_t>(back->metrics[0].sum), std::bit_cast<uint64_t>(d)) << d;
  }
}

// A metric whose doubles have no decimal or derived form is written as format 1 writes it:
// 8 bytes each, no number headers, no references (a flag in the tag, format 2 only).
TEST(HistoryCodecTest, NoisyMetricsAreWrittenRaw) {
  AggregateRecord r = MakeRecord("d", Resolution::kBase, kNow);
  MetricAggregate& p = r.metrics[0];
  p.min = 1.0 / 3;
  p.max = 2.0 / 3;
  p.sum = 0.1 + 0.2;
  p.first = p.min;  // equal bits: a reference in a metric with decimals, not here
  p.last = 5.0 / 7;
  p.energy_wh = std::bit_cast<double>(uint64_t{0x3ff123456789abcd});
  const std::string key = history_codec::EncodeKey(r.resolution, r.device_id, r.window_start_ns);
  const std::string value = history_codec::EncodeValue(r);
  // 7 header + 8 name + 3 tag/count + 2 covered + 6 × 8.
  EXPECT_EQ(value.size(), 68u);
  auto got = history_codec::DecodeRecord(key, value);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, [&] {
    AggregateRecord want = r;
    want.window_end_ns = kNow + kNanosPerMinute;
    return want;
  }());
  // The same flag in a format 1 value is an unknown field.
  std::string old = reference::Value(r);
  // format, version, flags, length (6 bytes), count, metric count, name: then the tag, whose
  // second byte holds its bits 7..13 (bit 11 = field bit 9).
  const size_t tag_at = 1 + 1 + 1 + 6 + 1 + 1 + 8;
  ASSERT_EQ(static_cast<uint8_t>(old[tag_at]), 0xfd);
  ASSERT_EQ(static_cast<uint8_t>(old[tag_at + 1]), 0x03);
  old[tag_at + 1] = static_cast<char>(0x13);
  EXPECT_EQ(history_codec::DecodeRecord(key, old).status().code(), StatusCode::kCorruption);
}

TEST(HistoryCodecTest, MalformedValuesAreCorruption) {
  const AggregateRecord rec = FullDayRecord();
  const std::string key =
      history_codec::EncodeKey(rec.resolution, rec.device_id, rec.window_start_ns);
  std::mt19937 rng(42);
  // Format 2 (written now) and format 1 (written before session 9, still read).
  for (const std::string& value : {history_codec::EncodeValue(rec), reference::Value(rec)}) {
    for (size_t n = 0; n < value.size(); ++n) {
      auto r = history_codec::DecodeRecord(key, value.substr(0, n));
      EXPECT_EQ(r.status().code(), StatusCode::kCorruption) << "truncated to " << n;
    }
    EXPECT_EQ(history_codec::DecodeRecord(key, value + "x").status().code(),
              StatusCode::kCorruption);
    for (char format : {'\0', '\3', '\xff'}) {
      std::string bad_format = value;
      bad_format[0] = format;
      EXPECT_EQ(history_codec::DecodeRecord(key, bad_format).status().code(),
                StatusCode::kCorruption);
    }
    // Random bit flips and random bytes: a clean status or a record, never a crash.
    for (int i = 0; i < 20000; ++i) {
      std::string v = value;
      const int flips = 1 + static_cast<int>(rng() % 4);
      for (int f = 0; f < flips; ++f) v[rng() % v.size()] ^= static_cast<char>(1u << (rng() % 8));
      auto r = history_codec::DecodeRecord(key, v);
      if (!r.ok()) {
        EXPECT_EQ(r.status().code(), StatusCode::kCorruption);
      }
    }
    for (int i = 0; i < 20000; ++i) {
      std::string v(rng() % 64, '\0');
      for (char& c : v) c = static_cast<char>(rng());
      if (!v.empty()) v[0] = value[0];
      auto r = history_codec::DecodeRecord(key, v);
      if (!r.ok()) {
        EXPECT_EQ(r.status().code(), StatusCode::kCorruption);
      }
    }
  }
  EXPECT_EQ(history_codec::DecodeVersion("").status().code(), StatusCode::kCorruption);
  // A huge metric count does not allocate (format 1 and 2).
  for (char format : {'\x01', '\x02'}) {
    std::string huge("\x01\x01\x00\x01\x01\xff\xff\xff\xff\x0f", 10);
    huge[0] = format;
    EXPECT_EQ(history_codec::DecodeRecord(key, huge).status().code(), StatusCode::kCorruption);
  }
  // A reference to a later or absent field, a window length that overflows: corruption.
  const AggregateRecord one = MakeRecord("d", Resolution::kBase, kNow);
  std::string v = history_codec::EncodeValue(one);
  // format, version, flags, length (2 bytes), count, metric count, name (8), tag (2), count,
  // covered (2): the first number's header.
  const size_t first_number = 1 + 1 + 1 + 2 + 1 + 1 + 8 + 2 + 1 + 2;
  ASSERT_EQ(static_cast<uint8_t>(v[first_number]) & 0xf0, 0x10);  // min: a decimal
  std::string self_ref = v;
  self_ref[first_number] = 0;  // min = min
  EXPECT_EQ(history_codec::DecodeRecord(key, self_ref).status().code(), StatusCode::kCorruption);
  std::string overflow = v;
  overflow.replace(3, 2, "\xfe\xff\xff\xff\xff\xff\xff\xff\x0f", 9);  // huge q · 10^14
  EXPECT_EQ(history_codec::DecodeRecord(key, overflow).status().code(), StatusCode::kCorruption);
}

// DecodeEnergy is DecodeRecord's walk keeping only what the owner energy route sums: on
// valid values, truncations, bit flips and random bytes both fail or both give the same
// fields, for every metric name of the record, a missing one, and a repeated one.
TEST(HistoryCodecTest, DecodeEnergyAgreesWithDecodeRecord) {
  AggregateRecord day = FullDayRecord();
  AggregateRecord repeated = day;
  repeated.metrics.push_back(repeated.metrics.front());
  repeated.metrics.back().energy_wh = 99.5;  // FindMetric: the first one counts
  const AggregateRecord base = MakeRecord("d", Resolution::kBase, kNow);
  std::vector<std::string> names = {"nope", ""};
  for (const auto& m : day.metrics) names.push_back(m.name);
  size_t compared = 0, failed = 0;
  auto check = [&](const std::string& key, const std::string& value) {
    auto full = history_codec::DecodeRecord(key, value);
    for (const std::string& name : names) {
      HistoryEnergyFields f;
      const Status st = history_codec::DecodeEnergy(key, value, name, &f);
      ASSERT_EQ(st.ok(), full.ok()) << name << ": " << st.ToString();
      ++compared;
      if (!st.ok()) {
        EXPECT_EQ(st.code(), StatusCode::kCorruption);
        ++failed;
        continue;
      }
      EXPECT_EQ(f.window_end_ns, full->window_end_ns);
      EXPECT_EQ(f.local_date, full->local_date);
      const MetricAggregate* m = full->FindMetric(name);
      ASSERT_EQ(f.metric_found, m != nullptr) << name;
      if (m == nullptr) continue;
      EXPECT_EQ(f.kind, m->kind);
      EXPECT_EQ(std::bit_cast<uint64_t>(f.energy_wh), std::bit_cast<uint64_t>(m->energy_wh));
      EXPECT_EQ(std::bit_cast<uint64_t>(f.delta), std::bit_cast<uint64_t>(m->delta));
    }
  };
  std::mt19937 rng(7);
  for (const AggregateRecord* rec : std::vector<const AggregateRecord*>{&day, &repeated, &base}) {
    const std::string key =
        history_codec::EncodeKey(rec->resolution, rec->device_id, rec->window_start_ns);
    for (const std::string& value : {history_codec::EncodeValue(*rec), reference::Value(*rec)}) {
      check(key, value);
      for (size_t n = 0; n < value.size(); ++n) check(key, value.substr(0, n));
      check(key, value + "x");
      for (int i = 0; i < 5000; ++i) {
        std::string v = value;
        const int flips = 1 + static_cast<int>(rng() % 4);
        for (int k = 0; k < flips; ++k) v[rng() % v.size()] ^= static_cast<char>(1u << (rng() % 8));
        check(key, v);
        if (HasFatalFailure()) return;
      }
    }
  }
  HistoryEnergyFields f;
  const std::string key = history_codec::EncodeKey(Resolution::kDay, "plug-42", kNow);
  ASSERT_TRUE(
      history_codec::DecodeEnergy(key, history_codec::EncodeValue(repeated), "energy_wh", &f).ok());
  EXPECT_EQ(f.energy_wh, day.FindMetric("energy_wh")->energy_wh);  // not the repeat's 99.5
  EXPECT_EQ(f.delta, 3.5);
  EXPECT_GT(failed, 0u);
  EXPECT_GT(compared, failed);
}

// The value encoding of format 1 as it was written byte by byte (docs/formats/history.md):
// what databases written before session 9 hold, and what DecodeRecord must still read.
namespace reference {
void Varint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}
void Double(std::string* out, double d) {
  const uint64_t u = std::bit_cast<uint64_t>(d);
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>(u >> (8 * i)));
}
void Bytes(std::string* out, std::string_view s) {
  Varint(out, s.size());
  out->append(s);
}
bool NonZero(double d) { return std::bit_cast<uint64_t>(d) != 0; }
std::string Value(const model::AggregateRecord& r) {
  std::string out;
  out.push_back(1);
  Varint(&out, r.version);
  const bool day_fields = !r.timezone.empty() || !r.local_date.empty();
  out.push_back(static_cast<char>((r.final ? 1 : 0) | (day_fields ? 2 : 0)));
  Varint(&out, static_cast<uint64_t>(r.window_end_ns) - static_cast<uint64_t>(r.window_start_ns));
  Varint(&out, r.count);
  if (day_fields) {
    Bytes(&out, r.timezone);
    Bytes(&out, r.local_date);
  }
  Varint(&out, r.metrics.size());
  for (const model::MetricAggregate& m : r.metrics) {
    Bytes(&out, m.name);
    uint32_t fields = 0;
    const double doubles[] = {m.min, m.max, m.sum, m.first, m.last, m.energy_wh};
    for (int i = 0; i < 6; ++i) fields |= NonZero(doubles[i]) ? 1u << i : 0;
    if (m.covered_ns != 0) fields |= 1u << 6;
    if (NonZero(m.delta)) fields |= 1u << 7;
    if (m.resets != 0) fields |= 1u << 8;
    Varint(&out, static_cast<uint64_t>(m.kind) | (uint64_t{fields} << 2));
    Varint(&out, m.count);
    for (int i = 0; i < 6; ++i) {
      if (fields & (1u << i)) Double(&out, doubles[i]);
    }
    if (fields & (1u << 6))
      Varint(&out, (static_cast<uint64_t>(m.covered_ns) << 1) ^
                       static_cast<uint64_t>(m.covered_ns >> 63));
    if (fields & (1u << 7)) Double(&out, m.delta);
    if (fields & (1u << 8)) Varint(&out, m.resets);
  }
  return out;
}
}  // namespace reference

// Random records of every shape: format 2 (EncodeValue, AppendValue after other bytes) and
// format 1 (the reference encoder) both decode to the record, every double bit for bit.
TEST(HistoryRecordCodecTest, BothFormatsRoundTripRandomRecords) {
  std::mt19937_64 rng(20261129);
  auto pick_double = [&rng]() -> double {
    switch (rng() % 9) {
      case 0:
        return 0.0;
      case 1:
        return -0.0;
      case 2:
        return std::bit_cast<double>(rng());
      case 3:
        return static_cast<double>(static_cast<int64_t>(rng() % 2000001) - 1000000) / 1000;
      case 4:
        return std::numeric_limits<double>::infinity();
      case 5:  // a trapezoid piece's energy
        return (static_cast<double>(rng() % 100000) / 100 +
                static_cast<double>(rng() % 1000) / 10) *
               0.5 * (static_cast<double>(rng() % 120 + 1) * 1e9 / 3.6e12);
      case 6:  // a counter's increment
        return 9922.323 - static_cast<double>(rng() % 10000000) / 1000;
      case 7:
        return static_cast<double>(rng() % 1000) * 1e12;
      default:
        return 230.1;
    }
  };
  auto pick_u64 = [&rng]() -> uint64_t {
    switch (rng() % 4) {
      case 0:
        return 0;
      case 1:
        return rng() % 128;
      case 2:
        return rng() % 100000;
      default:
        return rng();
    }
  };
  auto bits = [](const model::MetricAggregate& m) {
    return std::array<uint64_t, 7>{
        std::bit_cast<uint64_t>(m.min),  std::bit_cast<uint64_t>(m.max),
        std::bit_cast<uint64_t>(m.sum),  std::bit_cast<uint64_t>(m.first),
        std::bit_cast<uint64_t>(m.last), std::bit_cast<uint64_t>(m.energy_wh),
        std::bit_cast<uint64_t>(m.delta)};
  };
  size_t format2_bytes = 0, format1_bytes = 0;
  for (int n = 0; n < 20000; ++n) {
    model::AggregateRecord r = MakeRecord("dev-" + std::to_string(n % 97), Resolution::kBase, kNow);
    r.version = pick_u64();
    r.final = rng() % 2;
    r.count = pick_u64();
    r.window_start_ns = static_cast<int64_t>(rng() >> 1);
    r.window_end_ns = rng() % 2
                          ? r.window_start_ns + static_cast<int64_t>(rng() % 4) * kNanosPerMinute
                          : static_cast<int64_t>(rng() >> 1);
    r.timezone = rng() % 3 == 0 ? "Europe/Berlin" : "";
    r.local_date = rng() % 3 == 0 ? "2026-11-29" : "";
    r.metrics.resize(rng() % 6);
    for (size_t i = 0; i < r.metrics.size(); ++i) {
      model::MetricAggregate& m = r.metrics[i];
      m.name = std::string(1 + rng() % 150, static_cast<char>('a' + i));
      m.kind = static_cast<model::MetricKind>(rng() % 3);
      m.count = pick_u64();
      m.min = pick_double();
      m.max = rng() % 2 ? m.min : pick_double();
      m.sum = pick_double();
      m.first = rng() % 2 ? m.max : pick_double();
      m.last = rng() % 2 ? m.first : pick_double();
      m.energy_wh = pick_double();
      m.covered_ns = static_cast<int64_t>(pick_u64()) * (rng() % 2 ? 1 : -1);
      if (rng() % 3 == 0) m.covered_ns = static_cast<int64_t>(rng() % 120) * kNanosPerSecond;
      m.delta = pick_double();
      m.resets = pick_u64();
    }
    const std::string key = history_codec::EncodeKey(r.resolution, r.device_id, r.window_start_ns);
    std::string appended = "prefix";
    history_codec::AppendValue(r, &appended);
    const std::string value = history_codec::EncodeValue(r);
    ASSERT_EQ(appended, "prefix" + value) << n;
    ASSERT_EQ(value[0], 2);
    const std::string old = reference::Value(r);
    format2_bytes += value.size();
    format1_bytes += old.size();
    for (const std::string* v : {&value, &old}) {
      auto got = history_codec::DecodeRecord(key, *v);
      ASSERT_TRUE(got.ok()) << n << " format " << int{(*v)[0]} << ": " << got.status().ToString();
      ASSERT_EQ(got->metrics.size(), r.metrics.size());
      for (size_t i = 0; i < r.metrics.size(); ++i) {
        ASSERT_EQ(bits(got->metrics[i]), bits(r.metrics[i])) << n << " metric " << i;
      }
      ASSERT_EQ(got->version, r.version);
      ASSERT_EQ(got->window_end_ns, r.window_end_ns) << n;
      ASSERT_EQ(got->count, r.count);
      ASSERT_EQ(got->final, r.final);
      ASSERT_EQ(got->timezone, r.timezone);
      ASSERT_EQ(got->local_date, r.local_date);
      for (size_t i = 0; i < r.metrics.size(); ++i) {
        ASSERT_EQ(got->metrics[i].name, r.metrics[i].name);
        ASSERT_EQ(got->metrics[i].kind, r.metrics[i].kind);
        ASSERT_EQ(got->metrics[i].count, r.metrics[i].count);
        ASSERT_EQ(got->metrics[i].covered_ns, r.metrics[i].covered_ns);
        ASSERT_EQ(got->metrics[i].resets, r.metrics[i].resets);
      }
      ASSERT_EQ(*history_codec::DecodeVersion(*v), r.version);
    }
  }
  EXPECT_LT(format2_bytes, format1_bytes);
}

}  // namespace
}  // namespace joule::store

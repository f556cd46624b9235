// history_size: bytes on disk per stored history record, measured the way the comparison
// harness measures them (bench/harness/bench.py, history: the history directory's size after
// a clean stop), but for the history store alone, reproducibly and in seconds.
//
//   history_size --source DIR [--batch N] [--values-per-record V] [--work DIR] [--compact]
//
// Reads every record of an existing history database (a `history/` directory left by
// `joule serve`, any value format this build reads), writes them through
// RocksDbHistoryStore into a fresh database in time order (by window end, then resolution
// and device; batches of N, default 1000: the processors' batches), closes the store as a
// clean stop does, and reports the directory's bytes (by kind of file) per record and per
// value (V numbers per record: the harness counts 38 in a 1m record of its data). Then it
// reopens the database and compares every record with the source: the numbers are only
// printed when all of them read back equal, with the CPU time per record of reading them
// all back (Range, pages of 1440, 5 rounds, block cache warm). --compact compacts
// everything before the close (the size after RocksDB's full compaction, for comparison).
//
// The harness's source: run `bench/run.sh --only history` (or its first steps), or see
// docs/benchmarks/HISTORY.md, "History storage per value".
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "common/clock.h"
#include "common/metrics.h"
#include "store/rocksdb/history_record_codec.h"
#include "store/rocksdb/rocksdb_history_store.h"

namespace {

namespace fs = std::filesystem;
using joule::model::AggregateRecord;
using joule::model::Resolution;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "history_size: %s\n", what.c_str());
  std::exit(1);
}

double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// Every record of every resolution of the database at `dir`, read-only (the WAL is
// replayed in memory, nothing is written).
std::vector<AggregateRecord> ReadAll(const std::string& dir) {
  std::vector<rocksdb::ColumnFamilyDescriptor> families;
  for (const char* name : {"default", "base", "hour", "day"}) {
    families.emplace_back(name, rocksdb::ColumnFamilyOptions());
  }
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s =
      rocksdb::DB::OpenForReadOnly(rocksdb::DBOptions(), dir, families, &handles, &raw);
  if (!s.ok()) Die("open " + dir + ": " + s.ToString());
  std::unique_ptr<rocksdb::DB> db(raw);
  std::vector<AggregateRecord> out;
  for (size_t i = 1; i < handles.size(); ++i) {
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), handles[i]));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      auto r = joule::store::history_codec::DecodeRecord(
          std::string_view(it->key().data(), it->key().size()),
          std::string_view(it->value().data(), it->value().size()));
      if (!r.ok()) Die("source record: " + r.status().ToString());
      out.push_back(std::move(r).value());
    }
    if (!it->status().ok()) Die("source scan: " + it->status().ToString());
  }
  for (auto* h : handles) (void)db->DestroyColumnFamilyHandle(h);
  return out;
}

struct DirSize {
  uint64_t total = 0, sst = 0, wal = 0, manifest = 0, options = 0, other = 0;
};

DirSize Measure(const std::string& dir) {
  DirSize d;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    const uint64_t n = e.file_size();
    const std::string name = e.path().filename().string();
    d.total += n;
    if (name.ends_with(".sst")) {
      d.sst += n;
    } else if (name.ends_with(".log") && name != "LOG") {
      d.wal += n;
    } else if (name.starts_with("MANIFEST")) {
      d.manifest += n;
    } else if (name.starts_with("OPTIONS")) {
      d.options += n;
    } else {
      d.other += n;
    }
  }
  return d;
}

}  // namespace

int main(int argc, char** argv) {
  std::string source, work;
  size_t batch_size = 1000;
  double values_per_record = 38;
  bool compact = false;
  size_t dump = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) Die(a + " needs a value");
      return argv[++i];
    };
    if (a == "--source") {
      source = next();
    } else if (a == "--work") {
      work = next();
    } else if (a == "--batch") {
      batch_size = std::max<size_t>(1, std::stoul(next()));
    } else if (a == "--values-per-record") {
      values_per_record = std::stod(next());
    } else if (a == "--dump") {
      dump = std::stoul(next());
    } else if (a == "--compact") {
      compact = true;
    } else {
      Die("usage: history_size --source DIR [--batch N] [--values-per-record V] [--work DIR] "
          "[--compact]");
    }
  }
  if (source.empty()) Die("--source DIR is required");

  std::vector<AggregateRecord> records = ReadAll(source);
  if (records.empty()) Die("no records in " + source);
  if (dump > 0) {
    // Every dump-th record of the source as CONTRACT JSON, with its encoded value's size.
    for (size_t i = 0; i < records.size(); i += dump) {
      std::printf("%zu %s\n", joule::store::history_codec::EncodeValue(records[i]).size(),
                  joule::model::RecordToJson(records[i]).c_str());
    }
    return 0;
  }
  std::sort(records.begin(), records.end(), [](const AggregateRecord& a, const AggregateRecord& b) {
    return std::tie(a.window_end_ns, a.resolution, a.device_id) <
           std::tie(b.window_end_ns, b.resolution, b.device_id);
  });
  std::map<std::tuple<std::string, Resolution>, size_t> per_series;
  for (const auto& r : records) ++per_series[{r.device_id, r.resolution}];

  const bool own_work = work.empty();
  if (own_work) {
    std::string tmpl = (fs::temp_directory_path() / "joule-history-size-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) Die("mkdtemp");
    work = tmpl;
  }
  const std::string path = work + "/history";
  fs::remove_all(path);
  // Clock at the newest window end: every source record is inside its retention.
  joule::ManualClock clock(records.back().window_end_ns);
  joule::store::RocksDbHistoryOptions options;
  options.path = path;
  options.clock = &clock;

  double put_cpu = 0, close_wall = 0, range_cpu_ns = 0;
  {
    joule::MetricsRegistry metrics;
    auto opened = joule::store::RocksDbHistoryStore::Open(options, &metrics);
    if (!opened.ok()) Die(opened.status().ToString());
    std::unique_ptr<joule::store::RocksDbHistoryStore> store = std::move(opened).value();
    const double cpu0 = CpuSeconds();
    std::vector<AggregateRecord> batch;
    for (size_t i = 0; i < records.size(); i += batch_size) {
      batch.assign(
          records.begin() + static_cast<ptrdiff_t>(i),
          records.begin() + static_cast<ptrdiff_t>(std::min(records.size(), i + batch_size)));
      if (auto st = store->Put(batch); !st.ok()) Die("put: " + st.ToString());
    }
    put_cpu = CpuSeconds() - cpu0;
    if (auto st = store->Flush(); !st.ok()) Die("flush: " + st.ToString());
    if (compact) {
      if (auto st = store->CompactAll(); !st.ok()) Die("compact: " + st.ToString());
    }
    const auto t0 = std::chrono::steady_clock::now();
    store.reset();  // the clean stop
    close_wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  const DirSize size = Measure(path);

  // Everything reads back exactly.
  {
    joule::MetricsRegistry metrics;
    auto opened = joule::store::RocksDbHistoryStore::Open(options, &metrics);
    if (!opened.ok()) Die(opened.status().ToString());
    std::map<std::tuple<std::string, Resolution, int64_t>, const AggregateRecord*> want;
    for (const auto& r : records) want[{r.device_id, r.resolution, r.window_start_ns}] = &r;
    size_t compared = 0;
    for (const auto& [series, n] : per_series) {
      joule::store::HistoryQuery q{std::get<0>(series),
                                   std::get<1>(series),
                                   std::numeric_limits<int64_t>::min(),
                                   std::numeric_limits<int64_t>::max(),
                                   n + 1,
                                   ""};
      auto page = (*opened)->Range(q);
      if (!page.ok()) Die("read back: " + page.status().ToString());
      if (page->records.size() != n)
        Die("read back: wrong record count for " + std::get<0>(series));
      for (const auto& got : page->records) {
        auto it = want.find({got.device_id, got.resolution, got.window_start_ns});
        if (it == want.end() || !(*it->second == got)) Die("read back: a record differs");
        ++compared;
      }
    }
    if (compared != records.size()) Die("read back: not every record was compared");
    // The read path's cost: every series read back in pages of 1440 (a day of 1m), 5 times.
    const double cpu0 = CpuSeconds();
    size_t read = 0;
    for (int round = 0; round < 5; ++round) {
      for (const auto& [series, n] : per_series) {
        std::string cursor;
        do {
          joule::store::HistoryQuery q{std::get<0>(series),
                                       std::get<1>(series),
                                       std::numeric_limits<int64_t>::min(),
                                       std::numeric_limits<int64_t>::max(),
                                       1440,
                                       cursor};
          auto page = (*opened)->Range(q);
          if (!page.ok()) Die("read back: " + page.status().ToString());
          read += page->records.size();
          cursor = page->next_cursor;
        } while (!cursor.empty());
      }
    }
    range_cpu_ns = (CpuSeconds() - cpu0) * 1e9 / static_cast<double>(read);
  }
  if (own_work) fs::remove_all(work);

  const double n = static_cast<double>(records.size());
  std::printf(
      "{\"records\": %zu, \"verified\": true, \"dir_bytes\": %llu, \"sst_bytes\": %llu, "
      "\"wal_bytes\": %llu, \"manifest_bytes\": %llu, \"options_bytes\": %llu, "
      "\"other_bytes\": %llu, \"bytes_per_record\": %.2f, \"bytes_per_value\": %.4f, "
      "\"put_cpu_us_per_record\": %.2f, \"range_cpu_ns_per_record\": %.0f, \"close_s\": %.3f, "
      "\"compacted\": %s}\n",
      records.size(), static_cast<unsigned long long>(size.total),
      static_cast<unsigned long long>(size.sst), static_cast<unsigned long long>(size.wal),
      static_cast<unsigned long long>(size.manifest), static_cast<unsigned long long>(size.options),
      static_cast<unsigned long long>(size.other), static_cast<double>(size.total) / n,
      static_cast<double>(size.total) / (n * values_per_record), put_cpu * 1e6 / n, range_cpu_ns,
      close_wall, compact ? "true" : "false");
  return 0;
}

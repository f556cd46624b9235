#include "store/rocksdb/rocksdb_history_store.h"

#include <fmt/format.h>
#include <rocksdb/cache.h>
#include <rocksdb/compaction_filter.h>
#include <rocksdb/convenience.h>
#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/listener.h>
#include <rocksdb/options.h>
#include <rocksdb/slice_transform.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>
#include <rocksdb/write_buffer_manager.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <functional>
#include <limits>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>
#include <utility>

#include "common/logging.h"
#include "store/rocksdb/history_record_codec.h"
#include "store/rocksdb/history_version_cache.h"

namespace joule::store {
namespace {

namespace codec = history_codec;

constexpr size_t kResolutions = 3;
constexpr std::array<const char*, kResolutions> kFamilyNames = {"base", "hour", "day"};
constexpr std::string_view kFormatKey = "joule.history.format";
// The database's format marker: "2" since values of format 2 may be in it (an older build,
// which reads only format 1 values, refuses to open it instead of taking them for
// corruption); "1" databases are opened and marked "2" (their format 1 values stay readable).
constexpr std::string_view kFormatValue = "2";
constexpr std::string_view kFormatValue1 = "1";
constexpr size_t kStripes = 64;
// Per family: every key of the family has window_start <= this (docs/formats/history.md,
// "Versioned upsert"). Raised in steps of kFrontierStep past what was written, so that it
// is rewritten about once an hour of event time, not with every batch.
constexpr std::array<std::string_view, kResolutions> kFrontierKeys = {
    "joule.history.frontier.base", "joule.history.frontier.hour", "joule.history.frontier.day"};
constexpr int64_t kFrontierStep = 3600LL * 1'000'000'000LL;
// After a failed write, the database is reopened once this much space is free (its OPTIONS
// file is ~20 KB, a new MANIFEST a few KB, and the WAL grows from there).
constexpr uint64_t kReopenFreeBytes = 1 << 20;

std::string EncodeFrontier(int64_t v) {
  uint64_t u = static_cast<uint64_t>(v) ^ (uint64_t{1} << 63);
  std::string out(8, '\0');
  for (int i = 7; i >= 0; --i) {
    out[static_cast<size_t>(i)] = static_cast<char>(u & 0xff);
    u >>= 8;
  }
  return out;
}

bool DecodeFrontier(std::string_view s, int64_t* v) {
  if (s.size() != 8) return false;
  uint64_t u = 0;
  for (char c : s) u = (u << 8) | static_cast<uint8_t>(c);
  *v = static_cast<int64_t>(u ^ (uint64_t{1} << 63));
  return true;
}

// The frontier to persist when `needed` is past the stored one: the next step boundary
// after it plus a step (saturating: INT64_MAX means "any key may exist").
int64_t NextFrontier(int64_t needed) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  if (needed > kMax - 2 * kFrontierStep) return kMax;
  int64_t q = needed / kFrontierStep;
  if (needed < 0 && needed % kFrontierStep != 0) --q;  // floor division
  return (q + 2) * kFrontierStep;
}

size_t Index(model::Resolution r) { return static_cast<size_t>(r); }

Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return Status::Ok();
  std::string m = "history " + std::string(what) + ": " + s.ToString();
  if (s.IsCorruption()) return Status::Corruption(std::move(m));
  if (s.IsIOError()) return Status::IoError(std::move(m));
  if (s.IsNotFound()) return Status::NotFound(std::move(m));
  if (s.IsInvalidArgument()) return Status::InvalidArgument(std::move(m));
  if (s.IsBusy() || s.IsTryAgain() || s.IsIncomplete()) return Status::Unavailable(std::move(m));
  return Status::Internal(std::move(m));
}

Status ValidateDeviceId(std::string_view device_id) {
  if (device_id.empty() || device_id.size() > codec::kMaxDeviceIdBytes) {
    return Status::InvalidArgument("history: device_id must be 1..255 bytes");
  }
  return Status::Ok();
}

Status ValidateResolution(model::Resolution r) {
  if (Index(r) >= kResolutions) return Status::InvalidArgument("history: unknown resolution");
  return Status::Ok();
}

// Drops keys whose window_start is before the retention horizon at the time the compaction
// started. Reads the key only.
class RetentionFilter final : public rocksdb::CompactionFilter {
 public:
  explicit RetentionFilter(int64_t horizon_ns) : horizon_ns_(horizon_ns) {}
  bool Filter(int /*level*/, const rocksdb::Slice& key, const rocksdb::Slice& /*value*/,
              std::string* /*new_value*/, bool* /*value_changed*/) const override {
    int64_t window_start;
    if (!codec::DecodeKeyWindowStart(std::string_view(key.data(), key.size()), &window_start)) {
      return false;  // never drop what we do not understand
    }
    return window_start < horizon_ns_;
  }
  const char* Name() const override { return "joule.HistoryRetentionFilter"; }

 private:
  int64_t horizon_ns_;
};

class RetentionFilterFactory final : public rocksdb::CompactionFilterFactory {
 public:
  RetentionFilterFactory(model::Resolution r, HistoryRetention retention, const Clock* clock)
      : resolution_(r), retention_(retention), clock_(clock) {}
  std::unique_ptr<rocksdb::CompactionFilter> CreateCompactionFilter(
      const rocksdb::CompactionFilter::Context& /*context*/) override {
    return std::make_unique<RetentionFilter>(retention_.Horizon(resolution_, clock_->NowNanos()));
  }
  const char* Name() const override { return "joule.HistoryRetentionFilterFactory"; }

 private:
  model::Resolution resolution_;
  HistoryRetention retention_;
  const Clock* clock_;
};

rocksdb::CompressionType Pick(const std::vector<rocksdb::CompressionType>& supported,
                              std::initializer_list<rocksdb::CompressionType> preference) {
  for (auto c : preference) {
    if (std::find(supported.begin(), supported.end(), c) != supported.end()) return c;
  }
  return rocksdb::kNoCompression;
}

// RocksDB's own log lines (warnings and errors) go to Joule's log on stderr, not to a
// `LOG` file in the database directory: on a full disk a failed append to that file made
// the next log line (RocksDB logs every background error) trip RocksDB's assertion on a
// file written after an error, and the server aborted (found by a black-box test).
class StderrLogger final : public rocksdb::Logger {
 public:
  StderrLogger() : rocksdb::Logger(rocksdb::InfoLogLevel::WARN_LEVEL) {}
  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override {
    Log(rocksdb::InfoLogLevel::WARN_LEVEL, format, ap);
  }
  void Logv(const rocksdb::InfoLogLevel level, const char* format, va_list ap) override {
    if (level < GetInfoLogLevel() || level == rocksdb::InfoLogLevel::HEADER_LEVEL) return;
    Log(level, format, ap);
  }

 private:
  // At most kPerMinute lines a minute: on a full disk every resume attempt (one a second)
  // logs a background error. The next line that goes out says how many were left out.
  static constexpr int kPerMinute = 10;

  void Log(rocksdb::InfoLogLevel level, const char* format, va_list ap) {
    uint64_t suppressed = 0;
    {
      std::lock_guard lock(mu_);
      const auto now = std::chrono::steady_clock::now();
      if (now - window_start_ >= std::chrono::minutes(1)) {
        window_start_ = now;
        lines_ = 0;
      }
      if (++lines_ > kPerMinute) {
        ++suppressed_;
        return;
      }
      suppressed = std::exchange(suppressed_, 0);
    }
    char buf[1024];
    va_list copy;
    va_copy(copy, ap);
    const int n = std::vsnprintf(buf, sizeof buf, format, copy);
    va_end(copy);
    if (n < 0) return;
    std::string_view text(buf, std::min<size_t>(static_cast<size_t>(n), sizeof buf - 1));
    while (!text.empty() && text.back() == '\n') text.remove_suffix(1);
    const logging::Level l = level >= rocksdb::InfoLogLevel::ERROR_LEVEL ? logging::Level::kError
                                                                         : logging::Level::kWarn;
    if (suppressed > 0) {
      logging::Log(
          l, "rocksdb (history store)",
          {{"message", std::string(text)}, {"suppressed_before", std::to_string(suppressed)}});
    } else {
      logging::Log(l, "rocksdb (history store)", {{"message", std::string(text)}});
    }
  }

  std::mutex mu_;
  std::chrono::steady_clock::time_point window_start_;
  int lines_ = 0;
  uint64_t suppressed_ = 0;
};

// A write that fails for want of space stops RocksDB's writes (a "hard" error). Its own
// recovery waits until the free space exceeds a write buffer (64 MiB) and refuses a manual
// DB::Resume() meanwhile, so on a small or nearly full disk it never resumed: it is turned
// off for hard errors, and the store resumes itself (Impl::Recover). Soft errors (a failed
// compaction) keep RocksDB's own recovery.
class ResumeByStore final : public rocksdb::EventListener {
 public:
  void OnErrorRecoveryBegin(rocksdb::BackgroundErrorReason /*reason*/, rocksdb::Status bg_error,
                            bool* auto_recovery) override {
    if (bg_error.severity() >= rocksdb::Status::Severity::kHardError) *auto_recovery = false;
  }
};

// A shared mutex whose exclusive side a stream of readers cannot starve (std::shared_mutex
// on glibc lets a reader in while the lock is read-held, a waiting writer or not): once a
// writer waits, new readers wait for it. Not recursive: a reader that takes it again while
// a writer waits deadlocks.
class WriterFirstSharedMutex {
 public:
  void lock_shared() {
    if (writer_waiting_.load(std::memory_order_acquire)) std::lock_guard gate(gate_);
    mu_.lock_shared();
  }
  void unlock_shared() { mu_.unlock_shared(); }
  void lock() {
    gate_.lock();
    writer_waiting_.store(true, std::memory_order_release);
    mu_.lock();
  }
  void unlock() {
    mu_.unlock();
    writer_waiting_.store(false, std::memory_order_release);
    gate_.unlock();
  }

 private:
  std::shared_mutex mu_;
  std::mutex gate_;
  std::atomic<bool> writer_waiting_{false};
};

// Read by the size gauges at render time; detached (db = nullptr) before the DB closes.
struct SizeProbe {
  std::mutex mu;
  rocksdb::DB* db = nullptr;
  std::array<rocksdb::ColumnFamilyHandle*, kResolutions> families{};
  std::shared_ptr<rocksdb::Cache> block_cache;  // set once at open, outlives reopens

  double BlockCacheBytes() {
    std::lock_guard lock(mu);
    return block_cache ? static_cast<double>(block_cache->GetUsage()) : 0;
  }

  double Read(size_t family, const std::string& property) {
    std::lock_guard lock(mu);
    if (db == nullptr) return 0;
    uint64_t v = 0;
    if (!db->GetIntProperty(families[family], property, &v)) return 0;
    return static_cast<double>(v);
  }
};

}  // namespace

struct RocksDbHistoryStore::Impl {
  RocksDbHistoryOptions options;
  const Clock* clock = nullptr;
  std::unique_ptr<MetricsRegistry> owned_metrics;
  std::shared_ptr<SizeProbe> probe = std::make_shared<SizeProbe>();
  // What the database is opened with, kept for reopening it (Recover).
  rocksdb::DBOptions db_options;
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;

  // The open database. db_mu is held shared by every use of db and the handles (never
  // twice by one thread), and exclusively while the database is closed and opened again
  // (Recover): it is null when that failed, and read-only (read_only) when only a read-only
  // open succeeded.
  WriterFirstSharedMutex db_mu;
  rocksdb::DB* db = nullptr;
  bool read_only = false;
  rocksdb::ColumnFamilyHandle* default_family = nullptr;
  std::array<rocksdb::ColumnFamilyHandle*, kResolutions> families{};

  std::array<std::mutex, kStripes> stripes;
  // What Put knows of stored versions (guarded per stripe by `stripes`); null = disabled.
  std::unique_ptr<HistoryVersionCache> versions;
  // The persisted frontier per family (kFrontierKeys); raised only under frontier_mu, which
  // is held until the write carrying the new value has returned.
  std::array<std::atomic<int64_t>, kResolutions> persisted_frontier{};
  std::mutex frontier_mu;

  // Write failures (rocksdb_history_store.h). io_mu is held shared by every write and
  // exclusively by FlushWAL and Resume: a write that fails has marked the store failing
  // before a WAL sync can start, and none starts while RocksDB resumes. Lock order: db_mu,
  // stripes, frontier_mu, io_mu.
  std::shared_mutex io_mu;
  std::atomic<bool> failing{false};
  // Guarded by db_mu (shared) with io_mu (exclusive), or by db_mu (exclusive):
  int64_t next_resume_ns = 0;   // steady clock
  bool reopen_pending = false;  // DB::Resume() succeeded; the database is to be reopened
  mutable std::mutex state_mu;
  HistoryWriteState state;  // guarded by state_mu

  HistoryStore::WriteObserver observer;
  Counter* put_records = nullptr;
  Counter* write_failures = nullptr;
  Counter* resumes = nullptr;
  Counter* stale_writes = nullptr;
  Counter* expired_writes = nullptr;
  Counter* corrupt_values = nullptr;
  Counter* version_reads = nullptr;
  Histogram* put_latency = nullptr;

  ~Impl() {
    std::unique_lock lock(db_mu);
    // A clean close writes the memtables to SST files (compressed, one version per key),
    // so that the WAL — every record uncompressed, every rewrite of a window — can be
    // deleted, and the next open replays nothing. RocksDB's Close does not flush when a
    // WAL exists. Best effort: on failure the WAL is still there and replayed at open.
    // Never while failing: the flush would reach a WAL file whose append failed.
    CloseDb(/*flush=*/!failing.load());
  }

  // REQUIRES: db_mu held exclusively (or no other user yet), db == nullptr.
  Status OpenDb(bool for_reading_only) {
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::Status s =
        for_reading_only
            ? rocksdb::DB::OpenForReadOnly(db_options, options.path, descriptors, &handles, &db)
            : rocksdb::DB::Open(db_options, options.path, descriptors, &handles, &db);
    if (!s.ok()) {
      db = nullptr;
      return FromRocks(
          s, std::string(for_reading_only ? "open (read-only) " : "open ") + options.path);
    }
    read_only = for_reading_only;
    default_family = handles[0];
    for (size_t i = 0; i < kResolutions; ++i) families[i] = handles[i + 1];
    std::lock_guard lock(probe->mu);
    probe->db = db;
    probe->families = families;
    return Status::Ok();
  }
  // REQUIRES: db_mu held exclusively (or no other user any more).
  void CloseDb(bool flush) {
    {
      std::lock_guard lock(probe->mu);
      probe->db = nullptr;
    }
    if (db == nullptr) return;
    std::vector<rocksdb::ColumnFamilyHandle*> all;
    if (default_family != nullptr) all.push_back(default_family);
    for (auto* h : families) {
      if (h != nullptr) all.push_back(h);
    }
    if (flush && !read_only) {
      rocksdb::FlushOptions flush_options;
      flush_options.allow_write_stall = true;
      (void)db->Flush(flush_options, all);
    }
    for (auto* h : all) (void)db->DestroyColumnFamilyHandle(h);
    default_family = nullptr;
    families.fill(nullptr);
    (void)db->Close();
    delete db;
    db = nullptr;
    read_only = false;
  }

  // Records a failed write; the store refuses writes until it has recovered.
  void Failed(const Status& st) {
    std::lock_guard lock(state_mu);
    if (!state.failing) {
      state.failing = true;
      state.since_ns = clock->NowNanos();
      state.failures = 0;
    }
    state.error = st.message();
    ++state.failures;
    failing.store(true);
    write_failures->Inc();
  }
  Status Refused() {
    std::lock_guard lock(state_mu);
    ++state.failures;
    return Status::Unavailable(fmt::format(
        "history store is not writable since a write failed ({}); retried", state.error));
  }
  void RecordRecoveryError(const Status& st) {
    std::lock_guard lock(state_mu);
    state.error = st.message();
  }
  static int64_t SteadyNowNanos() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }

  // When failing: recovers, at most once per resume_interval_ns. OK when writable.
  //
  // DB::Resume() first, with the database open (reads go on): once there is space it
  // flushes the memtables, clears RocksDB's error and, by switching a memtable that holds
  // writes, starts a new WAL file. But RocksDB 7.8 switches only such memtables: when every
  // memtable was empty as the WAL append failed (after an open, or after a resume, which
  // flushes them all), Resume succeeds — even on a full disk — and the WAL file whose
  // append failed stays in use, and the next append or sync of it trips RocksDB's assertion
  // `sync_without_flush_called_` (an abort; fixed upstream much later, facebook/rocksdb
  // #12448 and #12998; found by a crash test, at SIGTERM on a full disk). Then the database
  // is closed and opened again before anything is written, once at least kReopenFreeBytes
  // are free: closing skips a WAL writer that saw an error, and the open starts a new WAL
  // and replays nothing that is not in SST files. If that open fails (the space was taken
  // again), the database is opened read-only so that reads go on, and the next attempt
  // opens it for writing again.
  Status Recover() {
    if (!failing.load()) return Status::Ok();
    {
      std::shared_lock db_lock(db_mu);
      std::unique_lock io(io_mu);
      if (!failing.load()) return Status::Ok();
      const int64_t now = SteadyNowNanos();
      if (now < next_resume_ns) return Refused();
      next_resume_ns = now + options.resume_interval_ns;
      if (!reopen_pending) {
        // Stable meanwhile: only a write fills a memtable, and only a write or a flush
        // switches one; RocksDB refuses writes now, and the store flushes under io_mu.
        const bool resume_starts_a_new_wal = AnyMemtableHoldsWrites();
        rocksdb::Status s = db->Resume();
        if (!s.ok()) {
          RecordRecoveryError(FromRocks(s, "resume"));
          return Refused();
        }
        if (resume_starts_a_new_wal) return Recovered();
        reopen_pending = true;
      }
      uint64_t free_bytes = 0;
      if (db_options.env->GetFreeSpace(options.path, &free_bytes).ok() &&
          free_bytes < kReopenFreeBytes) {
        return Refused();
      }
    }
    std::unique_lock db_lock(db_mu);
    if (!failing.load()) return Status::Ok();  // reopened by another thread
    if (!reopen_pending) return Refused();     // ... and failed again since
    CloseDb(/*flush=*/false);
    Status st = OpenDb(/*for_reading_only=*/false);
    if (!st.ok()) {
      RecordRecoveryError(st);
      (void)OpenDb(/*for_reading_only=*/true);  // reads go on; null if this fails too
      return Refused();
    }
    reopen_pending = false;
    return Recovered();
  }
  // REQUIRES: db_mu held, db != nullptr.
  bool AnyMemtableHoldsWrites() const {
    std::vector<rocksdb::ColumnFamilyHandle*> all(families.begin(), families.end());
    all.push_back(default_family);
    for (auto* h : all) {
      uint64_t entries = 0;
      if (db->GetIntProperty(h, "rocksdb.num-entries-active-mem-table", &entries) && entries > 0) {
        return true;
      }
    }
    return false;
  }
  Status Recovered() {
    {
      std::lock_guard lock(state_mu);
      state = HistoryWriteState{};
    }
    failing.store(false);
    resumes->Inc();
    return Status::Ok();
  }
  // A write under io_mu (shared): refused while failing; a failure marks the store failing.
  // REQUIRES: db_mu held shared, db != nullptr.
  Status Write(rocksdb::WriteBatch* batch) {
    std::shared_lock io(io_mu);
    if (failing.load()) return Refused();
    Status st = FromRocks(db->Write(rocksdb::WriteOptions(), batch), "write");
    if (!st.ok()) Failed(st);
    return st;
  }

  int64_t Horizon(model::Resolution r) const {
    return options.retention.Horizon(r, clock->NowNanos());
  }
  rocksdb::ColumnFamilyHandle* Family(model::Resolution r) const { return families[Index(r)]; }
  static size_t Stripe(std::string_view device_id) {
    return std::hash<std::string_view>{}(device_id) % kStripes;
  }
  static Status Closed() {
    return Status::Unavailable("history store is closed: reopening it after a failed write failed");
  }
};

RocksDbHistoryStore::RocksDbHistoryStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RocksDbHistoryStore::~RocksDbHistoryStore() = default;

namespace {

// The memtable insert hint's prefix: a key's resolution, id length and device id (the key
// without its window start). A device's records go to the end of its key range (the
// newest window) or re-write a recent window, so with one insert hint per device the skip
// list insert starts next to its place instead of searching from the top: that search was
// ~2/3 of Put's instructions (~16k per record at 44k records, callgrind). Memory only
// (RocksDB keeps ~250 bytes per prefix per memtable); nothing stored changes.
class DevicePrefix final : public rocksdb::SliceTransform {
 public:
  const char* Name() const override { return "joule.history.device_prefix"; }
  rocksdb::Slice Transform(const rocksdb::Slice& key) const override {
    return rocksdb::Slice(key.data(), 2 + static_cast<uint8_t>(key[1]));
  }
  bool InDomain(const rocksdb::Slice& key) const override {
    return key.size() >= 2 && key.size() >= 2 + static_cast<size_t>(static_cast<uint8_t>(key[1]));
  }
};

}  // namespace

Result<std::unique_ptr<RocksDbHistoryStore>> RocksDbHistoryStore::Open(
    const RocksDbHistoryOptions& options, MetricsRegistry* metrics) {
  if (options.path.empty()) return Status::InvalidArgument("history: empty path");
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->clock = options.clock != nullptr ? options.clock : SystemClock::Default();
  if (metrics == nullptr) {
    impl->owned_metrics = std::make_unique<MetricsRegistry>();
    metrics = impl->owned_metrics.get();
  }

  rocksdb::DBOptions& db_options = impl->db_options;
  if (options.env != nullptr) db_options.env = options.env;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  db_options.max_background_jobs = 2;
  db_options.max_total_wal_size = options.max_total_wal_bytes;
  if (options.memtable_bytes > 0) {
    db_options.write_buffer_manager =
        std::make_shared<rocksdb::WriteBufferManager>(options.memtable_bytes);
  }
  db_options.info_log_level = rocksdb::InfoLogLevel::WARN_LEVEL;
  db_options.info_log = std::make_shared<StderrLogger>();
  db_options.listeners.push_back(std::make_shared<ResumeByStore>());

  const auto supported = rocksdb::GetSupportedCompressions();
  // ZSTD on every level, flushes included: a history record is written once or a few
  // times and then read for months, and most of a young database (a few days of data, or
  // everything after a clean close) is in L0/L1, which LZ4 left ~30 % larger
  // (docs/benchmarks/HISTORY.md, "History storage per value").
  const auto compression =
      Pick(supported, {rocksdb::kZSTD, rocksdb::kLZ4Compression, rocksdb::kSnappyCompression});
  rocksdb::BlockBasedTableOptions table;
  table.block_size = 16 << 10;
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  table.block_cache = rocksdb::NewLRUCache(options.block_cache_bytes);
  {
    std::lock_guard lock(impl->probe->mu);
    impl->probe->block_cache = table.block_cache;
  }

  std::vector<rocksdb::ColumnFamilyDescriptor>& descriptors = impl->descriptors;
  descriptors.emplace_back(rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions());
  for (size_t i = 0; i < kResolutions; ++i) {
    const auto r = static_cast<model::Resolution>(i);
    rocksdb::ColumnFamilyOptions cf;
    cf.compression = compression;
    cf.bottommost_compression = compression;
    cf.level_compaction_dynamic_level_bytes = true;
    cf.memtable_insert_with_hint_prefix_extractor = std::make_shared<DevicePrefix>();
    cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
    if (options.retention.For(r) > 0) {
      cf.compaction_filter_factory =
          std::make_shared<RetentionFilterFactory>(r, options.retention, impl->clock);
      if (options.periodic_compaction_seconds > 0) {
        cf.periodic_compaction_seconds = options.periodic_compaction_seconds;
      }
    }
    descriptors.emplace_back(kFamilyNames[i], cf);
  }

  // A new database: its directory first. DB::Open would create it too, but lists it before
  // that and logs the NotFound through StderrLogger at error level ("Error when reading
  // …/history dir NotFound"): every fresh data dir printed an error at start (found by a
  // black-box test). A failure here is DB::Open's to report.
  rocksdb::Env* env = db_options.env != nullptr ? db_options.env : rocksdb::Env::Default();
  env->CreateDirIfMissing(options.path).PermitUncheckedError();

  JOULE_RETURN_IF_ERROR(impl->OpenDb(/*for_reading_only=*/false));

  std::string format;
  rocksdb::Status s =
      impl->db->Get(rocksdb::ReadOptions(), impl->default_family, kFormatKey, &format);
  std::array<int64_t, kResolutions> frontier;
  if (s.IsNotFound()) {
    // A new database: no keys, so every family's frontier is "nothing stored".
    rocksdb::WriteBatch init;
    JOULE_RETURN_IF_ERROR(
        FromRocks(init.Put(impl->default_family, kFormatKey, kFormatValue), "write format"));
    for (size_t i = 0; i < kResolutions; ++i) {
      frontier[i] = HistoryVersionCache::kNothing;
      JOULE_RETURN_IF_ERROR(
          FromRocks(init.Put(impl->default_family, kFrontierKeys[i], EncodeFrontier(frontier[i])),
                    "write frontier"));
    }
    rocksdb::WriteOptions sync;
    sync.sync = true;
    JOULE_RETURN_IF_ERROR(FromRocks(impl->db->Write(sync, &init), "write format"));
  } else if (!s.ok()) {
    return FromRocks(s, "read format");
  } else if (format != kFormatValue && format != kFormatValue1) {
    return Status::InvalidArgument("history: " + options.path + " has format '" + format +
                                   "', this build reads formats 1 and 2");
  } else {
    if (format == kFormatValue1) {
      rocksdb::WriteOptions sync;
      sync.sync = true;
      JOULE_RETURN_IF_ERROR(FromRocks(
          impl->db->Put(sync, impl->default_family, kFormatKey, kFormatValue), "write format"));
    }
    for (size_t i = 0; i < kResolutions; ++i) {
      std::string value;
      s = impl->db->Get(rocksdb::ReadOptions(), impl->default_family, kFrontierKeys[i], &value);
      if (s.IsNotFound()) {
        // Written by a build that did not keep frontiers: any key may exist.
        frontier[i] = HistoryVersionCache::kUnknown;
      } else if (!s.ok()) {
        return FromRocks(s, "read frontier");
      } else if (!DecodeFrontier(value, &frontier[i])) {
        return Status::Corruption("history: malformed " + std::string(kFrontierKeys[i]));
      }
    }
  }
  for (size_t i = 0; i < kResolutions; ++i) impl->persisted_frontier[i].store(frontier[i]);
  if (options.version_cache_devices > 0) {
    impl->versions =
        std::make_unique<HistoryVersionCache>(options.version_cache_devices, kStripes, frontier);
  }

  impl->put_records = metrics->GetCounter("joule_history_put_records_total",
                                          "Records offered to the history store");
  impl->stale_writes =
      metrics->GetCounter("joule_history_stale_writes_total",
                          "History records ignored because the stored version was higher or equal");
  impl->expired_writes = metrics->GetCounter("joule_history_expired_writes_total",
                                             "History records ignored because already expired");
  impl->corrupt_values = metrics->GetCounter("joule_history_corrupt_values_total",
                                             "Undecodable stored history values overwritten");
  impl->version_reads = metrics->GetCounter(
      "joule_history_version_reads_total",
      "Stored versions read before a history write (keys the version cache could not answer)");
  impl->write_failures = metrics->GetCounter(
      "joule_history_write_failures_total",
      "History writes (and WAL syncs) that failed, e.g. on a full disk; the store then refuses "
      "writes until it resumes");
  impl->resumes = metrics->GetCounter(
      "joule_history_resumes_total",
      "Times the history store became writable again after a failed write (DB::Resume)");
  impl->put_latency =
      metrics->GetHistogram("joule_history_put_latency_seconds", "Latency of a history Put batch",
                            Histogram::LatencyBuckets());
  for (size_t i = 0; i < kResolutions; ++i) {
    const MetricLabels labels = {{"resolution", kFamilyNames[i]}};
    std::shared_ptr<SizeProbe> probe = impl->probe;
    metrics->AddGaugeCallback(
        "joule_history_sst_bytes", "Size of the history SST files", labels,
        [probe, i] { return probe->Read(i, "rocksdb.total-sst-files-size"); });
    metrics->AddGaugeCallback("joule_history_estimated_records",
                              "RocksDB's estimate of the history records stored", labels,
                              [probe, i] { return probe->Read(i, "rocksdb.estimate-num-keys"); });
    metrics->AddGaugeCallback(
        "joule_history_memtable_bytes",
        "Memory of the history store's memtables (written records not yet flushed to SST files)",
        labels, [probe, i] { return probe->Read(i, "rocksdb.cur-size-all-mem-tables"); });
  }
  {
    std::shared_ptr<SizeProbe> probe = impl->probe;
    metrics->AddGaugeCallback("joule_history_block_cache_bytes",
                              "Memory of the history store's block cache (read blocks kept)", {},
                              [probe] { return probe->BlockCacheBytes(); });
  }
  return std::unique_ptr<RocksDbHistoryStore>(new RocksDbHistoryStore(std::move(impl)));
}

Status RocksDbHistoryStore::Put(const std::vector<model::AggregateRecord>& records) {
  if (records.empty()) return Status::Ok();
  const auto started = std::chrono::steady_clock::now();
  Impl& d = *impl_;
  for (const auto& r : records) {
    JOULE_RETURN_IF_ERROR(ValidateDeviceId(r.device_id));
    JOULE_RETURN_IF_ERROR(ValidateResolution(r.resolution));
  }
  JOULE_RETURN_IF_ERROR(d.Recover());
  std::shared_lock db_lock(d.db_mu);
  if (d.db == nullptr) return d.Refused();
  d.put_records->Inc(records.size());

  std::array<int64_t, kResolutions> horizon;
  const int64_t now = d.clock->NowNanos();
  for (size_t i = 0; i < kResolutions; ++i) {
    horizon[i] = d.options.retention.Horizon(static_cast<model::Resolution>(i), now);
  }

  // One candidate per key: within the batch, a later record wins only with a higher version.
  struct Candidate {
    size_t record;
    std::string key;
  };
  std::vector<Candidate> candidates;
  candidates.reserve(records.size());
  std::unordered_map<std::string_view, size_t> by_key;
  by_key.reserve(records.size());
  uint64_t stale = 0, expired = 0;
  for (size_t i = 0; i < records.size(); ++i) {
    const auto& r = records[i];
    if (r.window_start_ns < horizon[Index(r.resolution)]) {
      ++expired;
      continue;
    }
    candidates.push_back({i, codec::EncodeKey(r.resolution, r.device_id, r.window_start_ns)});
  }
  // Keys are stable from here on (no more push_back).
  std::vector<bool> superseded(candidates.size(), false);
  for (size_t c = 0; c < candidates.size(); ++c) {
    auto [it, inserted] = by_key.try_emplace(candidates[c].key, c);
    if (inserted) continue;
    const size_t prev = it->second;
    if (records[candidates[c].record].version > records[candidates[prev].record].version) {
      superseded[prev] = true;
      it->second = c;
    } else {
      superseded[c] = true;
      ++stale;
    }
  }
  std::vector<size_t> live;
  live.reserve(by_key.size());
  for (size_t c = 0; c < candidates.size(); ++c) {
    if (!superseded[c]) live.push_back(c);
  }

  std::vector<size_t> stripe_of(live.size());
  for (size_t j = 0; j < live.size(); ++j) {
    stripe_of[j] = Impl::Stripe(records[candidates[live[j]].record].device_id);
  }
  std::vector<size_t> stripes = stripe_of;
  std::sort(stripes.begin(), stripes.end());
  stripes.erase(std::unique(stripes.begin(), stripes.end()), stripes.end());
  std::vector<std::unique_lock<std::mutex>> locks;
  locks.reserve(stripes.size());
  for (size_t s : stripes) locks.emplace_back(d.stripes[s]);

  Status result;
  std::vector<const model::AggregateRecord*> written;
  if (!live.empty()) {
    // What the version cache answers without a read; the rest is read in one MultiGet.
    enum : uint8_t { kWrite, kStale, kRead };
    std::vector<uint8_t> decision(live.size(), kRead);
    std::vector<size_t> to_read;
    HistoryVersionCache* cache = d.versions.get();
    for (size_t j = 0; j < live.size() && cache != nullptr; ++j) {
      const auto& record = records[candidates[live[j]].record];
      const HistoryVersionCache::Answer a =
          cache->Find(stripe_of[j], record.resolution, record.device_id, record.window_start_ns);
      if (a.known == HistoryVersionCache::Known::kAbsent) {
        decision[j] = kWrite;
      } else if (a.known == HistoryVersionCache::Known::kStored) {
        decision[j] = a.version >= record.version ? kStale : kWrite;
      }
    }
    for (size_t j = 0; j < live.size(); ++j) {
      if (decision[j] == kRead) to_read.push_back(j);
    }
    if (!to_read.empty()) {
      const size_t n = to_read.size();
      std::vector<rocksdb::ColumnFamilyHandle*> families(n);
      std::vector<rocksdb::Slice> keys(n);
      std::vector<rocksdb::PinnableSlice> values(n);
      std::vector<rocksdb::Status> statuses(n);
      for (size_t k = 0; k < n; ++k) {
        const Candidate& c = candidates[live[to_read[k]]];
        families[k] = d.Family(records[c.record].resolution);
        keys[k] = c.key;
      }
      d.db->MultiGet(rocksdb::ReadOptions(), n, families.data(), keys.data(), values.data(),
                     statuses.data());
      d.version_reads->Inc(n);
      for (size_t k = 0; k < n; ++k) {
        const size_t j = to_read[k];
        const auto& record = records[candidates[live[j]].record];
        decision[j] = kWrite;
        if (statuses[k].ok()) {
          auto stored = codec::DecodeVersion(std::string_view(values[k].data(), values[k].size()));
          if (!stored.ok()) {
            d.corrupt_values->Inc();
          } else if (*stored >= record.version) {
            decision[j] = kStale;
            if (cache != nullptr) {
              cache->Learn(stripe_of[j], record.resolution, record.device_id,
                           record.window_start_ns, /*present=*/true, *stored);
            }
          }
        } else if (!statuses[k].IsNotFound()) {
          return FromRocks(statuses[k], "read before write");
        }
      }
    }
    // The values are encoded first, so that the batch is allocated once at its size: grown
    // by appends it reallocated and copied itself (~3 % of the processors' CPU in
    // processor_bench). The buffers are the calling thread's, kept between calls.
    thread_local std::string values;
    thread_local std::vector<size_t> value_ends;
    values.clear();
    value_ends.clear();
    size_t batch_bytes = 256;  // header, frontier keys
    for (size_t j = 0; j < live.size(); ++j) {
      if (decision[j] == kStale) continue;
      codec::AppendValue(records[candidates[live[j]].record], &values);
      value_ends.push_back(values.size());
      batch_bytes += candidates[live[j]].key.size() + 16;  // tag, family, two lengths
    }
    rocksdb::WriteBatch batch(batch_bytes + values.size());
    written.reserve(live.size());
    std::array<int64_t, kResolutions> newest;
    newest.fill(std::numeric_limits<int64_t>::min());
    size_t value_begin = 0, v = 0;
    for (size_t j = 0; j < live.size(); ++j) {
      const Candidate& c = candidates[live[j]];
      const auto& record = records[c.record];
      if (decision[j] == kStale) {
        ++stale;
        continue;
      }
      const rocksdb::Slice value(values.data() + value_begin, value_ends[v] - value_begin);
      value_begin = value_ends[v++];
      batch.Put(d.Family(record.resolution), c.key, value);
      written.push_back(&record);
      int64_t& n = newest[Index(record.resolution)];
      n = std::max(n, record.window_start_ns);
    }
    if (batch.Count() > 0) {
      bool raise = false;
      for (size_t i = 0; i < kResolutions; ++i) {
        raise |= newest[i] > d.persisted_frontier[i].load();
      }
      if (!raise) {
        result = d.Write(&batch);
      } else {
        // The new frontier goes in the same atomic batch as the keys past the old one.
        // Raising batches are serialized so that a lower value never overwrites a higher.
        std::lock_guard frontier_lock(d.frontier_mu);
        std::array<int64_t, kResolutions> next;
        for (size_t i = 0; i < kResolutions; ++i) {
          next[i] = d.persisted_frontier[i].load();
          if (newest[i] <= next[i]) continue;
          next[i] = NextFrontier(newest[i]);
          batch.Put(d.default_family, kFrontierKeys[i], EncodeFrontier(next[i]));
        }
        result = d.Write(&batch);
        if (result.ok()) {
          for (size_t i = 0; i < kResolutions; ++i) d.persisted_frontier[i].store(next[i]);
        }
      }
      if (cache != nullptr) {
        for (size_t j = 0, w = 0; j < live.size(); ++j) {
          if (decision[j] == kStale) continue;
          const auto& record = *written[w++];
          if (result.ok()) {
            cache->Wrote(stripe_of[j], record.resolution, record.device_id, record.window_start_ns,
                         record.version);
          } else {
            cache->MaybeWrote(stripe_of[j], record.resolution, record.device_id,
                              record.window_start_ns);
          }
        }
      }
    }
  }
  locks.clear();
  db_lock.unlock();
  if (result.ok() && d.observer) {
    for (const auto* r : written) d.observer(*r);
  }
  d.stale_writes->Inc(stale);
  d.expired_writes->Inc(expired);
  d.put_latency->Observe(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  return result;
}

namespace {

class StoredEntry final : public HistoryEntry {
 public:
  std::string_view key, value;
  Result<model::AggregateRecord> Decode() const override { return codec::DecodeRecord(key, value); }
  Status DecodeEnergy(std::string_view metric, HistoryEnergyFields* out,
                      model::AggregateRecord*) const override {
    return codec::DecodeEnergy(key, value, metric, out);
  }
};

}  // namespace

Result<std::string> RocksDbHistoryStore::Scan(const HistoryQuery& q, const HistoryVisitor& visit) {
  JOULE_RETURN_IF_ERROR(ValidateHistoryQuery(q));
  JOULE_ASSIGN_OR_RETURN(int64_t start, history_cursor::Start(q));
  start = std::max(start, impl_->Horizon(q.resolution));
  std::string next_cursor;
  if (start >= q.to_ns) return next_cursor;
  const std::string lower = codec::EncodeKey(q.resolution, q.device_id, start);
  const std::string upper = codec::EncodeKey(q.resolution, q.device_id, q.to_ns);
  const rocksdb::Slice upper_slice(upper);
  rocksdb::ReadOptions ro;
  ro.iterate_upper_bound = &upper_slice;
  std::shared_lock db_lock(impl_->db_mu);
  if (impl_->db == nullptr) return Impl::Closed();
  std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(ro, impl_->Family(q.resolution)));
  size_t seen = 0;
  StoredEntry entry;
  for (it->Seek(lower); it->Valid(); it->Next()) {
    entry.key = std::string_view(it->key().data(), it->key().size());
    if (!codec::DecodeKeyWindowStart(entry.key, &entry.window_start_ns)) {
      return Status::Corruption("history key: too short");
    }
    if (seen == q.limit) {
      next_cursor = history_cursor::Encode(q, entry.window_start_ns);
      break;
    }
    entry.value = std::string_view(it->value().data(), it->value().size());
    JOULE_ASSIGN_OR_RETURN(entry.version, codec::DecodeVersion(entry.value));
    JOULE_RETURN_IF_ERROR(visit(entry));
    ++seen;
  }
  JOULE_RETURN_IF_ERROR(FromRocks(it->status(), "range scan"));
  return next_cursor;
}

Result<HistoryPage> RocksDbHistoryStore::Range(const HistoryQuery& q) {
  HistoryPage page;
  page.records.reserve(std::min<size_t>(q.limit, 4096));
  auto collect = [&page](const HistoryEntry& e) -> Status {
    Result<model::AggregateRecord> record = e.Decode();
    if (!record.ok()) return record.status();
    page.records.push_back(std::move(record).value());
    return Status::Ok();
  };
  JOULE_ASSIGN_OR_RETURN(page.next_cursor, Scan(q, collect));
  return page;
}

Result<std::optional<model::AggregateRecord>> RocksDbHistoryStore::Get(std::string_view device_id,
                                                                       model::Resolution r,
                                                                       int64_t window_start_ns) {
  JOULE_RETURN_IF_ERROR(ValidateDeviceId(device_id));
  JOULE_RETURN_IF_ERROR(ValidateResolution(r));
  if (window_start_ns < impl_->Horizon(r)) return std::optional<model::AggregateRecord>();
  const std::string key = codec::EncodeKey(r, device_id, window_start_ns);
  rocksdb::PinnableSlice value;
  std::shared_lock db_lock(impl_->db_mu);
  if (impl_->db == nullptr) return Impl::Closed();
  rocksdb::Status s = impl_->db->Get(rocksdb::ReadOptions(), impl_->Family(r), key, &value);
  if (s.IsNotFound()) return std::optional<model::AggregateRecord>();
  JOULE_RETURN_IF_ERROR(FromRocks(s, "get"));
  JOULE_ASSIGN_OR_RETURN(model::AggregateRecord record,
                         codec::DecodeRecord(key, std::string_view(value.data(), value.size())));
  return std::optional<model::AggregateRecord>(std::move(record));
}

Result<std::vector<model::AggregateRecord>> RocksDbHistoryStore::Latest(std::string_view device_id,
                                                                        model::Resolution r,
                                                                        size_t n) {
  JOULE_RETURN_IF_ERROR(ValidateDeviceId(device_id));
  JOULE_RETURN_IF_ERROR(ValidateResolution(r));
  std::vector<model::AggregateRecord> out;
  if (n == 0) return out;
  const std::string lower = codec::EncodeKey(r, device_id, impl_->Horizon(r));
  const rocksdb::Slice lower_slice(lower);
  rocksdb::ReadOptions ro;
  ro.iterate_lower_bound = &lower_slice;
  std::shared_lock db_lock(impl_->db_mu);
  if (impl_->db == nullptr) return Impl::Closed();
  std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(ro, impl_->Family(r)));
  out.reserve(std::min<size_t>(n, 4096));
  for (it->SeekForPrev(codec::EncodeKey(r, device_id, std::numeric_limits<int64_t>::max()));
       it->Valid() && out.size() < n; it->Prev()) {
    JOULE_ASSIGN_OR_RETURN(
        model::AggregateRecord record,
        codec::DecodeRecord(std::string_view(it->key().data(), it->key().size()),
                            std::string_view(it->value().data(), it->value().size())));
    out.push_back(std::move(record));
  }
  JOULE_RETURN_IF_ERROR(FromRocks(it->status(), "latest scan"));
  return out;
}

void RocksDbHistoryStore::SetWriteObserver(WriteObserver observer) {
  impl_->observer = std::move(observer);
}

int64_t RocksDbHistoryStore::ReadHorizon(model::Resolution r) const {
  return ValidateResolution(r).ok() ? impl_->Horizon(r) : std::numeric_limits<int64_t>::max();
}

Status RocksDbHistoryStore::Flush() {
  Impl& d = *impl_;
  JOULE_RETURN_IF_ERROR(d.Recover());
  std::shared_lock db_lock(d.db_mu);
  std::unique_lock io(d.io_mu);
  if (d.failing.load()) return d.Refused();
  Status st = FromRocks(d.db->FlushWAL(/*sync=*/true), "sync WAL");
  if (!st.ok()) d.Failed(st);
  return st;
}

HistoryWriteState RocksDbHistoryStore::WriteState() const {
  std::lock_guard lock(impl_->state_mu);
  return impl_->state;
}

Status RocksDbHistoryStore::CompactExpired() {
  std::shared_lock db_lock(impl_->db_mu);
  std::shared_lock io(impl_->io_mu);
  if (impl_->failing.load()) return impl_->Refused();
  for (size_t i = 0; i < kResolutions; ++i) {
    if (impl_->options.retention.For(static_cast<model::Resolution>(i)) <= 0) continue;
    JOULE_RETURN_IF_ERROR(
        FromRocks(impl_->db->Flush(rocksdb::FlushOptions(), impl_->families[i]), "flush"));
    rocksdb::CompactRangeOptions cro;
    cro.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
    JOULE_RETURN_IF_ERROR(
        FromRocks(impl_->db->CompactRange(cro, impl_->families[i], nullptr, nullptr), "compact"));
  }
  return Status::Ok();
}

Status RocksDbHistoryStore::CompactAll() {
  std::shared_lock db_lock(impl_->db_mu);
  std::shared_lock io(impl_->io_mu);
  if (impl_->failing.load()) return impl_->Refused();
  for (auto* family : impl_->families) {
    JOULE_RETURN_IF_ERROR(FromRocks(impl_->db->Flush(rocksdb::FlushOptions(), family), "flush"));
    rocksdb::CompactRangeOptions cro;
    cro.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
    JOULE_RETURN_IF_ERROR(
        FromRocks(impl_->db->CompactRange(cro, family, nullptr, nullptr), "compact"));
  }
  return Status::Ok();
}

Result<HistoryDiskUsage> RocksDbHistoryStore::DiskUsage(model::Resolution r) {
  JOULE_RETURN_IF_ERROR(ValidateResolution(r));
  HistoryDiskUsage u;
  std::shared_lock db_lock(impl_->db_mu);
  if (impl_->db == nullptr) return Impl::Closed();
  auto* family = impl_->Family(r);
  impl_->db->GetIntProperty(family, "rocksdb.total-sst-files-size", &u.sst_bytes);
  impl_->db->GetIntProperty(family, "rocksdb.estimate-num-keys", &u.estimated_records);
  impl_->db->GetIntProperty(family, "rocksdb.estimate-live-data-size", &u.live_data_bytes);
  return u;
}

}  // namespace joule::store

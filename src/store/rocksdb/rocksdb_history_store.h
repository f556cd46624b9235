// RocksDbHistoryStore: the production HistoryStore, on RocksDB. One column family per
// resolution; keys, values, retention and the upsert rule are specified in
// docs/formats/history.md.
//
// Thread-safety: all methods may be called concurrently. Put serializes batches that touch
// the same device stripes (read-modify-write); reads never block on writers.
// Lifetime: `options.clock` and `metrics` must outlive the store. Metric gauges registered
// in `metrics` read 0 after the store is destroyed.
// Durability: after Put returns, its records survive a process crash; after Flush, a
// power loss.
// Write errors (a full disk, RELIABILITY.md #6): a write RocksDB refuses puts the store in
// a failing state. Until it has recovered — tried by Put and Flush, at most once per
// `resume_interval_ns` — Put and Flush answer Unavailable without touching the database
// (RocksDB asserts when its WAL file is appended to or synced after a failed append; found
// by black-box and crash tests). Recovering is DB::Resume(), and when that cannot start a
// new WAL file (no memtable held writes as the append failed) also closing and opening the
// database again, once 1 MiB is free (read-only meanwhile if that open fails). RocksDB's own
// recovery is off for such errors (it waits for 64 MiB of free space); its log lines go to
// Joule's log, not to a `LOG` file (an append to that file after a failed one tripped the
// same assertion). Reads go on (they wait for a reopen, a few milliseconds). Nothing written
// before the failure is lost; what a failed Put carried is not stored, and the caller
// writes it again.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/metrics.h"
#include "store/history_store.h"

namespace rocksdb {
class ColumnFamilyHandle;
class DB;
class Env;
}  // namespace rocksdb

namespace joule::store {

struct RocksDbHistoryOptions {
  std::string path;  // the database directory; created if missing
  HistoryRetention retention;
  const Clock* clock = nullptr;  // nullptr = SystemClock::Default()
  // Every SST file of a family with a finite retention is rewritten through the retention
  // filter at least this often (RocksDB periodic compaction). 0 = never.
  uint64_t periodic_compaction_seconds = 24 * 3600;
  size_t block_cache_bytes = 64 << 20;
  // Devices whose stored versions Put remembers (history_version_cache.h), about 0.3 KB
  // each; beyond, arbitrary devices are forgotten and their keys read again. 0 = no cache:
  // every Put reads every key's stored version first.
  size_t version_cache_devices = 100'000;
  // After a failed write (a full disk), the first Put or Flush at least this long after the
  // previous attempt tries to recover (DB::Resume(), or a reopen); the others answer
  // Unavailable at once.
  int64_t resume_interval_ns = kNanosPerSecond;
  // The WAL files kept at most: past it, RocksDB flushes the families whose memtables hold
  // the oldest WAL file so that it can be deleted. Without it (RocksDB's default: 4 × the
  // memtables, ~2 GB here) a family written rarely — the day records, the frontier keys of
  // the default family — kept every WAL since its last flush: up to ~2 GB on disk, all
  // replayed at the next start after a kill -9.
  uint64_t max_total_wal_bytes = 128 << 20;
  // The memtables of all families together at most (a RocksDB WriteBufferManager; past it
  // the largest is flushed): RocksDB's default is 64 MiB per family, two each, which a
  // steady server filled over hours — RSS that crept without a sign in the engine's state
  // (a soak: 300 devices at 1 Hz added 0.24 MiB a minute for ~4 h). 0 = RocksDB's default.
  size_t memtable_bytes = 32 << 20;
  // Tests: the RocksDB environment (fault injection); nullptr = the default.
  rocksdb::Env* env = nullptr;
};

// The store's write path: failing since a write failed (e.g. a full disk) until a resume.
struct HistoryWriteState {
  bool failing = false;
  int64_t since_ns = 0;   // the first failure (options.clock)
  std::string error;      // the last failure
  uint64_t failures = 0;  // writes refused or failed since
};

struct HistoryDiskUsage {
  uint64_t sst_bytes = 0;          // total size of live SST files
  uint64_t estimated_records = 0;  // RocksDB's estimate of live keys
  uint64_t live_data_bytes = 0;    // RocksDB's estimate of live data
};

class RocksDbHistoryStore final : public HistoryStore {
 public:
  // `metrics` may be nullptr (then the store keeps its own registry).
  static Result<std::unique_ptr<RocksDbHistoryStore>> Open(const RocksDbHistoryOptions& options,
                                                           MetricsRegistry* metrics);
  ~RocksDbHistoryStore() override;
  RocksDbHistoryStore(const RocksDbHistoryStore&) = delete;
  RocksDbHistoryStore& operator=(const RocksDbHistoryStore&) = delete;

  Status Put(const std::vector<model::AggregateRecord>& records) override;
  Result<HistoryPage> Range(const HistoryQuery& q) override;
  Result<std::string> Scan(const HistoryQuery& q, const HistoryVisitor& visit) override;
  Result<std::optional<model::AggregateRecord>> Get(std::string_view device_id, model::Resolution r,
                                                    int64_t window_start_ns) override;
  Result<std::vector<model::AggregateRecord>> Latest(std::string_view device_id,
                                                     model::Resolution r, size_t n) override;
  void SetWriteObserver(WriteObserver observer) override;
  int64_t ReadHorizon(model::Resolution r) const override;
  Status Flush() override;

  // Flushes memtables and compacts every family with a finite retention now, dropping
  // expired records (normally done in the background by periodic compaction). Rewrites
  // those families: an admin operation, not for the hot path.
  Status CompactExpired();
  // Flushes memtables and compacts everything (benchmarks: size after compaction).
  Status CompactAll();
  Result<HistoryDiskUsage> DiskUsage(model::Resolution r);
  HistoryWriteState WriteState() const;

 private:
  struct Impl;
  explicit RocksDbHistoryStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace joule::store

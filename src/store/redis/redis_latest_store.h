// RedisLatestStore: LatestStore on Redis 7 (hiredis), with the key layout of CONTRACT §5:
//
//   agg:device:{id}:latest                 hash: window_start → record JSON, the newest N
//   agg:device:{id}:window:{window_start}  record JSON, expires after window_ttl
//   agg:device:{id}:reading                the latest raw reading JSON (reading_json.h)
//   agg:device:{id}:reading:order          event time of that reading, for the compare
//   channel agg:device:{id}:updates        every record and reading as written
//
// window_start is RFC 3339 UTC with milliseconds, exactly as in the record JSON.
//
// Guarantees:
//  - A record never replaces one with a higher or equal version for the same window, and a
//    reading never replaces one with a newer event time. The compare, the writes, the trim
//    of the hash to N fields and the PUBLISH run in one Lua script (EVALSHA, EVAL on
//    NOSCRIPT), so concurrent writers from any number of processes are safe and a stale
//    write publishes nothing. The stored version is read from the stored JSON (Lua cjson):
//    the hash field, else the window key, which outlives the field when the window has been
//    trimmed from the hash.
//  - Only base-resolution records are kept; others are ignored (as in MemoryLatestStore).
//  - Every Redis failure (refused, reset, timeout, server error) comes back as a Status:
//    Unavailable for connection problems and for server states that pass (LOADING, OOM,
//    BUSY, READONLY…), Internal for other server errors, Corruption for stored values that
//    do not decode. Connecting waits at most connect_timeout, and each socket read or write
//    at most command_timeout: a dead or silent server never hangs a caller. A broken connection is
//    dropped and reopened by the next call; a call that finds its pooled connection broken retries
//    once on a fresh one (writes are idempotent).
//  - Get reads times at millisecond precision (the wire precision).
//
// Thread-safe: calls are spread over a fixed pool of connections, each used by one thread
// at a time. Connections are opened lazily, so Open succeeds while Redis is down.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "store/latest_store.h"

namespace joule {
class MetricsRegistry;
class Counter;
class Histogram;
}  // namespace joule

namespace joule::store {

struct Script;
struct ScriptCall;

struct RedisLatestStoreOptions {
  std::string url = "redis://127.0.0.1:6379/0";  // redis://[[user]:password@]host[:port][/db]
  size_t windows_per_device = 60;                // N: hash fields kept per device
  int64_t window_ttl_ns = 48 * kNanosPerHour;    // of agg:device:{id}:window:{start}
  int64_t connect_timeout_ns = 500 * kNanosPerMilli;
  int64_t command_timeout_ns = 500 * kNanosPerMilli;  // per read or write on the socket
  size_t connections = 4;                             // pool size
  std::string client_name = "joule";                  // CLIENT SETNAME, for CLIENT LIST
  // The data dir's id (app/data_dir_id.h), kept as the value of `agg:instance`. Empty: the
  // marker is neither read nor set (a client that does not resync, e.g. `joule replay`).
  std::string instance_id = "1";
  // Optional (must outlive the store): joule_redis_{write,read}_seconds (histograms of
  // successful calls), joule_redis_errors_total{op}, joule_redis_connects_total and
  // joule_redis_reconnects_total (a pooled connection opened again after it broke).
  MetricsRegistry* metrics = nullptr;
};

struct RedisEndpoint {
  std::string host;
  int port = 6379;
  int db = 0;
  std::string username;  // empty: AUTH with the password only
  std::string password;  // empty: no AUTH
};

// Parses "redis://[[user]:password@]host[:port][/db]" (or "redis://password@host…"); host
// may be "[v6 address]". An error quotes the URL with its password as "<set>".
Result<RedisEndpoint> ParseRedisUrl(std::string_view url);

// The CONTRACT §5 key names.
std::string RedisLatestKey(std::string_view device_id);
std::string RedisWindowKey(std::string_view device_id, int64_t window_start_ns);
std::string RedisReadingKey(std::string_view device_id);
std::string RedisReadingOrderKey(std::string_view device_id);
std::string RedisUpdatesChannel(std::string_view device_id);

class RedisLatestStore final : public LatestStore {
 public:
  // Validates the options; does not connect (see Ping).
  static Result<std::unique_ptr<RedisLatestStore>> Open(RedisLatestStoreOptions options);
  ~RedisLatestStore() override;

  std::string_view backend() const override { return "redis"; }
  Status PutRecord(const model::AggregateRecord& record) override;
  Status PutReading(const model::Event& event) override;
  Result<bool> Get(std::string_view device_id, size_t windows, LatestSnapshot* out) override;

  // PutRecord for many records in one pipelined round trip per chunk: the same result as
  // calling PutRecord for each in order. On error some records may have been written.
  Status PutRecords(std::span<const model::AggregateRecord> records) override;
  bool PrefersBatches() const override { return true; }
  // Deletes the device's hash, the window keys of its fields and its reading, then writes
  // `records` whatever their versions and `reading`: one pipeline.
  Status ReplaceDevice(std::string_view device_id, std::span<const model::AggregateRecord> records,
                       const model::Event* reading) override;
  // PutReading for each event in order, pipelined the same way (a processor's batch: one
  // round trip per chunk instead of one per event). Every reading written is published.
  Status PutReadings(std::span<const model::Event> events) override;

  // Round trip to Redis: Ok when it answers. For readiness checks.
  Status Ping() override;
  // Incremented whenever a new connection finds a server run_id (INFO server) other than
  // the one seen before (the server restarted and may have lost its data), or a Redis whose
  // `agg:instance` is missing (empty or new: also right after this process started; the
  // connection sets it to options().instance_id), or — on the first connection to a server
  // run — holds another id (another data dir wrote to it last; it is set to ours).
  uint64_t InstanceGeneration() const override {
    return instance_generation_.load(std::memory_order_acquire);
  }

  const RedisLatestStoreOptions& options() const { return options_; }

 private:
  struct Slot;

  RedisLatestStore(RedisLatestStoreOptions options, RedisEndpoint endpoint);
  // Locks a pooled connection, preferring an idle one.
  Slot& Acquire(std::unique_lock<std::mutex>* lock);
  // Runs `body` on a connected pool slot; retries once on a fresh connection when a pooled
  // one turns out to be broken.
  template <typename Body>
  Status WithConnection(Body&& body);
  // Connects `slot` and counts it.
  Status Connect(Slot& slot);
  // A connection found agg:instance missing or another data dir's: from now on, the first
  // write of each device (in this process) first forgets what Redis holds for it — the
  // processors' resync (ReplaceDevice) covers the devices they know, this the others (a
  // device new to this data dir, whose stale keys would outrank its records by version).
  void StartClaiming();
  // Runs the script calls pipelined (chunks of kPipelineChunk), each unclaimed device's
  // calls preceded by the forget script while claiming.
  Status RunCalls(Slot& slot, std::span<const ScriptCall> calls);

  struct Instruments {
    Histogram* write_seconds = nullptr;
    Histogram* read_seconds = nullptr;
    Counter* write_errors = nullptr;
    Counter* read_errors = nullptr;
    Counter* ping_errors = nullptr;
    Counter* connects = nullptr;
    Counter* reconnects = nullptr;
    Counter* empty_instances = nullptr;
    Counter* foreign_instances = nullptr;
  };

  RedisLatestStoreOptions options_;
  RedisEndpoint endpoint_;
  Instruments instruments_;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::atomic<size_t> next_slot_{0};
  std::mutex run_id_mu_;
  std::string run_id_;  // of the server last connected to
  std::atomic<uint64_t> instance_generation_{0};
  std::atomic<bool> claiming_{false};
  std::mutex claims_mu_;
  std::unordered_set<std::string> claimed_;  // devices written since StartClaiming
  // Writes Redis refused (not Unavailable: e.g. WRONGTYPE on a key set by hand) are logged
  // naming the device, the key and Redis' error, at most once per 10 s.
  void ReportWriteError(const Status& status);
  std::mutex write_error_log_mu_;
  int64_t write_error_logged_ns_ = 0;
  uint64_t write_errors_suppressed_ = 0;
};

}  // namespace joule::store

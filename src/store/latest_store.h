// LatestStore: the fast latest-value store the realtime API reads — the last N base
// windows of each device and its latest raw reading. Backends: memory (default), Redis.
// Thread-safe: processors write, API threads read.
// Writes are idempotent: a record never replaces one with a higher version for the same
// (device, resolution, window_start).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "model/aggregate_record.h"
#include "model/event.h"

namespace joule::store {

struct LatestReading {
  int64_t timestamp_ns = 0;
  int64_t received_at_ns = 0;
  std::vector<model::MetricSample> metrics;
  std::string meta_json;
};

struct LatestSnapshot {
  bool has_reading = false;
  LatestReading reading;
  std::vector<model::AggregateRecord> records;  // base resolution, newest window first
};

class LatestStore {
 public:
  virtual ~LatestStore() = default;
  virtual std::string_view backend() const = 0;  // "memory" or "redis"
  // Base-resolution records are kept (the last `windows` per device); others are ignored.
  virtual Status PutRecord(const model::AggregateRecord& record) = 0;
  // PutRecord for each record in order (backends may batch: Redis pipelines them). On an
  // error some of the records may have been written.
  virtual Status PutRecords(std::span<const model::AggregateRecord> records) {
    for (const model::AggregateRecord& r : records) JOULE_RETURN_IF_ERROR(PutRecord(r));
    return Status::Ok();
  }
  // Whether PutRecords is much cheaper than PutRecord per record (Redis: one round trip
  // per 256 records instead of per record). The processors then collect a batch's records
  // and write them in one call; otherwise (memory) each record is written as it is emitted,
  // which saves copying it.
  virtual bool PrefersBatches() const { return false; }
  // Keeps the reading with the newest event time.
  virtual Status PutReading(const model::Event& event) = 0;
  // PutReading for each event in order (backends may batch: the memory store takes each
  // shard's lock once and prefetches its lookups). On an error some may have been written.
  virtual Status PutReadings(std::span<const model::Event> events) {
    for (const model::Event& e : events) JOULE_RETURN_IF_ERROR(PutReading(e));
    return Status::Ok();
  }
  // Makes the store hold `records` (base resolution) and `reading` (when not null) for the
  // device instead of whatever it held, also records of higher versions: the resync after
  // the store turned out to be another instance (InstanceGeneration), whose records for the
  // device may be another data dir's. REQUIRES: no other writer of the device meanwhile.
  // Stores that cannot hold another instance's records (memory) just write them.
  virtual Status ReplaceDevice(std::string_view device_id,
                               std::span<const model::AggregateRecord> records,
                               const model::Event* reading) {
    (void)device_id;
    JOULE_RETURN_IF_ERROR(PutRecords(records));
    return reading != nullptr ? PutReading(*reading) : Status::Ok();
  }
  // Returns false when the store has nothing for the device.
  virtual Result<bool> Get(std::string_view device_id, size_t windows, LatestSnapshot* out) = 0;
  // Whether the store answers (a round trip for remote stores); for health checks.
  virtual Status Ping() { return Status::Ok(); }
  // Changes when the store turns out to be another instance than before (Redis restarted
  // or replaced: what it held may be gone). Constant for stores that cannot change.
  virtual uint64_t InstanceGeneration() const { return 0; }
};

}  // namespace joule::store

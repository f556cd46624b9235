// MemoryLatestStore: LatestStore in process memory, sharded by device for low lock
// contention. Contents are lost on restart (the realtime API then falls back to
// history, and the processors rebuild it as they replay).
//
// Each shard is a flat open-addressing table (common/flat_string_map.h) on its own cache
// lines; the device id's hash picks the shard (high bits) and the slot (low bits).
// PutReadings and PutRecords, the processors' per-batch calls, group the batch by shard,
// take each shard's lock once and prefetch the lookups a few items ahead.
#pragma once

#include <array>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "common/flat_string_map.h"
#include "store/latest_store.h"

namespace joule::store {

class MemoryLatestStore final : public LatestStore {
 public:
  explicit MemoryLatestStore(size_t windows_per_device = 60);
  std::string_view backend() const override { return "memory"; }
  Status PutRecord(const model::AggregateRecord& record) override;
  Status PutRecords(std::span<const model::AggregateRecord> records) override;
  Status PutReading(const model::Event& event) override;
  Status PutReadings(std::span<const model::Event> events) override;
  Result<bool> Get(std::string_view device_id, size_t windows, LatestSnapshot* out) override;
  size_t DeviceCount() const;

 private:
  static constexpr size_t kShardBits = 5;
  static constexpr size_t kShards = size_t{1} << kShardBits;
  struct Device {
    std::map<int64_t, model::AggregateRecord> windows;  // by window_start
    bool has_reading = false;
    LatestReading reading;
  };
  // Own cache lines: the processors lock different shards at the same time.
  struct alignas(64) Shard {
    mutable std::mutex mu;
    FlatStringMap<Device> devices;
  };
  static size_t ShardOf(uint64_t hash) { return hash >> (64 - kShardBits); }
  static void ApplyReading(Device& d, const model::Event& event);
  void ApplyRecord(Device& d, const model::AggregateRecord& record) const;
  // Groups `items` (those `keep` accepts) by shard, stably, locks each shard once and calls
  // apply(device, item) with the device lookups prefetched a few items ahead.
  template <typename T, typename Keep, typename Apply>
  void ForEachByShard(std::span<const T> items, Keep keep, Apply apply);

  size_t windows_per_device_;
  std::array<Shard, kShards> shards_;
};

}  // namespace joule::store

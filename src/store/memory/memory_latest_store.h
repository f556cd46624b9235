// MemoryLatestStore: LatestStore in process memory, sharded by device for low lock
// contention. Contents are lost on restart (the realtime API then falls back to
// history, and the processors rebuild it as they replay).
#pragma once

#include <array>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "store/latest_store.h"

namespace joule::store {

class MemoryLatestStore final : public LatestStore {
 public:
  explicit MemoryLatestStore(size_t windows_per_device = 60);
  std::string_view backend() const override { return "memory"; }
  Status PutRecord(const model::AggregateRecord& record) override;
  Status PutReading(const model::Event& event) override;
  Result<bool> Get(std::string_view device_id, size_t windows, LatestSnapshot* out) override;
  size_t DeviceCount() const;

 private:
  struct Device {
    std::map<int64_t, model::AggregateRecord> windows;  // by window_start
    bool has_reading = false;
    LatestReading reading;
  };
  struct Shard {
    mutable std::mutex mu;
    std::unordered_map<std::string, Device> devices;
  };
  Shard& ShardFor(std::string_view device_id);

  size_t windows_per_device_;
  std::array<Shard, 32> shards_;
};

}  // namespace joule::store

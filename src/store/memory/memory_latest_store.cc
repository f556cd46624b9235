#include "store/memory/memory_latest_store.h"

#include <functional>

namespace joule::store {

MemoryLatestStore::MemoryLatestStore(size_t windows_per_device)
    : windows_per_device_(windows_per_device) {}

MemoryLatestStore::Shard& MemoryLatestStore::ShardFor(std::string_view device_id) {
  return shards_[std::hash<std::string_view>{}(device_id) % shards_.size()];
}

Status MemoryLatestStore::PutRecord(const model::AggregateRecord& record) {
  if (record.resolution != model::Resolution::kBase) return Status::Ok();
  Shard& shard = ShardFor(record.device_id);
  std::lock_guard lock(shard.mu);
  Device& d = shard.devices[record.device_id];
  auto [it, inserted] = d.windows.try_emplace(record.window_start_ns, record);
  if (!inserted && it->second.version < record.version) it->second = record;
  while (d.windows.size() > windows_per_device_) d.windows.erase(d.windows.begin());
  return Status::Ok();
}

Status MemoryLatestStore::PutReading(const model::Event& event) {
  Shard& shard = ShardFor(event.device_id);
  std::lock_guard lock(shard.mu);
  Device& d = shard.devices[event.device_id];
  if (d.has_reading && d.reading.timestamp_ns > event.timestamp_ns) return Status::Ok();
  d.has_reading = true;
  d.reading.timestamp_ns = event.timestamp_ns;
  d.reading.received_at_ns = event.received_at_ns;
  d.reading.metrics = event.metrics;
  d.reading.meta_json = event.meta_json;
  return Status::Ok();
}

Result<bool> MemoryLatestStore::Get(std::string_view device_id, size_t windows,
                                    LatestSnapshot* out) {
  Shard& shard = ShardFor(device_id);
  std::lock_guard lock(shard.mu);
  auto it = shard.devices.find(std::string(device_id));
  if (it == shard.devices.end()) return false;
  const Device& d = it->second;
  out->has_reading = d.has_reading;
  out->reading = d.reading;
  out->records.clear();
  for (auto w = d.windows.rbegin(); w != d.windows.rend() && out->records.size() < windows; ++w) {
    out->records.push_back(w->second);
  }
  return true;
}

size_t MemoryLatestStore::DeviceCount() const {
  size_t n = 0;
  for (const auto& s : shards_) {
    std::lock_guard lock(s.mu);
    n += s.devices.size();
  }
  return n;
}

}  // namespace joule::store

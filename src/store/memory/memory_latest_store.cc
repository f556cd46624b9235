#include "store/memory/memory_latest_store.h"

#include <vector>

namespace joule::store {

MemoryLatestStore::MemoryLatestStore(size_t windows_per_device)
    : windows_per_device_(windows_per_device) {}

Status MemoryLatestStore::PutRecord(const model::AggregateRecord& record) {
  if (record.resolution != model::Resolution::kBase) return Status::Ok();
  const uint64_t h = FlatStringMap<Device>::Hash(record.device_id);
  Shard& shard = shards_[ShardOf(h)];
  std::lock_guard lock(shard.mu);
  Device& d = *shard.devices.TryEmplace(record.device_id, h).first;
  auto [it, inserted] = d.windows.try_emplace(record.window_start_ns, record);
  if (!inserted && it->second.version < record.version) it->second = record;
  while (d.windows.size() > windows_per_device_) d.windows.erase(d.windows.begin());
  return Status::Ok();
}

void MemoryLatestStore::ApplyReading(Device& d, const model::Event& event) {
  if (d.has_reading && d.reading.timestamp_ns > event.timestamp_ns) return;
  d.has_reading = true;
  d.reading.timestamp_ns = event.timestamp_ns;
  d.reading.received_at_ns = event.received_at_ns;
  d.reading.metrics = event.metrics;
  d.reading.meta_json = event.meta_json;
}

Status MemoryLatestStore::PutReading(const model::Event& event) {
  const uint64_t h = FlatStringMap<Device>::Hash(event.device_id);
  Shard& shard = shards_[ShardOf(h)];
  std::lock_guard lock(shard.mu);
  ApplyReading(*shard.devices.TryEmplace(event.device_id, h).first, event);
  return Status::Ok();
}

Status MemoryLatestStore::PutReadings(std::span<const model::Event> events) {
  const size_t n = events.size();
  if (n == 0) return Status::Ok();
  // Stable counting sort by shard: a device's events stay in order.
  std::vector<uint64_t> hashes(n);
  std::array<uint32_t, kShards + 1> start{};
  for (size_t i = 0; i < n; ++i) {
    hashes[i] = FlatStringMap<Device>::Hash(events[i].device_id);
    ++start[ShardOf(hashes[i]) + 1];
  }
  for (size_t s = 0; s < kShards; ++s) start[s + 1] += start[s];
  std::vector<uint32_t> order(n);
  std::array<uint32_t, kShards> fill{};
  for (size_t i = 0; i < n; ++i) {
    const size_t s = ShardOf(hashes[i]);
    order[start[s] + fill[s]++] = static_cast<uint32_t>(i);
  }
  constexpr size_t kSlotAhead = 8, kEntryAhead = 4;
  for (size_t s = 0; s < kShards; ++s) {
    const size_t begin = start[s], end = start[s + 1];
    if (begin == end) continue;
    Shard& shard = shards_[s];
    std::lock_guard lock(shard.mu);
    for (size_t k = begin; k < end; ++k) {
      if (k + kSlotAhead < end) shard.devices.PrefetchSlot(hashes[order[k + kSlotAhead]]);
      if (k + kEntryAhead < end) shard.devices.PrefetchEntry(hashes[order[k + kEntryAhead]]);
      const model::Event& e = events[order[k]];
      ApplyReading(*shard.devices.TryEmplace(e.device_id, hashes[order[k]]).first, e);
    }
  }
  return Status::Ok();
}

Result<bool> MemoryLatestStore::Get(std::string_view device_id, size_t windows,
                                    LatestSnapshot* out) {
  const uint64_t h = FlatStringMap<Device>::Hash(device_id);
  Shard& shard = shards_[ShardOf(h)];
  std::lock_guard lock(shard.mu);
  const Device* d = shard.devices.Find(device_id, h);
  if (d == nullptr) return false;
  out->has_reading = d->has_reading;
  out->reading = d->reading;
  out->records.clear();
  for (auto w = d->windows.rbegin(); w != d->windows.rend() && out->records.size() < windows; ++w) {
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

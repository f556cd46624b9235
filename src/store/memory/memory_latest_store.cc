#include "store/memory/memory_latest_store.h"

#include <iterator>
#include <span>
#include <vector>

namespace joule::store {

MemoryLatestStore::MemoryLatestStore(size_t windows_per_device)
    : windows_per_device_(windows_per_device) {}

void MemoryLatestStore::ApplyRecord(Device& d, const model::AggregateRecord& record) const {
  const int64_t ws = record.window_start_ns;
  // Most writes are early firings of the newest window: look there first.
  auto it = !d.windows.empty() && d.windows.rbegin()->first == ws ? std::prev(d.windows.end())
                                                                  : d.windows.find(ws);
  if (it != d.windows.end()) {
    if (it->second.version < record.version) it->second = record;
    return;
  }
  if (windows_per_device_ == 0) return;
  if (d.windows.size() < windows_per_device_) {
    d.windows.emplace(ws, record);
    return;
  }
  // Full: the new window replaces the oldest one, unless it is older still (it would be
  // trimmed at once). The oldest window's node and buffers are reused.
  if (ws < d.windows.begin()->first) return;
  auto node = d.windows.extract(d.windows.begin());
  node.key() = ws;
  node.mapped() = record;
  d.windows.insert(std::move(node));
}

Status MemoryLatestStore::PutRecord(const model::AggregateRecord& record) {
  if (record.resolution != model::Resolution::kBase) return Status::Ok();
  const uint64_t h = FlatStringMap<Device>::Hash(record.device_id);
  Shard& shard = shards_[ShardOf(h)];
  std::lock_guard lock(shard.mu);
  ApplyRecord(*shard.devices.TryEmplace(record.device_id, h).first, record);
  return Status::Ok();
}

Status MemoryLatestStore::PutRecords(std::span<const model::AggregateRecord> records) {
  ForEachByShard(
      records,
      [](const model::AggregateRecord& r) { return r.resolution == model::Resolution::kBase; },
      [this](Device& d, const model::AggregateRecord& r) { ApplyRecord(d, r); });
  return Status::Ok();
}

void MemoryLatestStore::ApplyReading(Device& d, const model::Event& event) {
  if (d.has_reading && d.reading.timestamp_ns >= event.timestamp_ns) return;
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

template <typename T, typename Keep, typename Apply>
void MemoryLatestStore::ForEachByShard(std::span<const T> items, Keep keep, Apply apply) {
  const size_t n = items.size();
  if (n == 0) return;
  // Stable counting sort by shard: a device's items stay in order.
  std::vector<uint64_t> hashes(n);
  std::vector<uint32_t> kept;
  kept.reserve(n);
  std::array<uint32_t, kShards + 1> start{};
  for (size_t i = 0; i < n; ++i) {
    if (!keep(items[i])) continue;
    hashes[kept.size()] = FlatStringMap<Device>::Hash(items[i].device_id);
    ++start[ShardOf(hashes[kept.size()]) + 1];
    kept.push_back(static_cast<uint32_t>(i));
  }
  for (size_t s = 0; s < kShards; ++s) start[s + 1] += start[s];
  std::vector<uint32_t> order(kept.size());  // positions in `kept`, grouped by shard
  std::array<uint32_t, kShards> fill{};
  for (size_t k = 0; k < kept.size(); ++k) {
    const size_t s = ShardOf(hashes[k]);
    order[start[s] + fill[s]++] = static_cast<uint32_t>(k);
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
      const T& item = items[kept[order[k]]];
      apply(*shard.devices.TryEmplace(item.device_id, hashes[order[k]]).first, item);
    }
  }
}

Status MemoryLatestStore::PutReadings(std::span<const model::Event> events) {
  ForEachByShard(
      events, [](const model::Event&) { return true; },
      [](Device& d, const model::Event& e) { ApplyReading(d, e); });
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

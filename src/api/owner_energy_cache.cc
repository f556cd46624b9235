#include "api/owner_energy_cache.h"

namespace joule::api {

bool OwnerEnergyCache::Take(RecordJsonCache* writes, const std::vector<std::string>& device_ids,
                            model::Resolution r, Snapshot* out) {
  out->series.clear();
  if (writes == nullptr || !writes->attached()) return false;
  out->series.reserve(device_ids.size());
  for (const std::string& id : device_ids) {
    std::shared_ptr<RecordJsonCache::Series> series = writes->Open(id, r);
    if (series == nullptr) return false;  // disabled
    const uint64_t count = writes->WriteCount(*series);
    out->series.emplace_back(std::move(series), count);
  }
  return true;
}

std::shared_ptr<const std::string> OwnerEnergyCache::Find(const std::string& key,
                                                          const Snapshot& now, int64_t horizon_ns) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end() || !(it->second.snapshot == now) ||
      it->second.first_bucket_ns < horizon_ns) {
    ++misses_;
    return nullptr;
  }
  ++hits_;
  return it->second.body;
}

void OwnerEnergyCache::Keep(std::string key, Snapshot before, int64_t first_bucket_ns,
                            std::shared_ptr<const std::string> body) {
  const size_t cost = key.size() + body->size() + 128 + 32 * before.series.size();
  if (cost > max_bytes_ / 4) return;
  std::lock_guard lock(mu_);
  if (auto old = entries_.find(key); old != entries_.end()) {
    bytes_ -= old->second.cost;
    entries_.erase(old);
  }
  if (bytes_ + cost > max_bytes_) {  // full: start over
    entries_.clear();
    bytes_ = 0;
  }
  entries_.emplace(std::move(key),
                   Entry{std::move(before), first_bucket_ns, std::move(body), cost});
  bytes_ += cost;
}

size_t OwnerEnergyCache::hits() const {
  std::lock_guard lock(mu_);
  return hits_;
}

size_t OwnerEnergyCache::misses() const {
  std::lock_guard lock(mu_);
  return misses_;
}

size_t OwnerEnergyCache::bytes() const {
  std::lock_guard lock(mu_);
  return bytes_;
}

}  // namespace joule::api

#include "store/rocksdb/history_version_cache.h"

#include <algorithm>

namespace joule::store {

HistoryVersionCache::HistoryVersionCache(size_t max_devices, size_t stripes,
                                         const std::array<int64_t, kResolutions>& floor)
    : per_stripe_(std::max<size_t>(1, max_devices / std::max<size_t>(1, stripes))),
      stripes_(std::max<size_t>(1, stripes)) {
  for (size_t r = 0; r < kResolutions; ++r) floor_[r].store(floor[r]);
}

HistoryVersionCache::Answer HistoryVersionCache::Find(size_t stripe, model::Resolution r,
                                                      std::string_view device_id,
                                                      int64_t window_start_ns) const {
  const Map& map = stripes_[stripe].map;
  const size_t ri = static_cast<size_t>(r);
  auto it = map.find(device_id);
  if (it == map.end()) {
    return {window_start_ns > floor(r) ? Known::kAbsent : Known::kUnknown, 0};
  }
  const Family& f = it->second.families[ri];
  for (size_t i = 0; i < f.used; ++i) {
    if (f.window_start[i] != window_start_ns) continue;
    if ((f.absent_mask >> i) & 1) return {Known::kAbsent, 0};
    return {Known::kStored, f.version[i]};
  }
  return {window_start_ns > f.frontier ? Known::kAbsent : Known::kUnknown, 0};
}

void HistoryVersionCache::Learn(size_t stripe, model::Resolution r, std::string_view device_id,
                                int64_t window_start_ns, bool present, uint64_t version) {
  Family& f = Entry(stripe, device_id).families[static_cast<size_t>(r)];
  Remember(f, window_start_ns, present, version);
  if (present) f.frontier = std::max(f.frontier, window_start_ns);
}

void HistoryVersionCache::Wrote(size_t stripe, model::Resolution r, std::string_view device_id,
                                int64_t window_start_ns, uint64_t version) {
  Family& f = Entry(stripe, device_id).families[static_cast<size_t>(r)];
  Remember(f, window_start_ns, true, version);
  f.frontier = std::max(f.frontier, window_start_ns);
}

void HistoryVersionCache::MaybeWrote(size_t stripe, model::Resolution r, std::string_view device_id,
                                     int64_t window_start_ns) {
  Family& f = Entry(stripe, device_id).families[static_cast<size_t>(r)];
  f.frontier = std::max(f.frontier, window_start_ns);
  for (size_t i = 0; i < f.used; ++i) {
    if (f.window_start[i] != window_start_ns) continue;
    // Drop slot i: the last slot moves into its place.
    const size_t last = f.used - 1u;
    f.window_start[i] = f.window_start[last];
    f.version[i] = f.version[last];
    const uint8_t last_bit = (f.absent_mask >> last) & 1;
    f.absent_mask = static_cast<uint8_t>((f.absent_mask & ~(1u << i)) | (last_bit << i));
    f.absent_mask = static_cast<uint8_t>(f.absent_mask & ~(1u << last));
    --f.used;
    return;
  }
}

HistoryVersionCache::Device& HistoryVersionCache::Entry(size_t stripe, std::string_view device_id) {
  Stripe& s = stripes_[stripe];
  auto it = s.map.find(device_id);
  if (it != s.map.end()) return it->second;
  // The floor as it is before an eviction for this device's room: what the evicted device
  // knew says nothing about this one (whose own earlier eviction is already in the floor).
  Device d;
  for (size_t r = 0; r < kResolutions; ++r) {
    d.families[r].frontier = floor_[r].load(std::memory_order_acquire);
  }
  if (s.map.size() >= per_stripe_) Evict(s);
  devices_.fetch_add(1, std::memory_order_relaxed);
  return s.map.emplace(std::string(device_id), d).first->second;
}

void HistoryVersionCache::Remember(Family& f, int64_t window_start_ns, bool present,
                                   uint64_t version) {
  size_t slot = f.used;
  for (size_t i = 0; i < f.used; ++i) {
    if (f.window_start[i] == window_start_ns) {
      slot = i;
      break;
    }
  }
  if (slot == f.used) {
    if (f.used < kRecent) {
      ++f.used;
    } else {
      // Full: the oldest window is the least likely to be written again.
      slot = static_cast<size_t>(std::min_element(f.window_start.begin(), f.window_start.end()) -
                                 f.window_start.begin());
    }
  }
  f.window_start[slot] = window_start_ns;
  f.version[slot] = version;
  if (present) {
    f.absent_mask = static_cast<uint8_t>(f.absent_mask & ~(1u << slot));
  } else {
    f.absent_mask = static_cast<uint8_t>(f.absent_mask | (1u << slot));
  }
}

void HistoryVersionCache::RaiseFloor(size_t r, int64_t value) {
  int64_t cur = floor_[r].load(std::memory_order_acquire);
  while (cur < value && !floor_[r].compare_exchange_weak(cur, value, std::memory_order_acq_rel)) {
  }
}

void HistoryVersionCache::Evict(Stripe& s) {
  if (s.map.empty()) return;
  // xorshift64: an arbitrary bucket, then the first non-empty one from there.
  s.rng ^= s.rng << 13;
  s.rng ^= s.rng >> 7;
  s.rng ^= s.rng << 17;
  const size_t buckets = s.map.bucket_count();
  size_t b = s.rng % buckets;
  while (s.map.bucket_size(b) == 0) b = (b + 1) % buckets;
  auto victim = s.map.find(s.map.begin(b)->first);
  // What the device knew stays true of it: no device may assume less than that from now on.
  for (size_t r = 0; r < kResolutions; ++r) RaiseFloor(r, victim->second.families[r].frontier);
  s.map.erase(victim);
  devices_.fetch_sub(1, std::memory_order_relaxed);
  evictions_.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace joule::store

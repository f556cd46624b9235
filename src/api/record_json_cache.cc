#include "api/record_json_cache.h"

namespace joule::api {

namespace {
// Per-entry cost besides the JSON bytes: the hash node, the string header, the map's share
// of buckets. An estimate; it keeps the bound honest for small records.
constexpr size_t kEntryOverhead = 96;
}  // namespace

class RecordJsonCache::Series {
 public:
  struct Entry {
    uint64_t version = 0;
    std::string json;
  };
  std::mutex mu;  // guards everything below
  std::unordered_map<int64_t, Entry> entries;
  size_t bytes = 0;
  bool evicted = false;
  // Guarded by the cache's mu_.
  std::string key;
  std::list<Series*>::iterator lru_position;
};

RecordJsonCache::RecordJsonCache(size_t max_bytes, MetricsRegistry* metrics)
    : max_bytes_(max_bytes) {
  if (metrics != nullptr) {
    hits_ = metrics->GetCounter("joule_history_json_cache_hits_total",
                                "History records answered from their cached JSON");
    misses_ = metrics->GetCounter("joule_history_json_cache_misses_total",
                                  "History records decoded and encoded to JSON on a read");
    evictions_ = metrics->GetCounter("joule_history_json_cache_evictions_total",
                                     "Device series dropped from the history JSON cache");
    bytes_gauge_ = metrics->GetGauge("joule_history_json_cache_bytes",
                                     "Bytes held by the history JSON cache (estimate)");
  }
}

RecordJsonCache::~RecordJsonCache() = default;

std::shared_ptr<RecordJsonCache::Series> RecordJsonCache::Open(std::string_view device_id,
                                                               model::Resolution resolution) {
  if (max_bytes_ == 0) return nullptr;
  std::string key;
  key.reserve(device_id.size() + 1);
  key.push_back(static_cast<char>(resolution));
  key.append(device_id);
  std::lock_guard lock(mu_);
  auto [it, inserted] = series_.try_emplace(std::move(key));
  if (inserted) {
    it->second = std::make_shared<Series>();
    it->second->key = it->first;
    lru_.push_front(it->second.get());
    it->second->lru_position = lru_.begin();
  } else {
    lru_.splice(lru_.begin(), lru_, it->second->lru_position);
  }
  return it->second;
}

bool RecordJsonCache::Append(Series& series, int64_t window_start_ns, uint64_t version,
                             std::string* out) {
  {
    std::lock_guard lock(series.mu);
    auto it = series.entries.find(window_start_ns);
    if (it != series.entries.end() && it->second.version == version) {
      out->append(it->second.json);
      if (hits_) hits_->Inc();
      return true;
    }
  }
  if (misses_) misses_->Inc();
  return false;
}

void RecordJsonCache::Insert(Series& series, int64_t window_start_ns, uint64_t version,
                             std::string_view json) {
  const size_t cost = json.size() + kEntryOverhead;
  if (cost > max_bytes_) return;
  {
    std::lock_guard lock(series.mu);
    if (series.evicted) return;  // dropped while this request held it
    Series::Entry& e = series.entries[window_start_ns];
    if (!e.json.empty()) {
      if (e.version > version) return;  // a newer version got here first
      series.bytes -= e.json.size() + kEntryOverhead;
      bytes_.fetch_sub(e.json.size() + kEntryOverhead, std::memory_order_relaxed);
    }
    e.version = version;
    e.json.assign(json);
    series.bytes += cost;
    bytes_.fetch_add(cost, std::memory_order_relaxed);
  }
  const size_t now = bytes_.load(std::memory_order_relaxed);
  if (bytes_gauge_) bytes_gauge_->Set(static_cast<double>(now));
  if (now > max_bytes_) EvictOverflow();
}

void RecordJsonCache::EvictOverflow() {
  std::lock_guard lock(mu_);
  // Down to 90% so that a full cache does not evict on every insert.
  const size_t target = max_bytes_ / 10 * 9;
  while (bytes_.load(std::memory_order_relaxed) > target && !lru_.empty()) {
    Series* victim = lru_.back();
    lru_.pop_back();
    {
      std::lock_guard series_lock(victim->mu);
      victim->evicted = true;
      bytes_.fetch_sub(victim->bytes, std::memory_order_relaxed);
      victim->bytes = 0;
      victim->entries.clear();
    }
    if (evictions_) evictions_->Inc();
    const std::string key = victim->key;  // erase may destroy the victim
    series_.erase(key);  // requests still holding it keep it alive until they finish
  }
  if (bytes_gauge_) bytes_gauge_->Set(static_cast<double>(bytes_.load(std::memory_order_relaxed)));
}

}  // namespace joule::api

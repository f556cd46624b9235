#include "ingest/rate_limiter.h"

#include <algorithm>
#include <cmath>

namespace joule::ingest {

RateLimiter::RateLimiter(double rate_per_second, double burst, size_t max_keys)
    : rate_(rate_per_second),
      burst_(std::max(burst, 1.0)),
      max_per_shard_(std::max<size_t>(1, (max_keys + kShards - 1) / kShards)) {}

void RateLimiter::Refill(Bucket& b, int64_t now_ns) const {
  if (now_ns < b.updated_ns) {
    // The clock stepped back (NTP): refill from the new time on. Waiting for it to reach
    // the bucket's last update refused a device for the length of the step, with
    // Retry-After: 1 (found by a black-box test).
    b.updated_ns = now_ns;
    return;
  }
  if (now_ns == b.updated_ns) return;
  const double elapsed_s = static_cast<double>(now_ns - b.updated_ns) / 1e9;
  b.tokens = std::min(burst_, b.tokens + elapsed_s * rate_);
  b.updated_ns = now_ns;
}

void RateLimiter::EvictOne(Shard& shard, int64_t now_ns) {
  // Full buckets behave exactly like absent ones: drop them all. Otherwise drop the least
  // recently used bucket.
  auto oldest = shard.buckets.end();
  for (auto it = shard.buckets.begin(); it != shard.buckets.end();) {
    Refill(it->second, now_ns);
    if (it->second.tokens >= burst_) {
      it = shard.buckets.erase(it);
      oldest = shard.buckets.end();
      continue;
    }
    if (oldest == shard.buckets.end() || it->second.updated_ns < oldest->second.updated_ns) {
      oldest = it;
    }
    ++it;
  }
  if (shard.buckets.size() >= max_per_shard_ && oldest != shard.buckets.end()) {
    shard.buckets.erase(oldest);
  }
}

bool RateLimiter::TryAcquire(std::string_view key, double tokens, int64_t now_ns,
                             int64_t* retry_after_ns) {
  Shard& shard = shards_[Hash{}(key) % kShards];
  std::lock_guard lock(shard.mu);
  auto it = shard.buckets.find(key);
  if (it == shard.buckets.end()) {
    if (shard.buckets.size() >= max_per_shard_) EvictOne(shard, now_ns);
    it = shard.buckets.emplace(std::string(key), Bucket{burst_, now_ns}).first;
  } else {
    Refill(it->second, now_ns);
  }
  Bucket& b = it->second;
  if (tokens <= b.tokens) {
    b.tokens -= tokens;
    return true;
  }
  if (retry_after_ns != nullptr) {
    const double missing = std::min(tokens, burst_) - b.tokens;
    *retry_after_ns = static_cast<int64_t>(std::ceil(missing / rate_ * 1e9));
  }
  return false;
}

size_t RateLimiter::size() const {
  size_t n = 0;
  for (const Shard& s : shards_) {
    std::lock_guard lock(s.mu);
    n += s.buckets.size();
  }
  return n;
}

}  // namespace joule::ingest

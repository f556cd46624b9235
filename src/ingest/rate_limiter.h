// RateLimiter: keyed token buckets (per device token, per owner key, per device).
// Each key has a bucket of `burst` tokens refilled at `rate_per_second`; a bucket starts
// full. A request for more tokens than `burst` never succeeds.
//
// Thread-safe: keys are spread over shards, each with its own mutex. Memory is bounded:
// a shard holds at most max_keys / shards buckets; when it is full, buckets that have
// refilled completely (indistinguishable from a new bucket) are dropped, and if none has,
// the least recently used one is.
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

namespace joule::ingest {

class RateLimiter {
 public:
  // rate_per_second > 0, burst >= 1, max_keys >= 1.
  RateLimiter(double rate_per_second, double burst, size_t max_keys = 100'000);

  // Takes `tokens` from `key`'s bucket at time `now_ns` and returns true, or returns false
  // (taking nothing) and sets *retry_after_ns (if not null) to the time until the bucket
  // holds `tokens` (for tokens > burst: until it is full). `now_ns` is elapsed time (the server
  // passes MonotonicClock's, so wall clock steps do not reach the buckets); it may step back (a
  // wall clock corrected by NTP): a bucket then refills from that time on, never waits for the
  // clock to come back.
  bool TryAcquire(std::string_view key, double tokens, int64_t now_ns, int64_t* retry_after_ns);

  double rate_per_second() const { return rate_; }
  double burst() const { return burst_; }
  size_t size() const;  // buckets held (for tests)

 private:
  struct Bucket {
    double tokens;
    int64_t updated_ns;
  };
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  struct Shard {
    mutable std::mutex mu;
    std::unordered_map<std::string, Bucket, Hash, std::equal_to<>> buckets;
  };
  static constexpr size_t kShards = 16;

  void Refill(Bucket& b, int64_t now_ns) const;
  void EvictOne(Shard& shard, int64_t now_ns);

  const double rate_;
  const double burst_;
  const size_t max_per_shard_;
  std::array<Shard, kShards> shards_;
};

}  // namespace joule::ingest

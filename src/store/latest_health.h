// LatestStoreHealth: whether a remote LatestStore (Redis) is currently usable, shared by
// the writers (the processors' LatestCatchUp), the realtime API and /readyz.
//
// The store starts as up. A writer that gets `Unavailable` calls ReportFailure: the store
// is then down, writers stop calling it (they defer, see latest_catchup.h) and readers go
// to history, so a dead or silent Redis never costs a caller a timeout per event. While it
// is down a background thread pings it — first after `probe_interval`, then with doubling
// back-off up to `max_probe_interval` — and marks it up again when it answers. While it is up
// the thread pings it every `idle_probe_interval`, so that an idle server notices an outage.
//
// Thread-safe. Metrics (when a registry is given): joule_latest_up (1/0),
// joule_latest_outages_total, joule_latest_recoveries_total.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "common/clock.h"
#include "common/metrics.h"
#include "common/status.h"
#include "store/latest_store.h"

namespace joule::store {

struct LatestStoreHealthOptions {
  int64_t probe_interval_ns = 200 * kNanosPerMilli;
  int64_t max_probe_interval_ns = 2 * kNanosPerSecond;
  int64_t idle_probe_interval_ns = 1 * kNanosPerSecond;  // while up (0 = never)
};

class LatestStoreHealth {
 public:
  // `store`, `clock` and `metrics` (may be null) must outlive this object.
  LatestStoreHealth(LatestStore* store, LatestStoreHealthOptions options, const Clock* clock,
                    MetricsRegistry* metrics);
  ~LatestStoreHealth();  // stops the prober
  LatestStoreHealth(const LatestStoreHealth&) = delete;
  LatestStoreHealth& operator=(const LatestStoreHealth&) = delete;

  void Start();  // starts the prober thread
  void Stop();

  bool up() const { return up_.load(std::memory_order_acquire); }
  // Marks the store down (a write or read got Unavailable) and wakes the prober.
  void ReportFailure(const Status& status);

  struct State {
    bool up = true;
    int64_t down_since_ns = 0;  // when the current outage began (0 when up)
    uint64_t outages = 0;       // up → down transitions
    std::string last_error;     // of the last failure reported
  };
  State state() const;

 private:
  void Run();

  LatestStore* store_;
  LatestStoreHealthOptions options_;
  const Clock* clock_;
  std::atomic<bool> up_{true};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  int64_t down_since_ns_ = 0;
  uint64_t outages_ = 0;
  std::string last_error_;
  std::thread thread_;
  Counter* outages_total_ = nullptr;
  Counter* recoveries_total_ = nullptr;
};

}  // namespace joule::store

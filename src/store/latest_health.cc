#include "store/latest_health.h"

#include <algorithm>
#include <chrono>

#include "common/logging.h"
#include "common/thread_priority.h"

namespace joule::store {

LatestStoreHealth::LatestStoreHealth(LatestStore* store, LatestStoreHealthOptions options,
                                     const Clock* clock, MetricsRegistry* metrics)
    : store_(store), options_(options), clock_(clock) {
  if (metrics != nullptr) {
    outages_total_ = metrics->GetCounter("joule_latest_outages_total",
                                         "Times the latest store (Redis) became unreachable");
    recoveries_total_ = metrics->GetCounter("joule_latest_recoveries_total",
                                            "Times the latest store (Redis) answered again");
    metrics->AddGaugeCallback("joule_latest_up", "1 when the latest store (Redis) is usable", {},
                              [this] { return up() ? 1.0 : 0.0; });
  }
}

LatestStoreHealth::~LatestStoreHealth() { Stop(); }

void LatestStoreHealth::Start() {
  std::lock_guard lock(mu_);
  if (thread_.joinable()) return;
  stop_ = false;
  thread_ = std::thread([this] { Run(); });
}

void LatestStoreHealth::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void LatestStoreHealth::ReportFailure(const Status& status) {
  bool was_up;
  {
    std::lock_guard lock(mu_);
    last_error_ = status.ToString();
    was_up = up_.exchange(false, std::memory_order_acq_rel);
    if (was_up) {
      down_since_ns_ = clock_->NowNanos();
      ++outages_;
    }
  }
  if (was_up) {
    if (outages_total_ != nullptr) outages_total_->Inc();
    logging::Warn("latest store unreachable; deferring its writes, reads go to history",
                  {{"backend", std::string(store_->backend())}, {"error", status.ToString()}});
    cv_.notify_all();
  }
}

LatestStoreHealth::State LatestStoreHealth::state() const {
  std::lock_guard lock(mu_);
  State s;
  s.up = up();
  s.down_since_ns = s.up ? 0 : down_since_ns_;
  s.outages = outages_;
  s.last_error = last_error_;
  return s;
}

void LatestStoreHealth::Run() {
  SetUpThread("joule-latest-up", 0);
  std::unique_lock lock(mu_);
  while (!stop_) {
    // While up, a ping every idle_probe_interval: an idle server (no writes to fail) still
    // notices a dead Redis for /readyz, and a reconnection to a restarted one (its instance
    // check, InstanceGeneration) starts the rewrite of what it lost without waiting for ingest
    // (found by a black-box test: /readyz said "up" for a dead Redis while idle).
    if (up() && options_.idle_probe_interval_ns > 0) {
      cv_.wait_for(lock, std::chrono::nanoseconds(options_.idle_probe_interval_ns),
                   [this] { return stop_ || !up(); });
      if (stop_) break;
      if (up()) {
        lock.unlock();
        Status st = store_->Ping();
        if (!st.ok() && st.code() == StatusCode::kUnavailable) ReportFailure(st);
        lock.lock();
        continue;
      }
    }
    int64_t wait_ns = options_.probe_interval_ns;
    while (!stop_ && !up()) {
      cv_.wait_for(lock, std::chrono::nanoseconds(wait_ns), [this] { return stop_; });
      if (stop_) break;
      lock.unlock();
      Status st = store_->Ping();
      lock.lock();
      if (st.ok()) {
        const int64_t down_ns = clock_->NowNanos() - down_since_ns_;
        up_.store(true, std::memory_order_release);
        down_since_ns_ = 0;
        if (recoveries_total_ != nullptr) recoveries_total_->Inc();
        lock.unlock();
        logging::Info("latest store reachable again; catching up",
                      {{"backend", std::string(store_->backend())},
                       {"down_seconds", std::to_string(static_cast<double>(down_ns) / 1e9)}});
        lock.lock();
      } else {
        last_error_ = st.ToString();
        wait_ns = std::min(wait_ns * 2, options_.max_probe_interval_ns);
      }
    }
  }
}

}  // namespace joule::store

// WebhookNotifier: delivers outbox entries (CONTRACT §4). One worker thread and queue per
// target (scheme, host, port), so a slow, hanging or failing receiver only delays its own
// deliveries; each attempt is bounded by `timeout_ns`. At most `max_targets` targets have a
// worker at once; a worker with nothing queued or in flight for `worker_idle_ns` ends, so
// the bound is on targets active now, not on every target ever seen. A delivery to a new
// target while `max_targets` targets have a worker waits (counted in
// joule_alert_delivery_target_waits_total) until one of them ends, and then that target
// gets the freed worker slot (targets in the order their first delivery waited): it never
// queues behind another target's deliveries. A failed attempt (network error,
// timeout, non-2xx) is retried after min(max_backoff, initial_backoff · 2^(n−1)), jittered
// to 50–100 % of that, with the same webhook-id, until `max_attempts`; then the delivery
// is a dead letter (outbox "dead", metric, visible in GET /v1/alerts). A target refused
// by the SSRF guard after DNS resolution is a dead letter at once.
// One alert's deliveries to one url go out in the order they were submitted: a delivery
// waits while an earlier one of the same alert and url is still pending (being retried),
// so a receiver gets "firing" before "resolved" even across its outages. The order is by
// submission; after a restart, Submit the outbox's pending deliveries by `created_ns`.
// Thread-safe; Stop() joins the workers (an attempt in flight finishes or times out).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "alert/outbox.h"
#include "common/clock.h"
#include "common/metrics.h"

namespace joule::alert {

struct NotifierOptions {
  int max_attempts = 10;
  int64_t initial_backoff_ns = kNanosPerSecond;
  int64_t max_backoff_ns = 5 * kNanosPerMinute;
  int64_t timeout_ns = 5 * kNanosPerSecond;
  bool allow_private_targets = false;
  size_t max_targets = 256;  // alerts.delivery_max_targets: targets with a worker (thread) at once
  int64_t worker_idle_ns = kNanosPerMinute;  // a worker idle this long ends
  std::string ca_file;                       // alerts.webhook_ca_file: extra trusted CAs for https
  // The `webhook-timestamp` header's clock (receivers check it against theirs); nullptr: the
  // notifier's clock, which times due deliveries and backoffs (processing time).
  const Clock* wall_clock = nullptr;
};

class WebhookNotifier {
 public:
  WebhookNotifier(NotifierOptions options, Outbox* outbox, const Clock* clock,
                  MetricsRegistry* metrics);
  ~WebhookNotifier();
  // Queues a delivery that is already durable in the outbox.
  void Submit(Delivery delivery);
  void Stop();

 private:
  struct Target {
    std::string key;  // scheme://host:port
    std::thread thread;
    std::mutex mu;
    std::condition_variable cv;
    std::multimap<int64_t, Delivery> queue;  // by due time
    // Per alert id + '\n' + url with a delivery in `queue` or in flight: its later
    // deliveries, in submission order, waiting for it to finish (they are not in `queue`).
    std::map<std::string, std::deque<Delivery>> waiting;
    bool stop = false;
  };
  // REQUIRES: mu_ held. A new target with its worker, or the waiting deliveries' first.
  Target* StartTarget(const std::string& key);
  void StartWaitingTarget();
  // REQUIRES: mu_ held, t->mu not held. Queues `d` on `t` (or behind its chain).
  void Enqueue(Target* t, Delivery d);
  // Called by t's idle worker without locks: true if it ended (t moved to retired_).
  bool Retire(Target* t);
  // REQUIRES: mu_ held. Joins the workers that ended.
  void JoinRetired();
  void Run(Target* t);
  void Attempt(Target* t, Delivery d);
  static std::string ChainKey(const Delivery& d) { return d.alert_id + '\n' + d.url; }
  // REQUIRES: t->mu held. `d` finished (delivered or dead letter): queues the next
  // delivery of its alert and url, if any.
  void Finished(Target* t, const Delivery& d);
  int64_t Backoff(int attempts);

  NotifierOptions options_;
  Outbox* outbox_;
  const Clock* clock_;
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<Target>> targets_;  // the ones with a worker
  std::vector<std::unique_ptr<Target>> retired_;            // ended, not yet joined
  // Deliveries to targets without a worker while max_targets have one, in submission
  // order, with their target key.
  std::deque<std::pair<std::string, Delivery>> waiting_for_worker_;
  bool stopped_ = false;
  Gauge* workers_;
  Counter* target_waits_;
  Histogram* latency_;
  Counter* ok_;
  Counter* failed_;
  Counter* retries_;
  Counter* dead_;
};

}  // namespace joule::alert

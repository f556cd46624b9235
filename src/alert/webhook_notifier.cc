#include "alert/webhook_notifier.h"

#include <fmt/format.h>

#include <chrono>
#include <random>

#include "alert/http_client.h"
#include "alert/target_guard.h"
#include "alert/webhook_signature.h"
#include "common/logging.h"
#include "common/thread_priority.h"

namespace joule::alert {

WebhookNotifier::WebhookNotifier(NotifierOptions options, Outbox* outbox, const Clock* clock,
                                 MetricsRegistry* metrics)
    : options_(options), outbox_(outbox), clock_(clock) {
  latency_ = metrics->GetHistogram(
      "joule_alert_delivery_latency_seconds",
      "From receipt of the record that triggered an alert to the first delivery attempt",
      Histogram::LatencyBuckets());
  ok_ = metrics->GetCounter("joule_alert_delivery_attempts_total", "Webhook delivery attempts",
                            {{"result", "ok"}});
  failed_ = metrics->GetCounter("joule_alert_delivery_attempts_total", "Webhook delivery attempts",
                                {{"result", "error"}});
  retries_ = metrics->GetCounter("joule_alert_delivery_retries_total",
                                 "Webhook deliveries scheduled for another attempt");
  dead_ = metrics->GetCounter("joule_alert_dead_letters_total",
                              "Webhook deliveries given up after the last attempt");
  workers_ = metrics->GetGauge("joule_alert_delivery_workers",
                               "Webhook targets with a worker now (at most max_targets)");
  target_waits_ = metrics->GetCounter(
      "joule_alert_delivery_target_waits_total",
      "Webhook deliveries to a new target that waited for a worker (max_targets had one)");
}

WebhookNotifier::~WebhookNotifier() { Stop(); }

void WebhookNotifier::Submit(Delivery d) {
  std::string key = d.url;
  if (Result<WebhookUrl> u = ParseWebhookUrl(d.url); u.ok()) {
    key = fmt::format("{}://{}:{}", u->tls ? "https" : "http", u->host, u->port);
  }
  std::lock_guard lock(mu_);
  if (stopped_) return;  // stays in the outbox; delivered after restart
  JoinRetired();
  auto it = targets_.find(key);
  if (it != targets_.end()) {
    Enqueue(it->second.get(), std::move(d));
    return;
  }
  if (targets_.size() >= options_.max_targets) {
    // Not behind another target's queue: it waits for a worker of its own.
    target_waits_->Inc();
    if (waiting_for_worker_.empty()) {
      logging::Warn("webhook targets at the limit: deliveries to further targets wait for a worker",
                    {{"max_targets", std::to_string(options_.max_targets)}});
    }
    waiting_for_worker_.emplace_back(std::move(key), std::move(d));
    return;
  }
  Enqueue(StartTarget(key), std::move(d));
}

WebhookNotifier::Target* WebhookNotifier::StartTarget(const std::string& key) {
  auto target = std::make_unique<Target>();
  Target* t = target.get();
  t->key = key;
  targets_.emplace(key, std::move(target));
  workers_->Set(static_cast<double>(targets_.size()));
  t->thread = std::thread([this, t] { Run(t); });
  return t;
}

void WebhookNotifier::StartWaitingTarget() {
  if (waiting_for_worker_.empty() || targets_.size() >= options_.max_targets) return;
  const std::string key = waiting_for_worker_.front().first;
  Target* t = StartTarget(key);
  std::deque<std::pair<std::string, Delivery>> rest;
  for (auto& [k, d] : waiting_for_worker_) {
    if (k == key) {
      Enqueue(t, std::move(d));
    } else {
      rest.emplace_back(std::move(k), std::move(d));
    }
  }
  waiting_for_worker_.swap(rest);
}

void WebhookNotifier::Enqueue(Target* t, Delivery d) {
  std::lock_guard lock(t->mu);
  auto [chain, first] = t->waiting.try_emplace(ChainKey(d));
  if (!first) {
    chain->second.push_back(std::move(d));  // after the earlier one of its alert
    return;
  }
  t->queue.emplace(clock_->NowNanos(), std::move(d));
  t->cv.notify_one();
}

bool WebhookNotifier::Retire(Target* t) {
  std::lock_guard lock(mu_);
  {
    std::lock_guard target_lock(t->mu);
    // Stopping: Stop() joins it. Work arrived meanwhile: it goes on.
    if (stopped_ || t->stop || !t->queue.empty() || !t->waiting.empty()) return false;
  }
  auto it = targets_.find(t->key);
  retired_.push_back(std::move(it->second));
  targets_.erase(it);
  workers_->Set(static_cast<double>(targets_.size()));
  StartWaitingTarget();
  return true;
}

void WebhookNotifier::JoinRetired() {
  for (auto& t : retired_) t->thread.join();  // each has returned from Run or is about to
  retired_.clear();
}

void WebhookNotifier::Finished(Target* t, const Delivery& d) {
  auto chain = t->waiting.find(ChainKey(d));
  if (chain == t->waiting.end()) return;
  if (chain->second.empty()) {
    t->waiting.erase(chain);
    return;
  }
  t->queue.emplace(clock_->NowNanos(), std::move(chain->second.front()));
  chain->second.pop_front();
  t->cv.notify_one();
}

void WebhookNotifier::Stop() {
  std::map<std::string, std::unique_ptr<Target>> targets;
  {
    std::lock_guard lock(mu_);
    stopped_ = true;
    targets.swap(targets_);
    JoinRetired();
    waiting_for_worker_.clear();  // they stay in the outbox; delivered after restart
  }
  for (auto& [k, t] : targets) {
    {
      std::lock_guard lock(t->mu);
      t->stop = true;
    }
    t->cv.notify_all();
  }
  for (auto& [k, t] : targets) {
    if (t->thread.joinable()) t->thread.join();
  }
}

int64_t WebhookNotifier::Backoff(int attempts) {
  int64_t b = options_.initial_backoff_ns;
  for (int i = 1; i < attempts && b < options_.max_backoff_ns; ++i) b *= 2;
  b = std::min(b, options_.max_backoff_ns);
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uniform_int_distribution<int64_t> jitter(b / 2, b);
  return jitter(rng);
}

void WebhookNotifier::Run(Target* t) {
  SetUpThread("joule-webhook", 0);
  std::unique_lock lock(t->mu);
  while (!t->stop) {
    if (t->queue.empty()) {
      const bool woken = t->cv.wait_for(lock, std::chrono::nanoseconds(options_.worker_idle_ns),
                                        [t] { return t->stop || !t->queue.empty(); });
      if (!woken) {  // idle: the worker ends, freeing its slot, unless work came meanwhile
        lock.unlock();
        if (Retire(t)) return;
        lock.lock();
      }
      continue;
    }
    int64_t now = clock_->NowNanos();
    auto first = t->queue.begin();
    if (first->first > now) {
      t->cv.wait_for(lock, std::chrono::nanoseconds(first->first - now));
      continue;
    }
    Delivery d = std::move(first->second);
    t->queue.erase(first);
    lock.unlock();
    Attempt(t, std::move(d));
    lock.lock();
  }
}

void WebhookNotifier::Attempt(Target* t, Delivery d) {
  int64_t now = clock_->NowNanos();
  if (d.attempts == 0 && d.trigger_ns > 0) {
    latency_->Observe(static_cast<double>(std::max<int64_t>(0, now - d.trigger_ns)) / 1e9);
  }
  const Clock* wall = options_.wall_clock != nullptr ? options_.wall_clock : clock_;
  const std::string timestamp = std::to_string(wall->NowNanos() / kNanosPerSecond);
  std::vector<std::pair<std::string, std::string>> headers = {
      {"webhook-id", d.id},
      {"webhook-timestamp", timestamp},
      {"webhook-signature", SignWebhook(d.secret, d.id, timestamp, d.body)},
  };
  Result<HttpPostResult> r = HttpPost(d.url, headers, d.body, options_.timeout_ns,
                                      options_.allow_private_targets, options_.ca_file);
  d.attempts++;
  if (r.ok() && r->status >= 200 && r->status < 300) {
    ok_->Inc();
    Status st = outbox_->Finish(d.id, true, d.attempts);
    if (!st.ok()) logging::Error("outbox finish failed", {{"error", st.ToString()}});
    std::lock_guard lock(t->mu);
    Finished(t, d);
    return;
  }
  failed_->Inc();
  std::string error = r.ok() ? fmt::format("HTTP {}", r->status) : r.status().message();
  bool refused = !r.ok() && r.status().code() == StatusCode::kPermissionDenied;
  if (refused || d.attempts >= options_.max_attempts) {
    dead_->Inc();
    (void)outbox_->RecordAttempt(d.id, d.attempts, error);
    Status st = outbox_->Finish(d.id, false, d.attempts);
    if (!st.ok()) logging::Error("outbox finish failed", {{"error", st.ToString()}});
    logging::Warn("webhook delivery dead-lettered",
                  {{"alert_id", d.alert_id}, {"webhook_id", d.id}, {"error", error}});
    std::lock_guard lock(t->mu);
    Finished(t, d);
    return;
  }
  retries_->Inc();
  (void)outbox_->RecordAttempt(d.id, d.attempts, error);
  int64_t due = clock_->NowNanos() + Backoff(d.attempts);
  std::lock_guard lock(t->mu);
  t->queue.emplace(due, std::move(d));
}

}  // namespace joule::alert

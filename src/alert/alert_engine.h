// AlertEngine: runs alert rules on the records of the window engine (CONTRACT §4).
//
// - Offer() is called by processor threads for every emitted record. It never blocks:
//   records go into a bounded queue (alerts.queue_capacity); when the queue is full the
//   record is dropped and counted (joule_alert_records_dropped_total), so a slow alert
//   path can never stall the pipeline. With no rules, Offer() costs one atomic load.
// - One alert thread evaluates (Evaluator), ticks absence rules every second, and for
//   each transition: first makes due webhook deliveries durable in the Outbox, then
//   commits the alert to the metadata store (UpsertAlert), then pushes an SSE `alert`
//   event. After SIGKILL, Start() restores active alerts from the store and re-queues
//   the outbox's pending deliveries; a transition lost between the two writes is
//   re-derived from the replayed records with the same deterministic webhook-id.
// - A store write that fails with Unavailable (PostgreSQL down) is kept — per alert its
//   latest state, durable in PendingAlertWrites — and retried every tick until it lands
//   (a later change of the alert supersedes it); Stop() tries once more. Start() writes
//   what a previous run left and restores open alerts from it as from the store.
// - Rules come from the metadata store and are reloaded when it announces a rule change.
// Thread-safe.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "alert/evaluator.h"
#include "alert/outbox.h"
#include "alert/pending_alert_writes.h"
#include "alert/rule.h"
#include "alert/webhook_notifier.h"
#include "common/clock.h"
#include "common/metrics.h"
#include "model/aggregate_record.h"
#include "store/metadata_store.h"

namespace joule::alert {

struct AlertEngineOptions {
  std::string dir;  // {data_dir}/alerts
  bool fsync = true;
  bool allow_private_targets = false;
  size_t queue_capacity = 65536;
  size_t outbox_capacity = Outbox::kDefaultCapacity;  // pending webhook deliveries
  int64_t tick_interval_ns = kNanosPerSecond;
  NotifierOptions notifier;
  // SSE fan-out of alert events; routed by the alert's owner_id, which differs from the
  // device's current owner once the device moved. May be empty.
  std::function<void(const store::Alert&)> publish;
  // Processing time (common/processing_clock.h): rule evaluation (absence, a budget's local
  // day end, snoozes ending) and webhook retry timing; nullptr: the engine's clock. The
  // engine's clock (wall) stamps webhook timestamps.
  const Clock* processing_clock = nullptr;
  // Mixed into every webhook-id (the server: its data dir's id, app/data_dir_id.h), so that
  // two deployments sharing a receiver never send the same id; empty: none.
  std::string webhook_id_salt;
  // Whether the processors have replayed the log after this start (the server: every
  // processor caught up once). Until then re-derived changes of alerts the store holds as
  // resolved are held (Evaluator::SetReplaying). Empty: no replay is waited for.
  std::function<bool()> replay_done;
  // When the processors last took in an event of a device (processing time; nullopt:
  // unknown), asked before an absence alert fires (Evaluator::SetActivityLookup): the
  // engine evaluates no record while no rule exists. Empty: not asked. Called on the alert
  // thread.
  std::function<std::optional<int64_t>(const std::string& device_id)> device_last_seen;
};

class AlertEngine {
 public:
  static Result<std::unique_ptr<AlertEngine>> Open(AlertEngineOptions options,
                                                   store::MetadataStore* metadata,
                                                   const Clock* clock, MetricsRegistry* metrics);
  ~AlertEngine();

  Status Start();
  // Evaluates what is queued, stops the threads. Pending deliveries stay in the outbox.
  void Stop();

  // Non-blocking; false when the record was dropped (queue full).
  bool Offer(const model::AggregateRecord& record);
  // Rules changed (also triggered by the store's change notification).
  void ReloadRules();
  // The alert's ack/snooze flags changed (API); applied on the alert thread.
  void FlagsChanged(const store::Alert& alert);
  // Evaluate absence rules now (tests; the thread does it every tick_interval).
  void TickNow();

  std::optional<DeliveryStatus> DeliveryOf(const std::string& alert_id) const;
  bool allow_private_targets() const { return options_.allow_private_targets; }

 private:
  AlertEngine(AlertEngineOptions options, store::MetadataStore* metadata, const Clock* clock,
              MetricsRegistry* metrics);
  void Run();
  // (Re)loads the rules; the alerts of rules that were deleted are resolved into `out`.
  void LoadRules(std::vector<AlertUpdate>* out = nullptr);
  // Absence rules scoped to an owner or a model: registers the devices they cover from
  // the metadata store (all of them, or one changed device), see Evaluator::RegisterDevice.
  void SeedDevices();
  // A changed or deleted device: re-registered or forgotten for absence rules, and the
  // open alerts of rules that no longer cover it resolved into `out`.
  // `sweep`: not from a change notification (see Evaluator::DeviceChanged `certain`).
  void RefreshDevice(const std::string& device_id, std::vector<AlertUpdate>* out,
                     bool sweep = false);
  // The absence rules without a device scope (what SeedDevices looks for).
  std::vector<const Rule*> ScopedAbsenceRules() const;
  void Apply(std::vector<AlertUpdate>& updates);
  // Writes `alert` to the store; on Unavailable keeps it in pending_writes_ (durable).
  void Store(const store::Alert& alert);
  // Retries the kept writes, oldest first, until one fails. `why` names the occasion in
  // the log. Returns how many landed.
  size_t RetryPendingWrites(const char* why);
  void SavePendingWrites();
  DeviceInfo Lookup(std::string_view device_id);

  AlertEngineOptions options_;
  store::MetadataStore* metadata_;
  const Clock* clock_;
  const Clock* processing_clock_;  // options_.processing_clock or clock_
  std::unique_ptr<Outbox> outbox_;
  std::unique_ptr<PendingAlertWrites> pending_writes_;  // alert thread (and Start/Stop)
  int64_t outbox_retry_ns_ = 0;   // alert thread only: the next Outbox::CatchUp while behind
  int64_t pending_retry_ns_ = 0;  // alert thread only: the next retry of pending writes
  bool pending_logged_ = false;   // alert thread only: the first failure of a run is logged
  std::unique_ptr<WebhookNotifier> notifier_;
  Evaluator evaluator_;
  uint64_t subscription_ = 0;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<model::AggregateRecord> queue_;
  std::vector<store::Alert> flag_changes_;
  std::vector<std::string> changed_devices_;  // device rows changed (store notification)
  int64_t last_created_ns_ = 0;  // alert thread only: created_ns of the latest delivery
  // Rule rows that did not parse at the last load (their alerts are not ended at start).
  std::unordered_set<std::string> unreadable_rules_;
  bool reseed_devices_ = false;  // alert thread only: a device listing failed, seed again
  bool stop_ = false;
  bool tick_now_ = false;
  std::atomic<bool> rules_dirty_{true};
  std::atomic<bool> has_rules_{false};
  // Check the devices of the open alerts against the store (after a restart, or when the
  // store's notifications were missed: a device may have left a scope meanwhile).
  std::atomic<bool> sweep_devices_{false};
  std::thread thread_;

  mutable std::mutex open_mu_;
  std::unordered_map<std::string, store::AlertState> open_;  // active alerts, for metrics

  Counter* dropped_;
  Counter* transitions_[4];  // pending, firing, resolved, retracted
  Counter* store_errors_;
  Counter* reminders_;
  Counter* deliveries_dropped_;
};

}  // namespace joule::alert

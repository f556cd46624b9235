#include "alert/alert_engine.h"

#include <fmt/format.h>
#include <openssl/evp.h>

#include <algorithm>

#include "alert/http_client.h"
#include "common/logging.h"
#include "common/thread_priority.h"

namespace joule::alert {
namespace {

// Deterministic webhook-id: a re-derived transition (after a crash between the outbox
// write and the store write) gets the same id, so the outbox drops the duplicate and
// receivers can de-duplicate on webhook-id. `salt` (the data dir's id) keeps two
// deployments with the same device and rule ids (staging and production, blue and green)
// that share a receiver from sending the same id for different deliveries (found by a
// black-box soak).
std::string WebhookId(const std::string& salt, const std::string& alert_id,
                      const std::string& event, size_t channel) {
  std::string in = salt.empty() ? fmt::format("{}|{}|{}", alert_id, event, channel)
                                : fmt::format("{}|{}|{}|{}", salt, alert_id, event, channel);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(in.data(), in.size(), md, &len, EVP_sha256(), nullptr);
  std::string out = "msg_";
  static const char* kHex = "0123456789abcdef";
  for (unsigned i = 0; i < 16 && i < len; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 15];
  }
  return out;
}

int EventIndex(const std::string& e) {
  return e == "pending" ? 0 : e == "firing" ? 1 : e == "resolved" ? 2 : 3;
}

}  // namespace

Result<std::unique_ptr<AlertEngine>> AlertEngine::Open(AlertEngineOptions options,
                                                       store::MetadataStore* metadata,
                                                       const Clock* clock,
                                                       MetricsRegistry* metrics) {
  JOULE_RETURN_IF_ERROR(CheckWebhookCaFile(options.notifier.ca_file));
  std::unique_ptr<AlertEngine> e(new AlertEngine(std::move(options), metadata, clock, metrics));
  JOULE_ASSIGN_OR_RETURN(
      e->outbox_, Outbox::Open(e->options_.dir, e->options_.fsync, e->options_.outbox_capacity));
  JOULE_ASSIGN_OR_RETURN(e->pending_writes_,
                         PendingAlertWrites::Open(e->options_.dir, e->options_.fsync));
  NotifierOptions no = e->options_.notifier;
  no.allow_private_targets = e->options_.allow_private_targets;
  no.wall_clock = clock;
  e->notifier_ =
      std::make_unique<WebhookNotifier>(no, e->outbox_.get(), e->processing_clock_, metrics);
  Outbox* box = e->outbox_.get();
  metrics->AddGaugeCallback("joule_alert_outbox_pending", "Webhook deliveries not yet finished", {},
                            [box] { return static_cast<double>(box->pending_count()); });
  metrics->AddGaugeCallback("joule_alert_outbox_capacity",
                            "Pending webhook deliveries the outbox holds at most", {},
                            [box] { return static_cast<double>(box->capacity()); });
  metrics->AddGaugeCallback(
      "joule_alert_outbox_behind",
      "1 while the outbox file lacks deliveries kept in memory (a write failed: disk full)", {},
      [box] { return box->behind() ? 1.0 : 0.0; });
  PendingAlertWrites* pending = e->pending_writes_.get();
  metrics->AddGaugeCallback(
      "joule_alert_store_pending_writes",
      "Alerts whose latest change is not yet in the metadata store (kept, retried)", {},
      [pending] { return static_cast<double>(pending->size()); });
  AlertEngine* self = e.get();
  for (const char* state : {"pending", "firing"}) {
    metrics->AddGaugeCallback("joule_alerts", "Open alerts by state", {{"state", state}},
                              [self, s = std::string(state)] {
                                std::lock_guard lock(self->open_mu_);
                                double n = 0;
                                for (const auto& [id, st] : self->open_) {
                                  n += store::AlertStateName(st) == s ? 1 : 0;
                                }
                                return n;
                              });
  }
  return e;
}

AlertEngine::AlertEngine(AlertEngineOptions options, store::MetadataStore* metadata,
                         const Clock* clock, MetricsRegistry* metrics)
    : options_(std::move(options)),
      metadata_(metadata),
      clock_(clock),
      processing_clock_(options_.processing_clock != nullptr ? options_.processing_clock : clock),
      evaluator_([this](std::string_view id) { return Lookup(id); }) {
  evaluator_.SetWallClock([this] { return clock_->NowNanos(); });
  if (options_.device_last_seen) evaluator_.SetActivityLookup(options_.device_last_seen);
  evaluator_.SetStoredAlertLookup([this](const std::string& id) -> std::optional<store::Alert> {
    if (!metadata_) return std::nullopt;
    // A change the store has not taken yet is newer than its row.
    if (std::optional<store::Alert> kept = pending_writes_->Get(id)) return kept;
    Result<store::Alert> a = metadata_->GetAlert(id);
    if (!a.ok()) {
      if (a.status().code() != StatusCode::kNotFound) store_errors_->Inc();
      return std::nullopt;
    }
    return std::move(*a);
  });
  evaluator_.SetStoredAlertsLookup(
      [this](const std::string& rule_id, const std::string& device_id) {
        std::vector<store::Alert> alerts;
        if (!metadata_) return alerts;
        store::AlertFilter f;
        f.rule_id = rule_id;
        f.device_id = device_id;
        // A replay starts at the processors' checkpoint: the episode it may start inside is
        // among the newest alerts of the rule and device.
        f.limit = 32;
        Result<store::AlertPage> page = metadata_->ListAlerts(f);
        if (page.ok()) {
          alerts = std::move(page->alerts);
        } else if (page.status().code() != StatusCode::kNotFound) {
          store_errors_->Inc();
        }
        // A change the store has not taken yet is newer than its row.
        for (store::Alert& kept : pending_writes_->All()) {
          if (kept.rule_id != rule_id || kept.device_id != device_id) continue;
          auto it = std::find_if(alerts.begin(), alerts.end(),
                                 [&](const store::Alert& a) { return a.id == kept.id; });
          if (it != alerts.end()) {
            *it = std::move(kept);
          } else {
            alerts.push_back(std::move(kept));
          }
        }
        return alerts;
      });
  dropped_ = metrics->GetCounter("joule_alert_records_dropped_total",
                                 "Records not evaluated because the alert queue was full");
  const char* names[4] = {"pending", "firing", "resolved", "retracted"};
  for (int i = 0; i < 4; ++i) {
    transitions_[i] = metrics->GetCounter("joule_alert_transitions_total",
                                          "Alert state transitions", {{"event", names[i]}});
  }
  deliveries_dropped_ = metrics->GetCounter(
      "joule_alert_deliveries_dropped_total",
      "Webhook deliveries not queued because the outbox was full (alerts.outbox_capacity)");
  reminders_ =
      metrics->GetCounter("joule_alert_snooze_reminders_total",
                          "Reminders sent because a snooze ended while the alert was still firing");
  store_errors_ = metrics->GetCounter("joule_alert_store_errors_total",
                                      "Alert state writes to the metadata store that failed");
}

AlertEngine::~AlertEngine() { Stop(); }

DeviceInfo AlertEngine::Lookup(std::string_view device_id) {
  DeviceInfo info;
  if (!metadata_) return info;
  Result<store::Device> d = metadata_->GetDevice(device_id);
  if (d.ok()) {
    info.owner_id = d->owner_id;
    info.model = d->model;
    info.created_at_ns = d->created_at_ns;
  }
  return info;
}

void AlertEngine::LoadRules(std::vector<AlertUpdate>* out) {
  rules_dirty_.store(false);
  if (!metadata_) return;
  Result<std::vector<store::Rule>> rows = metadata_->ListRules(std::nullopt);
  if (!rows.ok()) {
    logging::Error("alert rules not loaded", {{"error", rows.status().ToString()}});
    rules_dirty_.store(true);
    return;
  }
  std::vector<Rule> rules;
  RuleParseOptions po;
  po.allow_private_targets = true;    // re-checked at delivery after DNS resolution
  po.drop_duplicate_channels = true;  // rules stored before duplicates were refused
  po.clamp_durations = true;          // rules stored before long durations were refused
  unreadable_rules_.clear();
  for (const store::Rule& row : *rows) {
    Result<Rule> r = ParseRule(row.json, po);
    if (!r.ok()) {
      unreadable_rules_.insert(row.id);
      logging::Warn("stored alert rule does not parse; skipped",
                    {{"rule_id", row.id}, {"error", r.status().message()}});
      continue;
    }
    r->id = row.id;
    r->owner_id = row.owner_id;
    rules.push_back(std::move(*r));
  }
  has_rules_.store(!rules.empty());
  evaluator_.SetRules(std::move(rules), processing_clock_->NowNanos(), out);
  SeedDevices();
}

std::vector<const Rule*> AlertEngine::ScopedAbsenceRules() const {
  std::vector<const Rule*> out;
  for (const Rule& r : evaluator_.rules()) {
    if (r.kind == RuleKind::kAbsence && r.enabled && r.scope.device_id.empty()) out.push_back(&r);
  }
  return out;
}

void AlertEngine::SeedDevices() {
  evaluator_.ClearRegisteredDevices();
  if (!metadata_) return;
  std::vector<const Rule*> rules = ScopedAbsenceRules();
  if (rules.empty()) return;
  // One listing per (owner, model) filter the rules name — an owner's rule or a rule scoped
  // to an owner lists that owner's devices, an admin rule scoped to a model lists that
  // model's devices; only a rule with neither (none can be made today) pages through all.
  std::vector<std::pair<std::optional<std::string>, std::optional<std::string>>> filters;
  for (const Rule* r : rules) {
    std::optional<std::string> owner, model;
    if (!r->owner_id.empty()) {
      owner = r->owner_id;
    } else if (!r->scope.owner_id.empty()) {
      owner = r->scope.owner_id;
    }
    if (!r->scope.model.empty()) model = r->scope.model;
    if (!owner && !model) {
      filters.assign(1, {std::nullopt, std::nullopt});
      break;
    }
    if (std::find(filters.begin(), filters.end(), std::make_pair(owner, model)) == filters.end()) {
      filters.emplace_back(owner, model);
    }
  }
  for (const auto& [owner, model] : filters) {
    store::ListDevicesOptions o;
    o.owner_id = owner;
    o.model = model;
    o.limit = 1000;
    while (true) {
      Result<store::DevicePage> page = metadata_->ListDevices(o);
      if (!page.ok()) {
        logging::Error("devices for absence rules not loaded",
                       {{"error", page.status().ToString()}});
        store_errors_->Inc();
        reseed_devices_ = true;  // retried on the next loop of the alert thread
        return;
      }
      for (const store::Device& d : page->devices) {
        for (const Rule* r : rules) {
          if (RuleMatches(*r, d.device_id, d.owner_id, d.model)) {
            evaluator_.RegisterDevice(d.device_id, DeviceInfo{d.owner_id, d.model, d.created_at_ns},
                                      d.created_at_ns);
            break;
          }
        }
      }
      if (page->next_cursor.empty()) break;
      o.after = page->next_cursor;
    }
  }
}

void AlertEngine::RefreshDevice(const std::string& device_id, std::vector<AlertUpdate>* out,
                                bool sweep) {
  if (!metadata_) return;
  Result<store::Device> d = metadata_->GetDevice(device_id);
  if (!d.ok()) {
    if (d.status().code() != StatusCode::kNotFound) {
      reseed_devices_ = true;
      if (sweep) sweep_devices_.store(true);  // retried on the next loop, as the reseed
      return;
    }
    // Deleted: its open alerts resolve, and absence rules stop watching it.
    evaluator_.DeviceChanged(device_id, std::nullopt, processing_clock_->NowNanos(), out, !sweep);
    return;
  }
  // Rules that no longer cover it (owner or model changed) resolve its open alerts.
  evaluator_.DeviceChanged(device_id, DeviceInfo{d->owner_id, d->model, d->created_at_ns},
                           processing_clock_->NowNanos(), out);
  std::vector<const Rule*> rules = ScopedAbsenceRules();
  for (const Rule* r : rules) {
    if (RuleMatches(*r, d->device_id, d->owner_id, d->model)) {
      evaluator_.RegisterDevice(d->device_id, DeviceInfo{d->owner_id, d->model, d->created_at_ns},
                                d->created_at_ns);
      return;
    }
  }
  evaluator_.ForgetDevice(device_id);  // no longer covered (owner or model changed)
}

Status AlertEngine::Start() {
  LoadRules();
  if (metadata_) {
    subscription_ = metadata_->Subscribe([this](const store::MetadataChange& c) {
      if (c.kind == store::MetadataChange::Kind::kRule ||
          c.kind == store::MetadataChange::Kind::kAll) {
        if (c.kind == store::MetadataChange::Kind::kAll) sweep_devices_.store(true);
        ReloadRules();  // reseeds the registered devices too
      } else if (c.kind == store::MetadataChange::Kind::kDevice) {
        {
          std::lock_guard lock(mu_);
          changed_devices_.push_back(c.id);
        }
        cv_.notify_one();
      }
    });
    const int64_t now = processing_clock_->NowNanos();
    // Changes a previous run could not store (the store was unreachable) first: they are
    // newer than the rows, and restoring from stale rows would lose the episode.
    if (!pending_writes_->empty()) RetryPendingWrites("at start");
    std::vector<store::Alert> restore;
    for (store::AlertState state : {store::AlertState::kPending, store::AlertState::kFiring}) {
      store::AlertFilter f;
      f.state = state;
      f.limit = 1000;
      while (true) {
        Result<store::AlertPage> page = metadata_->ListAlerts(f);
        if (!page.ok()) return page.status();
        for (store::Alert& a : page->alerts) restore.push_back(std::move(a));
        if (page->next_cursor.empty()) break;
        f.after = page->next_cursor;
      }
    }
    // Writes still not stored (the store went away again) count as stored: the newest
    // state wins, the store's ack and snooze flags are kept.
    for (const store::Alert& kept : pending_writes_->All()) {
      auto it = std::find_if(restore.begin(), restore.end(),
                             [&](const store::Alert& a) { return a.id == kept.id; });
      if (it == restore.end()) {
        if (kept.state != store::AlertState::kResolved) restore.push_back(kept);
      } else if (kept.state == store::AlertState::kResolved) {
        restore.erase(it);
      } else {
        const bool acked = it->acked;
        const std::optional<int64_t> snoozed = it->snoozed_until_ns;
        *it = kept;
        it->acked = acked;
        it->snoozed_until_ns = snoozed;
      }
    }
    for (const store::Alert& a : restore) {
      evaluator_.RestoreAlert(a, now);
      std::lock_guard lock(open_mu_);
      open_[a.id] = a.state;
    }
  }
  sweep_devices_.store(true);  // devices deleted or moved (plain SQL) while Joule was down
  // In the order they were made (one alert's deliveries go out in submission order).
  std::vector<Delivery> pending = outbox_->Pending();
  std::stable_sort(pending.begin(), pending.end(), [](const Delivery& a, const Delivery& b) {
    return a.created_ns < b.created_ns;
  });
  for (Delivery& d : pending) notifier_->Submit(std::move(d));
  thread_ = std::thread([this] { Run(); });
  return Status::Ok();
}

void AlertEngine::Stop() {
  if (subscription_ && metadata_) {
    metadata_->Unsubscribe(subscription_);
    subscription_ = 0;
  }
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) {
    thread_.join();
    // Changes the store has not taken: one more try; what still fails stays in the file
    // and is written at the next start.
    if (metadata_ && !pending_writes_->empty()) {
      const size_t before = pending_writes_->size();
      const size_t stored = RetryPendingWrites("at shutdown");
      if (pending_writes_->empty()) {
        logging::Info("alert changes not yet stored were stored at shutdown",
                      {{"alerts", std::to_string(stored)}});
      } else {
        logging::Warn(
            "alert changes not stored at shutdown (the metadata store is unreachable); kept, "
            "written at the next start",
            {{"alerts", std::to_string(pending_writes_->size())},
             {"stored", std::to_string(before - pending_writes_->size())},
             {"path", pending_writes_->path()}});
      }
    }
  }
  if (notifier_) notifier_->Stop();
  // Deliveries kept in memory since an outbox write failed (a full disk): one more try to
  // write them, else they are lost with this process — said so.
  if (outbox_ && outbox_->behind()) {
    if (Status st = outbox_->CatchUp(); !st.ok()) {
      logging::Error(
          "alert outbox not written at shutdown (the disk is still full?): the webhook "
          "deliveries accepted since its writes failed are lost",
          {{"pending", std::to_string(outbox_->pending_count())}, {"error", st.ToString()}});
    }
  }
}

bool AlertEngine::Offer(const model::AggregateRecord& record) {
  if (!has_rules_.load(std::memory_order_relaxed) &&
      !rules_dirty_.load(std::memory_order_relaxed)) {
    return true;
  }
  {
    std::lock_guard lock(mu_);
    if (queue_.size() >= options_.queue_capacity) {
      dropped_->Inc();
      return false;
    }
    queue_.push_back(record);
  }
  cv_.notify_one();
  return true;
}

void AlertEngine::ReloadRules() {
  rules_dirty_.store(true);
  cv_.notify_one();
}

void AlertEngine::FlagsChanged(const store::Alert& alert) {
  {
    std::lock_guard lock(mu_);
    flag_changes_.push_back(alert);
  }
  cv_.notify_one();
}

void AlertEngine::TickNow() {
  {
    std::lock_guard lock(mu_);
    tick_now_ = true;
  }
  cv_.notify_one();
}

std::optional<DeliveryStatus> AlertEngine::DeliveryOf(const std::string& alert_id) const {
  return outbox_->StatusOf(alert_id);
}

void AlertEngine::Run() {
  SetUpThread("joule-alerts", 0);
  int64_t last_tick = 0;
  bool replaying = static_cast<bool>(options_.replay_done);
  evaluator_.SetReplaying(replaying);
  std::deque<model::AggregateRecord> batch;
  std::vector<store::Alert> flags;
  std::vector<std::string> devices;
  std::vector<AlertUpdate> updates;
  bool restored_judged = false;
  while (true) {
    bool stopping, tick_now;
    // Read before the batch is taken: the processors offer their replayed records before
    // they count as caught up, so once this is true they are all in this batch or earlier.
    const bool replay_over = replaying && options_.replay_done();
    {
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, std::chrono::nanoseconds(options_.tick_interval_ns), [this] {
        return stop_ || tick_now_ || !queue_.empty() || !flag_changes_.empty() ||
               !changed_devices_.empty() || rules_dirty_.load();
      });
      batch.swap(queue_);
      flags.swap(flag_changes_);
      devices.swap(changed_devices_);
      stopping = stop_;
      tick_now = tick_now_;
      tick_now_ = false;
    }
    if (rules_dirty_.load()) LoadRules(&updates);
    if (!restored_judged && !rules_dirty_.load()) {
      // Open alerts of rules deleted, disabled or given another kind while Joule was down
      // (plain SQL) end now, once the rules have been read (with the store unreachable,
      // they could not be told from rules that still exist).
      restored_judged = true;
      evaluator_.EndAlertsOfChangedRules(processing_clock_->NowNanos(), unreadable_rules_,
                                         &updates);
    }
    // Before this round's changes, so that each alert's writes land in order.
    if (metadata_ && !pending_writes_->empty() &&
        processing_clock_->NowNanos() >= pending_retry_ns_) {
      RetryPendingWrites("after an outage");
      pending_retry_ns_ = processing_clock_->NowNanos() + options_.tick_interval_ns;
    }
    // A failed outbox write (a full disk) kept deliveries in memory: written once there is
    // space again.
    if (outbox_->behind() && processing_clock_->NowNanos() >= outbox_retry_ns_) {
      (void)outbox_->CatchUp();
      outbox_retry_ns_ = processing_clock_->NowNanos() + options_.tick_interval_ns;
    }
    if (reseed_devices_) {
      reseed_devices_ = false;
      SeedDevices();
    }
    // (Also after a reload: besides registering them, a changed device may leave a scope.)
    for (const std::string& id : devices) RefreshDevice(id, &updates);
    devices.clear();
    if (sweep_devices_.exchange(false)) {
      for (const std::string& id : evaluator_.DevicesWithOpenAlerts()) {
        RefreshDevice(id, &updates, /*sweep=*/true);
      }
    }
    for (const store::Alert& a : flags) evaluator_.SetFlags(a.id, a.acked, a.snoozed_until_ns);
    flags.clear();
    const int64_t now = processing_clock_->NowNanos();
    evaluator_.RemindSnoozeEnded(now, &updates);  // before records: see evaluator.h
    for (const model::AggregateRecord& r : batch) evaluator_.OnRecord(r, now, &updates);
    batch.clear();
    if (replay_over) {
      replaying = false;
      evaluator_.FlushHeld(&updates);
    }
    if (tick_now || now - last_tick >= options_.tick_interval_ns) {
      evaluator_.Tick(now, &updates);
      last_tick = now;
    }
    if (!updates.empty()) Apply(updates);
    updates.clear();
    if (stopping) break;
  }
}

void AlertEngine::Apply(std::vector<AlertUpdate>& updates) {
  std::vector<Delivery> submit;  // one update's deliveries, handed over once it is stored
  for (AlertUpdate& u : updates) {
    submit.clear();
    if (u.reminder) {
      reminders_->Inc();
    } else if (!u.value_update) {
      transitions_[EventIndex(u.event)]->Inc();
    }
    if (u.notify) {
      // The update's own channels: a deleted rule is no longer in evaluator_.rules(), and
      // its "resolved" goes where its "firing" went (found by a black-box test: no
      // webhook).
      for (size_t i = 0; i < u.channels.size(); ++i) {
        Delivery d;
        d.id = WebhookId(options_.webhook_id_salt, u.alert.id,
                         u.delivery_key.empty() ? u.event : u.delivery_key, i);
        d.alert_id = u.alert.id;
        d.event = u.event;
        d.url = u.channels[i].url;
        d.secret = u.channels[i].secret;
        d.body = u.alert.json;
        // Strictly increasing: after a restart the outbox's pending deliveries are
        // submitted in this order.
        last_created_ns_ = std::max(clock_->NowNanos(), last_created_ns_ + 1);
        d.created_ns = last_created_ns_;
        d.trigger_ns = u.trigger_ns;
        // Only a full outbox refuses (a failed write keeps the delivery in memory).
        Result<bool> added = outbox_->Add(d);
        if (!added.ok()) {
          deliveries_dropped_->Inc();
          logging::Error("webhook delivery dropped", {{"alert_id", d.alert_id},
                                                      {"webhook_id", d.id},
                                                      {"error", added.status().ToString()}});
        } else if (*added) {
          submit.push_back(std::move(d));
        }
      }
    }
    if (metadata_) Store(u.alert);
    // Sent only now: a receiver that asks the API about the alert it was just told of finds
    // it stored as the webhook says (they were handed to the workers before the store write,
    // and a kill -9 between the two re-derived the alert with another opened_at than the
    // delivered webhook's; seen in a ThreadSanitizer run of integration_alerts, whose
    // slowness widened that window). A crash before this point re-queues them at the start.
    for (Delivery& d : submit) notifier_->Submit(std::move(d));
    {
      std::lock_guard lock(open_mu_);
      if (u.alert.state == store::AlertState::kResolved) {
        open_.erase(u.alert.id);
      } else {
        open_[u.alert.id] = u.alert.state;
      }
    }
    if (options_.publish) options_.publish(u.alert);
  }
}

void AlertEngine::Store(const store::Alert& alert) {
  Result<bool> st = metadata_->UpsertAlert(alert);
  if (st.ok()) {
    // This change supersedes one kept for the alert (the store keeps the newest).
    if (pending_writes_->Get(alert.id)) {
      pending_writes_->Erase(alert.id);
      SavePendingWrites();
    }
    return;
  }
  store_errors_->Inc();
  if (st.status().code() != StatusCode::kUnavailable) {
    // It would fail again the same way (the store's Retry semantics: only Unavailable is
    // worth repeating).
    logging::Error("alert not stored", {{"alert_id", alert.id}, {"error", st.status().ToString()}});
    return;
  }
  // Kept (its latest state) and retried every tick until the store answers; durable, so a
  // restart meanwhile writes it at start. Before session 21 it was only logged: the alert
  // was missing from the API while its webhook had gone out, and lost across a restart.
  pending_writes_->Put(alert);
  SavePendingWrites();
  if (!pending_logged_) {
    pending_logged_ = true;
    logging::Error(
        "alert not stored: the metadata store is unreachable; kept and retried until it answers",
        {{"alert_id", alert.id}, {"error", st.status().ToString()}});
  }
  pending_retry_ns_ = processing_clock_->NowNanos() + options_.tick_interval_ns;
}

size_t AlertEngine::RetryPendingWrites(const char* why) {
  size_t stored = 0;
  for (const store::Alert& a : pending_writes_->All()) {
    Result<bool> st = metadata_->UpsertAlert(a);
    if (!st.ok() && st.status().code() == StatusCode::kUnavailable) break;  // still down
    if (!st.ok()) {
      store_errors_->Inc();
      logging::Error("alert not stored; dropped",
                     {{"alert_id", a.id}, {"error", st.status().ToString()}});
    } else {
      ++stored;
    }
    pending_writes_->Erase(a.id);
  }
  SavePendingWrites();
  if (stored > 0 && pending_writes_->empty()) {
    pending_logged_ = false;
    logging::Info("alert changes kept during a metadata store outage are stored",
                  {{"alerts", std::to_string(stored)}, {"when", why}});
  }
  return stored;
}

void AlertEngine::SavePendingWrites() {
  Status st = pending_writes_->Save();
  if (!st.ok()) {
    logging::Error("pending alert writes not saved",
                   {{"path", pending_writes_->path()}, {"error", st.ToString()}});
  }
}

}  // namespace joule::alert

// Evaluator: the pure alert state machine (CONTRACT §4). Records in, alert transitions
// out; no I/O, no threads, time passed in — so the golden scenarios under
// tests/scenarios/alerts/ drive it exactly as the engine does.
//
// Semantics (see README.md for the reasoning):
// - threshold / rate_of_change read FINAL records of the rule's resolution (a late update
//   is final with a higher version). Each window gets a verdict; a run of `for_windows`
//   adjacent breaching windows makes an alert: `pending` from the run's first window,
//   `firing` when the run is long enough. A firing alert resolves at the first window
//   whose value no longer satisfies the condition at `clear_threshold` (hysteresis); a
//   window without a value neither extends nor clears. After a resolution no new alert
//   opens for windows starting before resolution window end + `cooldown`.
// - Per (rule, device) the recent verdicts are kept and the machine is re-run over them
//   on every change, so a late update that flips a verdict re-derives the episodes; an
//   episode is matched to the existing alert whose window span it overlaps, which is then
//   updated (never a second alert). An active alert whose episode vanished is resolved as
//   `retracted`; a resolved one whose resolution moved gets an updated `resolved`. When a
//   late window joins two runs, the alert created first takes the episode and the other is
//   `retracted` (naming the alert it joined; a webhook only if it had fired). An
//   episode that fired and is already over when first judged (buffered or late data)
//   emits `firing` then `resolved`, as live.
// - RestoreAlert continues an open episode from its opening window: replayed records of
//   that window and earlier ones are ignored for the rule and device. A restored energy
//   budget continues its day at the stored total: replayed running totals under it are
//   judged at it (they are states the alert was past before the crash).
// - After a restart a replay that starts inside an episode that resolved before the crash
//   (its first windows breach, nothing before them judged) continues the stored alert
//   whose span holds them (SetStoredAlertsLookup): one crossing stays one alert.
// - energy_budget reads 1d records, final or not: the day's alert fires as soon as the
//   running total passes budget_wh and resolves when the day's record is final.
// - absence is judged on processing time (`now`): no new events from a device for
//   `absent_for` opens a firing alert; the next record with new events resolves it,
//   annotated as a late backlog when its window ended before the alert opened.
// - Identity: alert:{device_id}:{rule_id}:{window_start} (RFC 3339 ms) of the opening
//   window (absence: the minute the alert opened).
// - Notifications (webhooks) are due on firing and on resolution/retraction of an alert
//   that fired, unless the alert is acked. A snooze mutes `firing` notifications only
//   (resolutions still go out, so a receiver never keeps an incident open forever); when
//   the snooze ends while the alert is still firing and not acked, Tick() emits one
//   reminder (event `firing`, `reminder: true`, its own webhook-id).
//
// Thread-compatible: the engine calls it from its one thread.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "alert/rule.h"
#include "model/aggregate_record.h"
#include "store/metadata_store.h"

namespace joule::alert {

struct DeviceInfo {
  std::string owner_id;
  std::string model;
  int64_t created_at_ns = 0;  // registration time (0: unknown)
};
using DeviceLookup = std::function<DeviceInfo(std::string_view device_id)>;
// The alert as the metadata store holds it (nullopt: none, or the store did not answer).
using StoredAlertLookup = std::function<std::optional<store::Alert>(const std::string& alert_id)>;
// The newest alerts the metadata store holds of one rule and device (newest opened_at
// first; a few dozen at most; empty: none, or the store did not answer).
using StoredAlertsLookup = std::function<std::vector<store::Alert>(const std::string& rule_id,
                                                                   const std::string& device_id)>;

// One transition of one alert.
struct AlertUpdate {
  store::Alert alert;      // state, times and json filled
  std::string event;       // "pending", "firing", "resolved", "retracted"
  bool notify = false;     // a webhook delivery is due
  int64_t trigger_ns = 0;  // processing time of the record or tick that caused it
  // A snooze-end reminder (not a state transition); its webhook-id is derived from
  // `delivery_key` instead of `event`.
  bool reminder = false;
  // Only the values of an open alert changed (a firing energy budget's day total grew):
  // stored and published on SSE, never a webhook, not counted as a transition.
  bool value_update = false;
  std::string delivery_key;  // event, or "firing/snooze_ended/<snoozed_until ns>"
  // Where the webhooks go: the rule's channels when the update was made (a deleted rule's
  // "resolved" goes where its "firing" went).
  std::vector<Channel> channels;
};

class Evaluator {
 public:
  explicit Evaluator(DeviceLookup lookup);

  // Replaces the rule set. State of rules that disappeared or changed is dropped; the
  // active (pending or firing) alerts of a rule that disappeared are resolved ("the rule was
  // deleted"), and so are those of a changed rule whose kind changed ("the rule's kind
  // changed"), that was disabled ("the rule was disabled") or that no longer covers the
  // alert's device ("the device left the rule's scope"); appended to `out` when it is not
  // null. The open alerts of a rule changed otherwise continue (matched by span).
  void SetRules(std::vector<Rule> rules, int64_t now = 0, std::vector<AlertUpdate>* out = nullptr);
  const std::vector<Rule>& rules() const { return rules_; }

  // The `now` arguments are processing time (CONTRACT §2 "Processing time"): they drive
  // evaluation (absence, a budget's day end). The times an alert shows — opened_at,
  // updated_at — and snoozes, which the API sets as times of day, use this wall clock
  // instead, so that a poller's updated_since=<its last poll> stays right after a clock step
  // (found by a black-box test: after a step of 1 h, updated_at was an hour off). Unset:
  // `now` for both.
  void SetWallClock(std::function<int64_t()> wall) { wall_ = std::move(wall); }

  // Seeds an active (pending or firing) alert from the store after a restart, so its
  // episode continues instead of opening a second alert. One whose rule was deleted,
  // disabled or given another kind while Joule was down (plain SQL) is not continued: it
  // is kept for EndAlertsOfChangedRules.
  void RestoreAlert(const store::Alert& alert, int64_t now);
  // Resolves the restored alerts whose rule was deleted, disabled or given another kind
  // while Joule was down, as SetRules resolves them live: "resolved: the rule was
  // deleted" / "…was disabled" / "the rule's kind changed", the body as last stored
  // (value, peak, firing window, the old kind), a webhook through the rule's current
  // channels for an alert that fired and is not acked (none for a deleted rule: its
  // channels went with it). Alerts of `unreadable` rules (rows that did not parse) are
  // left as they are; one whose rule is there after all (the rules were read only after
  // the restore) is restored now. Appends to `out` in alert id order; once.
  void EndAlertsOfChangedRules(int64_t now, const std::unordered_set<std::string>& unreadable,
                               std::vector<AlertUpdate>* out);
  // Consulted when an episode is derived for an alert id not known since start (after a
  // restart: a resolved episode re-derived from replayed or late records). An alert the
  // store holds keeps its opened_at; one it holds as resolved keeps its row untouched —
  // the re-derived pending/firing steps are dropped, and the resolution is emitted only
  // when it differs from the stored body (besides updated_at). Without it (the default),
  // a re-derived alert is new.
  void SetStoredAlertLookup(StoredAlertLookup lookup) { stored_lookup_ = std::move(lookup); }
  // Consulted once per (threshold or rate_of_change rule, device) since start, when the
  // first episode derived begins at the first windows judged (nothing before them shows
  // where it began): after a restart the processors replay from their checkpoint, which may
  // lie inside an episode that fired and resolved before the crash. A stored resolved
  // alert whose span (window_start up to resolved_window_start) holds that window is the
  // episode: it continues from the alert's opening window (as a restored open alert does),
  // so the replay re-derives that alert (SetStoredAlertLookup) instead of opening a second
  // one a few windows later. Without it, such an episode is new.
  void SetStoredAlertsLookup(StoredAlertsLookup lookup) { stored_alerts_ = std::move(lookup); }
  // While the processors replay the log after a restart (the engine: until they caught up),
  // a re-derived update of an alert the store holds as resolved that differs from the
  // stored row is held instead of emitted: the replay passes through the states the alert
  // went through before the crash (e.g. the first resolution, then the one a late update
  // moved it to) and, when it reaches the stored row, the held update is dropped — the row
  // is untouched. FlushHeld (the replay is over) emits what is still held: a real change.
  void SetReplaying(bool replaying) { replaying_ = replaying; }
  void FlushHeld(std::vector<AlertUpdate>* out);
  // User actions (ack, snooze); they gate notifications.
  void SetFlags(const std::string& alert_id, bool acked, std::optional<int64_t> snoozed_until);

  void OnRecord(const model::AggregateRecord& record, int64_t now, std::vector<AlertUpdate>* out);
  // Absence checks and snooze-end reminders. Call periodically (the engine: every second).
  void Tick(int64_t now, std::vector<AlertUpdate>* out);
  // Snooze-end reminders only (also part of Tick). The engine calls it before the
  // records of each batch so that a reminder is stored before any later write of the
  // same alert: after a crash, "snooze ended after the last stored write" then means
  // exactly "reminder not yet stored".
  void RemindSnoozeEnded(int64_t now, std::vector<AlertUpdate>* out);

  // Registered devices that absence rules scoped to an owner or a model cover (the
  // engine seeds them from the metadata store). A device never seen since start counts
  // as last seen at max(created_at_ns, start), so an absence rule fires for it
  // `absent_for` after that even if it never reports. `info` is used for such devices
  // instead of the lookup (kept current by the engine on device changes).
  void RegisterDevice(const std::string& device_id, const DeviceInfo& info, int64_t created_at_ns);
  // Consulted before an absence alert fires: when the processors last took in an event of
  // the device (processing time; nullopt: unknown). The evaluator sees no record while no
  // rule exists (AlertEngine::Offer drops them), so a device that reported then would be
  // judged silent since its registration, or since the last rule went; a later time found
  // here counts as its last activity instead (found by a black-box test: the first absence
  // rule fired at once for devices that kept reporting, "it has never reported"). Asked
  // only for a device about to fire, so it costs nothing per record.
  using ActivityLookup = std::function<std::optional<int64_t>(const std::string& device_id)>;
  void SetActivityLookup(ActivityLookup lookup) { activity_lookup_ = std::move(lookup); }
  void ForgetDevice(const std::string& device_id);
  // A device's metadata changed (`info`) or it was deleted (nullopt): the active alerts of
  // rules that no longer cover it resolve ("resolved: the device left the rule's scope" /
  // "resolved: the device was deleted"; a webhook for one that fired), and those rules'
  // state for the device is dropped; a deleted device is not judged again (until it is
  // registered again: DeviceChanged with its info). Otherwise they would stay open for ever:
  // records of a device out of scope are not judged, so nothing could resolve them.
  // `certain`: nullopt means deleted (a deletion notification). A sweep that finds no row
  // (after a restart or missed notifications) passes false: for an admin rule scoped to a
  // device id that may be a device never registered (auth.mode other than required), so
  // such alerts are left, and the device is not marked deleted.
  void DeviceChanged(const std::string& device_id, const std::optional<DeviceInfo>& info,
                     int64_t now, std::vector<AlertUpdate>* out, bool certain = true);
  // The devices with an active (pending or firing) alert (for such a sweep).
  std::vector<std::string> DevicesWithOpenAlerts() const;
  void ClearRegisteredDevices() { registered_.clear(); }
  size_t registered_count() const { return registered_.size(); }

 private:
  struct Registered {
    DeviceInfo info;
    int64_t created_at_ns = 0;
  };
  struct Verdict {
    int64_t end = 0;
    uint64_t version = 0;
    bool final = false;
    std::optional<double> value;
  };
  struct Episode {
    int64_t open_ws = 0, open_we = 0;
    int run = 0;
    bool firing = false;
    bool closed = false;
    int64_t fired_ws = 0;
    int64_t last_we = 0;      // end of the last window in the episode
    int64_t resolved_ws = 0;  // closed only
    double value = 0;         // value of the latest window in the episode
    double peak = 0;
    double fired_value = 0;  // value of the window where it started firing
  };
  struct Machine {
    std::optional<Episode> cur;
    int64_t cooldown_until = INT64_MIN;
    int64_t prev_end = INT64_MIN;
    std::optional<double> prev_value;
  };
  struct Known {
    std::string id;
    int64_t open_ws = 0, open_we = 0;
    int64_t end_we = INT64_MAX;  // INT64_MAX while active
    store::AlertState state = store::AlertState::kPending;
    bool fired = false;
    int64_t opened_at = 0;
    int64_t updated_ns = 0;  // updated_at of its latest update
    double value = 0;
    std::optional<Episode> last;  // the episode as last reported (for reminders)
    std::string annotation;       // as last reported (kept by an update of values only)
    // How often a late update reopened the alert after it fired and resolved; part of
    // the webhook-ids of later transitions (a reopened alert's "firing" is news, not a
    // duplicate of the first one) and of the body (`reopened`).
    int cycle = 0;
    bool retracted = false;
    int resolution_updates = 0;  // "resolved" updates after the first (webhook-ids)  // its episode
                                 // vanished (until an episode matches it again)
    // Absence: the end of the device's newest window with events when the alert opened
    // (0: none seen); stored in the alert body as `last_event_window_end`.
    int64_t last_event_end = 0;
    // The store's row of a resolved alert whose episode is being re-derived (after a
    // restart), until the derivation reaches a resolution: the steps before it are what
    // the row is already past (dropped, see SetStoredAlertLookup).
    std::optional<store::Alert> behind_store;
    // While replaying (SetReplaying): the latest re-derived update of a behind_store alert
    // that differs from the stored row, until the replay reaches the row or ends.
    std::optional<AlertUpdate> held;
    // The owner_id last written; kept (not the device's current owner) when `keep_owner`
    // — the resolution of an alert whose device moved to another owner or was deleted
    // stays with the owner it belonged to.
    std::string owner_id;
    bool keep_owner = false;
    // The annotation of its next transition: an alert ended when the rule's state for the
    // device was dropped, whose episode came up again (RememberDropped).
    std::string reopen_note;
  };
  struct Track {
    std::map<int64_t, Verdict> windows;
    Machine base;
    // Windows starting before this are part of `base` (a restored alert's opening window
    // and what precedes it): records for them are ignored.
    int64_t floor = INT64_MIN;
    // The first window judged since the track began (or its rule changed): verdicts of
    // earlier windows are not all known, so episodes before it are not re-derived.
    std::optional<int64_t> judged_from;
    // Whether the start of the first episode was checked against the store
    // (ContinueStoredEpisode; once per track).
    bool start_checked = false;
    // energy_budget: the local day of a restored open alert and its stored day total.
    // The processors replay the day's records after their checkpoint, whose running totals
    // start below the stored one (states the alert was past before the crash): until a
    // record reaches it, an open record of that day is judged at the stored total.
    std::optional<int64_t> restored_day;
    double restored_total = 0;
    std::vector<Known> known;
    // absence
    int64_t last_seen_ns = 0;  // processing time of the latest new events
    int64_t absence_cooldown_until = INT64_MIN;
    int64_t last_absence_ws = INT64_MIN;  // the id minute of the latest absence episode
  };
  struct DeviceActivity {
    int64_t last_seen_ns = 0;            // processing time of the latest record with new events
    int64_t last_event_end_ns = 0;       // end of the newest window with events
    std::map<int64_t, uint64_t> counts;  // recent base windows: start → count
  };
  // Per device, from the absence alerts restored after a restart: windows ending at or
  // before this had been seen before the restart (their records, re-emitted by the
  // restored processors, are not new activity).
  std::unordered_map<std::string, int64_t> seen_before_restart_;
  // Restored alerts whose rule was deleted, disabled or changed kind while Joule was
  // down (EndAlertsOfChangedRules judges them again).
  std::vector<store::Alert> ended_at_restore_;
  struct Flags {
    bool acked = false;
    std::optional<int64_t> snoozed_until;
    // The snooze whose end was handled (reminder sent or not due); INT64_MIN: none.
    int64_t handled_until = INT64_MIN;
  };

  static std::string TrackKey(std::string_view rule_id, std::string_view device_id);
  const Rule* FindRule(std::string_view id) const;
  // Why a restored alert ends with the current rules ("" = it continues): its rule was
  // deleted, changed kind (its body's kind) or is disabled.
  std::string EndReason(const store::Alert& alert) const;
  // Whether `device_id` is in the rule's scope (RuleCovers with the device's metadata).
  bool Covers(const Rule& rule, const std::string& device_id) const;
  void Step(const Rule& rule, Machine& m, int64_t ws, const Verdict& v,
            std::vector<Episode>* closed) const;
  void Recompute(const Rule& rule, const std::string& device_id, Track& t, int64_t now,
                 std::vector<AlertUpdate>* out);
  // SetStoredAlertsLookup: a first episode that begins at the track's first windows and
  // lies inside a stored resolved alert's span continues that alert's episode (`t.base`).
  void ContinueStoredEpisode(const Rule& rule, const std::string& device_id, Track& t);
  // A new Known for an episode: takes over what the store holds of its id.
  void AdoptStored(Known& k);
  // Drops the updates in out[first..] that re-derive what the store already holds.
  void DropWhatTheStoreHolds(Track& t, std::vector<AlertUpdate>* out, size_t first);
  void OnAbsenceActivity(const Rule& rule, const std::string& device_id, Track& t,
                         const model::AggregateRecord& record, int64_t now,
                         std::vector<AlertUpdate>* out);
  // `key_suffix` distinguishes a second notification of the same event (an updated
  // resolution) in the webhook-id.
  AlertUpdate Make(const Rule& rule, const std::string& device_id, Known& k, std::string event,
                   int64_t now, const Episode* e, std::string annotation, bool reminder = false,
                   std::string_view key_suffix = {});

  DeviceLookup lookup_;
  StoredAlertLookup stored_lookup_;
  ActivityLookup activity_lookup_;
  StoredAlertsLookup stored_alerts_;
  std::function<int64_t()> wall_;  // SetWallClock
  int64_t Wall(int64_t now) const { return wall_ ? wall_() : now; }
  std::vector<Rule> rules_;
  // rules_ indexed (IndexRules, after every change of rules_): by id, and the rules a
  // record of a device can concern — by the device (scope.device_id), by the owner (an
  // owner's rule, or scope.owner_id), and the rest (an admin rule scoped by model) — as
  // positions in rules_. Found by a black-box test: every record went through every rule
  // of every owner, and a device change through every (rule, device) pair with a linear
  // FindRule each (64 ms per change at 10k devices and 6k rules, the alert queue
  // overflowed and crossings were never alerted).
  std::unordered_map<std::string, size_t> rule_by_id_;
  std::unordered_map<std::string, std::vector<size_t>> rules_by_device_;
  std::unordered_map<std::string, std::vector<size_t>> rules_by_owner_;
  std::vector<size_t> rules_unscoped_;
  std::vector<size_t> candidates_;  // OnRecord's scratch
  void IndexRules();
  std::unordered_map<std::string, Track> tracks_;  // by rule id + '\n' + device id
  std::unordered_map<std::string, DeviceActivity> activity_;
  std::unordered_map<std::string, Flags> flags_;
  std::unordered_map<std::string, Registered> registered_;
  std::unordered_set<std::string> deleted_;  // devices deleted since start (DeviceChanged)
  // Alerts that SetRules or DeviceChanged ended when they dropped the rule's state for the
  // device (the rule disabled, its kind or scope changed; the device moved or was deleted),
  // by id. When the rule judges the device again (scoped back, enabled again) and an
  // episode with the same id comes up — an energy budget's id is its local day, so the
  // next record over budget that day — it is a new crossing: the alert reopens as a new
  // cycle (`reopened`, its own webhook-ids) instead of being taken for a re-derivation of
  // the stored resolved row, whose steps AdoptStored drops (found by a black-box test: a
  // budget scoped back or enabled again never fired again that day). Kept two days after
  // the drop (a budget's day is over by then; Tick prunes); not kept across a restart.
  struct Dropped {
    int64_t opened_at = 0;
    int64_t updated_ns = 0;
    bool fired = false;
    int cycle = 0;
    std::string note;  // the annotation of the reopening transition
    int64_t dropped_ns = 0;
  };
  std::unordered_map<std::string, Dropped> dropped_;
  void RememberDropped(const Known& k, std::string_view ended, int64_t now);
  int64_t started_ns_ = 0;
  bool replaying_ = false;  // SetReplaying
  int64_t last_updated_ns_ = 0;
};

// "alert:{device_id}:{rule_id}:{window_start}".
std::string AlertId(std::string_view device_id, std::string_view rule_id, int64_t window_start_ns);

}  // namespace joule::alert

#include "alert/evaluator.h"

#include <fmt/format.h>
#include <simdjson.h>

#include <algorithm>

#include "common/clock.h"
#include "common/json_writer.h"
#include "common/time_format.h"

namespace joule::alert {
namespace {

constexpr size_t kKeptWindows = 64;  // verdicts kept beyond for_windows (late updates)
constexpr int64_t kAbsenceIdWindow = kNanosPerMinute;

bool Active(store::AlertState s) { return s != store::AlertState::kResolved; }

// The body's resolved_window_start ("" without one).
std::string_view ResolvedWindow(std::string_view json) {
  constexpr std::string_view kKey = "\"resolved_window_start\":\"";
  const size_t at = json.find(kKey);
  if (at == std::string_view::npos) return {};
  const size_t from = at + kKey.size();
  return json.substr(from, json.find('"', from) - from);
}

}  // namespace

std::string AlertId(std::string_view device_id, std::string_view rule_id, int64_t ws) {
  return fmt::format("alert:{}:{}:{}", device_id, rule_id, FormatRfc3339Millis(ws));
}

Evaluator::Evaluator(DeviceLookup lookup) : lookup_(std::move(lookup)) {}

std::string Evaluator::TrackKey(std::string_view rule_id, std::string_view device_id) {
  std::string k(rule_id);
  k += '\n';
  k += device_id;
  return k;
}

const Rule* Evaluator::FindRule(std::string_view id) const {
  auto it = rule_by_id_.find(std::string(id));
  return it == rule_by_id_.end() ? nullptr : &rules_[it->second];
}

void Evaluator::IndexRules() {
  rule_by_id_.clear();
  rules_by_device_.clear();
  rules_by_owner_.clear();
  rules_unscoped_.clear();
  for (size_t i = 0; i < rules_.size(); ++i) {
    const Rule& r = rules_[i];
    rule_by_id_.emplace(r.id, i);
    if (!r.scope.device_id.empty()) {
      rules_by_device_[r.scope.device_id].push_back(i);
    } else if (!r.owner_id.empty()) {
      rules_by_owner_[r.owner_id].push_back(i);  // only ever that owner's devices
    } else if (!r.scope.owner_id.empty()) {
      rules_by_owner_[r.scope.owner_id].push_back(i);
    } else {
      rules_unscoped_.push_back(i);
    }
  }
}

bool Evaluator::Covers(const Rule& rule, const std::string& device_id) const {
  if (!rule.scope.device_id.empty()) {
    if (rule.scope.device_id != device_id) return false;
    // An admin rule scoped to a device id judges it registered or not.
    if (rule.owner_id.empty()) return true;
  }
  const DeviceInfo info = lookup_ ? lookup_(device_id) : DeviceInfo{};
  return RuleCovers(rule, device_id, info.owner_id, info.model);
}

void Evaluator::SetRules(std::vector<Rule> rules, int64_t now, std::vector<AlertUpdate>* out) {
  // Keep the tracks of rules that did not change (compared by canonical JSON).
  std::unordered_map<std::string, std::string> before;
  for (const Rule& r : rules_) before[r.id] = RuleToJson(r, true);
  std::unordered_map<std::string, bool> keep;
  std::unordered_map<std::string, const Rule*> after;
  for (const Rule& r : rules) {
    auto it = before.find(r.id);
    keep[r.id] = it != before.end() && it->second == RuleToJson(r, true);
    after[r.id] = &r;
  }
  const size_t first_update = out != nullptr ? out->size() : 0;
  for (auto it = tracks_.begin(); it != tracks_.end();) {
    std::string rule_id = it->first.substr(0, it->first.find('\n'));
    const std::string device_id = it->first.substr(it->first.find('\n') + 1);
    auto k = keep.find(rule_id);
    // Why the rule's open alerts for this device end ("" = they continue).
    std::string ended;
    if (k == keep.end()) {
      // A deleted rule: its open alerts end with it (they would stay open for ever).
      ended = "resolved: the rule was deleted";
    } else if (!k->second) {
      // A change that makes the open alerts meaningless ends them too (found by a
      // black-box test: a disabled rule's alert stayed firing for ever, one of a rule
      // scoped to another device stayed firing until a restart, and a kind change
      // rewrote a threshold alert as an absence alert, resolved as a "backlog").
      const Rule* old = FindRule(rule_id);
      const Rule& now_rule = *after[rule_id];
      if (old != nullptr && old->kind != now_rule.kind) {
        ended = "resolved: the rule's kind changed";
      } else if (old != nullptr && old->enabled && !now_rule.enabled) {
        ended = "resolved: the rule was disabled";
      } else if (old != nullptr && !Covers(now_rule, device_id)) {
        ended = "resolved: the device left the rule's scope";
      }
    }
    if (!ended.empty()) {
      const Rule* old = out != nullptr ? FindRule(rule_id) : nullptr;
      for (Known& kn : it->second.known) {
        if (old == nullptr || !Active(kn.state)) continue;
        if (kn.state == store::AlertState::kFiring) kn.fired = true;
        kn.state = store::AlertState::kResolved;
        kn.end_we = kn.open_we;
        // The episode as last reported (value, peak, firing window): the body says what
        // fired (found by a black-box re-test: a deleted rule's "resolved" dropped them).
        // The old rule describes it (its kind) and its channels got its "firing".
        const std::optional<Episode> last = kn.last;
        out->push_back(Make(*old, device_id, kn, "resolved", now, last ? &*last : nullptr, ended));
        RememberDropped(kn, ended, now);
      }
      it = tracks_.erase(it);
    } else {
      if (!k->second) {
        // Changed rule: verdicts are stale; the open alerts continue (matched by span).
        it->second.windows.clear();
        it->second.base = Machine{};
        it->second.judged_from.reset();
        for (const Known& kn : it->second.known) {
          if (Active(kn.state)) {
            // The episode as last reported (value, peak, firing window), open again.
            Episode e = kn.last.value_or(Episode{});
            e.open_ws = kn.open_ws;
            e.open_we = kn.open_we;
            e.last_we = std::max(e.last_we, kn.open_we);
            e.firing = kn.state == store::AlertState::kFiring;
            e.closed = false;
            if (e.firing && e.fired_ws == 0) e.fired_ws = kn.open_ws;
            e.run = e.firing ? 1 << 20 : 1;
            it->second.base.cur = e;
          }
        }
      }
      ++it;
    }
  }
  // (In alert id order, whatever the order of the tracks.)
  if (out != nullptr) {
    std::sort(out->begin() + static_cast<ptrdiff_t>(first_update), out->end(),
              [](const AlertUpdate& a, const AlertUpdate& b) { return a.alert.id < b.alert.id; });
  }
  rules_ = std::move(rules);
  IndexRules();
}

void Evaluator::RestoreAlert(const store::Alert& alert, int64_t now) {
  if (!Active(alert.state)) return;
  simdjson::dom::parser parser;
  simdjson::dom::element body;
  const bool parsed = parser.parse(alert.json).get(body) == simdjson::SUCCESS;
  // A rule deleted, disabled or given another kind in plain SQL while Joule was down ends
  // the alert, as the same change through the API does (SetRules); until session 31 such
  // an alert was restored and never judged again (deleted: not even restored), and stayed
  // open for ever.
  if (!EndReason(alert).empty()) {
    ended_at_restore_.push_back(alert);
    return;
  }
  const Rule* rule = FindRule(alert.rule_id);
  // The opening window is the id's suffix: the last 24 characters (RFC 3339 ms, UTC).
  if (alert.id.size() < 24) return;
  int64_t ws = 0;
  if (!ParseRfc3339(std::string_view(alert.id).substr(alert.id.size() - 24), &ws)) return;
  Track& t = tracks_[TrackKey(alert.rule_id, alert.device_id)];
  Known k;
  k.id = alert.id;
  k.open_ws = ws;
  k.open_we = ws + (rule->resolution == model::Resolution::kHour ? kNanosPerHour : kNanosPerMinute);
  k.state = alert.state;
  k.fired = alert.state == store::AlertState::kFiring;
  k.opened_at = alert.opened_at_ns;
  k.updated_ns = alert.updated_at_ns;
  k.owner_id = alert.owner_id;
  if (rule->kind == RuleKind::kAbsence) t.last_seen_ns = now;
  // The stored body carries the opening window's end, the episode's value, peak and
  // firing window (reminders and the resolution are built from them) and how often the
  // alert was reopened (part of the webhook-ids of its later transitions).
  Episode e;
  e.open_ws = ws;
  e.firing = k.fired;
  e.run = k.fired ? rule->for_windows : 1;
  bool has_value = false;
  if (parsed) {
    std::string_view text;
    int64_t ns = 0;
    if (body["window_end"].get_string().get(text) == simdjson::SUCCESS && ParseRfc3339(text, &ns) &&
        ns > ws) {
      k.open_we = ns;
    }
    double v = 0;
    if (body["value"].get_double().get(v) == simdjson::SUCCESS) {
      e.value = e.fired_value = v;
      has_value = true;
    }
    if (body["peak"].get_double().get(v) == simdjson::SUCCESS) e.peak = v;
    if (body["fired_window_start"].get_string().get(text) == simdjson::SUCCESS &&
        ParseRfc3339(text, &ns)) {
      e.fired_ws = ns;
    }
    int64_t reopened = 0;
    if (body["reopened"].get_int64().get(reopened) == simdjson::SUCCESS) {
      k.cycle = static_cast<int>(reopened);
    }
    if (rule->kind == RuleKind::kAbsence &&
        body["last_event_window_end"].get_string().get(text) == simdjson::SUCCESS &&
        ParseRfc3339(text, &ns)) {
      k.last_event_end = ns;
      int64_t& seen = seen_before_restart_[alert.device_id];
      seen = std::max(seen, ns);
    }
  }
  e.open_we = e.last_we = k.open_we;
  if (e.firing && e.fired_ws == 0) e.fired_ws = ws;
  if (has_value) k.last = e;
  t.known.push_back(k);
  if (rule->kind == RuleKind::kThreshold || rule->kind == RuleKind::kRateOfChange) {
    // The episode continues from its opening window. The restored processors replay the
    // records after their checkpoint, possibly windows before that one (judged before the
    // crash: the alert opened after them): they are part of the restored state, not
    // verdicts that could close it (found by a black-box test: a kill -9 just after
    // firing sent a "resolved" for the window before the alert's start).
    t.base.cur = e;
    t.base.prev_end = e.open_we;
    t.floor = std::max(t.floor, e.open_we);
  }
  if (rule->kind == RuleKind::kEnergyBudget && has_value) {
    // The day continues at its stored total. The restored processors replay the day's
    // records after their checkpoint: a checkpoint taken before the total passed the
    // budget replays running totals under it first, which would retract the alert and
    // then reopen it — two false webhooks (found by a black-box test, kill -9).
    t.restored_day = ws;
    t.restored_total = e.value;
  }
  Flags f{alert.acked, alert.snoozed_until_ns};
  // A snooze that ended before the alert's last stored write was handled before the
  // restart (the reminder is such a write); one that ended later is still due.
  if (alert.snoozed_until_ns && *alert.snoozed_until_ns <= alert.updated_at_ns) {
    f.handled_until = *alert.snoozed_until_ns;
  }
  flags_[alert.id] = f;
}

namespace {

// The stored body of an alert, resolved: event and state "resolved", the annotation, the
// flags and updated_at as given; every other field as last stored. `reopened` gets the
// body's count (0 if none).
std::string ResolvedBody(const store::Alert& a, std::string_view annotation, int64_t* reopened) {
  JsonWriter w;
  static constexpr std::string_view kReplaced[] = {"event",     "state",     "annotation",
                                                   "reminder",  "acked",     "snoozed_until",
                                                   "opened_at", "updated_at"};
  *reopened = 0;
  simdjson::dom::parser parser;
  simdjson::dom::object body;
  w.BeginObject();
  if (parser.parse(a.json).get(body) == simdjson::SUCCESS) {
    for (auto [key, value] : body) {
      if (key == "reopened" && value.get_int64().get(*reopened) != simdjson::SUCCESS) *reopened = 0;
      if (std::find(std::begin(kReplaced), std::end(kReplaced), key) != std::end(kReplaced)) {
        if (key == "event" || key == "state") {
          w.Key(key);
          w.String("resolved");
        }
        continue;
      }
      w.Key(key);
      w.Raw(simdjson::minify(value));
    }
  } else {
    // Not stored by Joule (a row written by hand): the row's own columns.
    w.Key("id");
    w.String(a.id);
    w.Key("event");
    w.String("resolved");
    w.Key("state");
    w.String("resolved");
    w.Key("rule_id");
    w.String(a.rule_id);
    w.Key("device_id");
    w.String(a.device_id);
    w.Key("owner_id");
    w.String(a.owner_id);
  }
  w.Key("annotation");
  w.String(annotation);
  w.Key("acked");
  w.Bool(a.acked);
  w.Key("snoozed_until");
  if (a.snoozed_until_ns) {
    w.String(FormatRfc3339Millis(*a.snoozed_until_ns));
  } else {
    w.Null();
  }
  w.Key("opened_at");
  w.String(FormatRfc3339Millis(a.opened_at_ns));
  w.Key("updated_at");
  w.String(FormatRfc3339Millis(a.updated_at_ns));
  w.EndObject();
  return w.Take();
}

}  // namespace

std::string Evaluator::EndReason(const store::Alert& alert) const {
  const Rule* rule = FindRule(alert.rule_id);
  if (rule == nullptr) return "resolved: the rule was deleted";
  simdjson::dom::parser parser;
  simdjson::dom::element body;
  std::string_view stored_kind;
  if (parser.parse(alert.json).get(body) == simdjson::SUCCESS &&
      body["kind"].get_string().get(stored_kind) == simdjson::SUCCESS &&
      stored_kind != RuleKindName(rule->kind)) {
    return "resolved: the rule's kind changed";
  }
  if (!rule->enabled) return "resolved: the rule was disabled";
  return "";
}

void Evaluator::EndAlertsOfChangedRules(int64_t now,
                                        const std::unordered_set<std::string>& unreadable,
                                        std::vector<AlertUpdate>* out) {
  const size_t first_update = out->size();
  std::vector<store::Alert> ended;
  ended.swap(ended_at_restore_);
  for (store::Alert& alert : ended) {
    if (unreadable.count(alert.rule_id) != 0) continue;
    // Judged again on the rules as they are now: read after the restore when they could
    // not be read before it, an alert whose rule exists after all continues.
    const std::string why = EndReason(alert);
    if (why.empty()) {
      RestoreAlert(alert, now);
      continue;
    }
    AlertUpdate u;
    u.alert = std::move(alert);
    store::Alert& a = u.alert;
    const bool fired = a.state == store::AlertState::kFiring;
    a.state = store::AlertState::kResolved;
    last_updated_ns_ =
        std::max({Wall(now), last_updated_ns_ + 1, a.updated_at_ns + kNanosPerMilli});
    a.updated_at_ns = last_updated_ns_;
    int64_t reopened = 0;
    a.json = ResolvedBody(a, why, &reopened);
    u.event = "resolved";
    u.trigger_ns = now;
    u.delivery_key = reopened > 0 ? fmt::format("resolved/reopened/{}", reopened) : "resolved";
    if (const Rule* rule = FindRule(a.rule_id)) u.channels = rule->channels;
    u.notify = fired && !a.acked && !u.channels.empty();
    out->push_back(std::move(u));
  }
  ended_at_restore_.clear();  // (RestoreAlert above adds none: each rule is there now)
  std::sort(out->begin() + static_cast<ptrdiff_t>(first_update), out->end(),
            [](const AlertUpdate& a, const AlertUpdate& b) { return a.alert.id < b.alert.id; });
}

void Evaluator::SetFlags(const std::string& alert_id, bool acked,
                         std::optional<int64_t> snoozed_until) {
  Flags& f = flags_[alert_id];
  f.acked = acked;
  f.snoozed_until = snoozed_until;
}

void Evaluator::RemindSnoozeEnded(int64_t now, std::vector<AlertUpdate>* out) {
  for (auto it = flags_.begin(); it != flags_.end();) {
    Flags& f = it->second;
    const std::string& id = it->first;
    if (!f.snoozed_until || *f.snoozed_until > Wall(now) || f.handled_until == *f.snoozed_until) {
      ++it;
      continue;
    }
    f.handled_until = *f.snoozed_until;
    bool active = false;
    for (auto& [key, t] : tracks_) {
      for (Known& k : t.known) {
        if (k.id != id || !Active(k.state)) continue;
        active = true;
        if (f.acked || k.state != store::AlertState::kFiring) break;
        const size_t nl = key.find('\n');
        const Rule* rule = FindRule(std::string_view(key).substr(0, nl));
        if (!rule) break;
        out->push_back(Make(*rule, key.substr(nl + 1), k, "firing", now,
                            k.last ? &*k.last : nullptr,
                            fmt::format("reminder: the snooze until {} ended and the alert is "
                                        "still firing",
                                        FormatRfc3339Millis(*f.snoozed_until)),
                            true));
        break;
      }
      if (active) break;
    }
    // Flags of alerts that are over are not needed any more.
    it = active ? std::next(it) : flags_.erase(it);
  }
}

void Evaluator::Step(const Rule& rule, Machine& m, int64_t ws, const Verdict& v,
                     std::vector<Episode>* closed) const {
  // A window at or before the start of an episode carried over in the base state (a
  // restored alert, the open alert of a changed rule) cannot extend or close it: closing
  // it there would resolve the alert at a window before it opened.
  if (rule.kind != RuleKind::kEnergyBudget && m.cur && ws <= m.cur->open_ws) return;
  std::optional<double> value = v.value;
  if (rule.kind == RuleKind::kRateOfChange) {
    value = (v.value && m.prev_value && m.prev_end == ws)
                ? std::optional<double>(*v.value - *m.prev_value)
                : std::nullopt;
  }
  const bool adjacent = m.prev_end == ws;
  m.prev_end = v.end;
  m.prev_value = v.value;

  if (rule.kind == RuleKind::kEnergyBudget) {
    // Each local day on its own: firing while the day is open and over budget.
    if (value && *value > rule.budget_wh) {
      Episode e;
      e.open_ws = ws;
      e.open_we = v.end;
      e.firing = true;
      e.fired_ws = ws;
      e.last_we = v.end;
      e.value = e.peak = e.fired_value = *value;
      if (v.final) {
        e.closed = true;
        e.resolved_ws = ws;
        closed->push_back(e);
      } else {
        m.cur = e;
      }
    } else {
      m.cur.reset();
    }
    return;
  }

  const bool breach = value && Compare(*value, rule.op, rule.threshold);
  const bool holds = value && Compare(*value, rule.op, rule.ClearLevel());
  if (m.cur) {
    Episode& e = *m.cur;
    if (!e.firing) {
      if (breach && adjacent) {
        e.run++;
        e.last_we = v.end;
        e.value = *value;
        e.peak = std::max(e.peak, *value);
        if (e.run >= rule.for_windows) {
          e.firing = true;
          e.fired_ws = ws;
          e.fired_value = *value;
        }
      } else {
        e.closed = true;
        e.resolved_ws = ws;
        closed->push_back(e);
        m.cur.reset();
      }
    } else if (value && !holds) {
      e.closed = true;
      e.resolved_ws = ws;
      e.value = *value;
      closed->push_back(e);
      m.cur.reset();
      m.cooldown_until = v.end + rule.cooldown_ns;
      return;  // the clearing window does not open a new alert
    } else {
      e.last_we = v.end;
      if (value) {
        e.value = *value;
        e.peak = std::max(e.peak, *value);
      }
    }
  }
  if (!m.cur && breach && ws >= m.cooldown_until) {
    Episode e;
    e.open_ws = ws;
    e.open_we = v.end;
    e.last_we = v.end;
    e.run = 1;
    e.value = e.peak = e.fired_value = *value;
    if (rule.for_windows <= 1) {
      e.firing = true;
      e.fired_ws = ws;
    }
    m.cur = e;
  }
}

AlertUpdate Evaluator::Make(const Rule& rule, const std::string& device_id, Known& k,
                            std::string event, int64_t now, const Episode* e,
                            std::string annotation, bool reminder, std::string_view key_suffix) {
  AlertUpdate u;
  if (e) k.last = *e;
  if (!reminder && !k.reopen_note.empty()) {
    if (annotation.empty()) annotation = k.reopen_note;
    k.reopen_note.clear();
  }
  if (!reminder) k.annotation = annotation;
  DeviceInfo info = lookup_ ? lookup_(device_id) : DeviceInfo{};
  store::Alert& a = u.alert;
  a.id = k.id;
  a.rule_id = rule.id;
  a.device_id = device_id;
  a.owner_id = k.keep_owner ? k.owner_id : info.owner_id.empty() ? rule.owner_id : info.owner_id;
  k.owner_id = a.owner_id;
  a.state = k.state;
  a.opened_at_ns = k.opened_at;
  // Store writes keep the newest updated_at: make it strictly increasing.
  // And one alert's successive updates at least 1 ms apart: bodies carry updated_at in
  // milliseconds, and receivers order an alert's events by it (a "firing" and a
  // "resolved" made by one record had the same).
  last_updated_ns_ = std::max({Wall(now), last_updated_ns_ + 1, k.updated_ns + kNanosPerMilli});
  a.updated_at_ns = k.updated_ns = last_updated_ns_;
  auto f = flags_.find(k.id);
  if (f != flags_.end()) {
    a.acked = f->second.acked;
    a.snoozed_until_ns = f->second.snoozed_until;
  }
  u.event = std::move(event);
  u.trigger_ns = now;
  u.reminder = reminder;
  if (reminder && a.snoozed_until_ns) {
    u.delivery_key = fmt::format("{}/snooze_ended/{}", u.event, *a.snoozed_until_ns);
  } else {
    u.delivery_key = u.event;
    if (k.cycle > 0) u.delivery_key += fmt::format("/reopened/{}", k.cycle);
    if (!key_suffix.empty()) fmt::format_to(std::back_inserter(u.delivery_key), "/{}", key_suffix);
  }
  u.channels = rule.channels;
  bool deliverable =
      u.event == "firing" || (k.fired && (u.event == "resolved" || u.event == "retracted"));
  // A snooze mutes `firing` only: the resolution of an alert that fired is always news.
  bool muted =
      a.acked || (u.event == "firing" && a.snoozed_until_ns && *a.snoozed_until_ns > Wall(now));
  u.notify = deliverable && !muted && !rule.channels.empty();

  JsonWriter w;
  w.BeginObject();
  w.Key("id");
  w.String(a.id);
  w.Key("event");
  w.String(u.event);
  w.Key("state");
  w.String(store::AlertStateName(a.state));
  w.Key("rule_id");
  w.String(rule.id);
  if (!rule.name.empty()) {
    w.Key("rule_name");
    w.String(rule.name);
  }
  w.Key("kind");
  w.String(RuleKindName(rule.kind));
  w.Key("severity");
  w.String(rule.severity);
  w.Key("device_id");
  w.String(device_id);
  w.Key("owner_id");
  w.String(a.owner_id);
  w.Key("window_start");
  w.String(FormatRfc3339Millis(k.open_ws));
  if (rule.kind != RuleKind::kAbsence) {
    w.Key("window_end");
    w.String(FormatRfc3339Millis(k.open_we));
    w.Key("resolution");
    w.String(RuleResolutionName(rule.resolution));
    w.Key("metric");
    w.String(rule.metric);
    w.Key("aggregate");
    w.String(AggregateName(rule.aggregate));
  }
  if (rule.kind == RuleKind::kThreshold || rule.kind == RuleKind::kRateOfChange) {
    w.Key("op");
    w.String(CompareOpName(rule.op));
    w.Key("threshold");
    w.Double(rule.threshold);
    w.Key("clear_threshold");
    w.Double(rule.ClearLevel());
    w.Key("for_windows");
    w.Int(rule.for_windows);
  }
  if (rule.kind == RuleKind::kEnergyBudget) {
    w.Key("budget_wh");
    w.Double(rule.budget_wh);
  }
  if (rule.kind == RuleKind::kAbsence) {
    w.Key("absent_for_s");
    w.Int(rule.absent_for_ns / kNanosPerSecond);
    if (k.last_event_end > 0) {
      w.Key("last_event_window_end");
      w.String(FormatRfc3339Millis(k.last_event_end));
    }
  }
  if (e) {
    w.Key("value");
    w.Double(e->value);
    w.Key("peak");
    w.Double(e->peak);
    if (e->firing || e->fired_ws) {
      w.Key("fired_window_start");
      w.String(FormatRfc3339Millis(e->fired_ws));
    }
    if (e->closed) {
      w.Key("resolved_window_start");
      w.String(FormatRfc3339Millis(e->resolved_ws));
    }
  }
  if (!annotation.empty()) {
    w.Key("annotation");
    w.String(annotation);
  }
  if (reminder) {
    w.Key("reminder");
    w.Bool(true);
  }
  if (k.cycle > 0) {
    w.Key("reopened");
    w.Int(k.cycle);
  }
  w.Key("acked");
  w.Bool(a.acked);
  w.Key("snoozed_until");
  if (a.snoozed_until_ns)
    w.String(FormatRfc3339Millis(*a.snoozed_until_ns));
  else
    w.Null();
  w.Key("opened_at");
  w.String(FormatRfc3339Millis(a.opened_at_ns));
  w.Key("updated_at");
  w.String(FormatRfc3339Millis(a.updated_at_ns));
  w.EndObject();
  a.json = w.Take();
  return u;
}

void Evaluator::Recompute(const Rule& rule, const std::string& device_id, Track& t, int64_t now,
                          std::vector<AlertUpdate>* out) {
  // Old verdicts leave the window map through the base machine (they can no longer change).
  const size_t cap = static_cast<size_t>(rule.for_windows) + kKeptWindows;
  while (t.windows.size() > cap) {
    auto first = t.windows.begin();
    std::vector<Episode> ignored;
    Step(rule, t.base, first->first, first->second, &ignored);
    t.windows.erase(first);
  }
  ContinueStoredEpisode(rule, device_id, t);
  Machine m = t.base;
  std::vector<Episode> episodes;
  for (const auto& [ws, v] : t.windows) Step(rule, m, ws, v, &episodes);
  if (m.cur) episodes.push_back(*m.cur);

  const size_t first_update = out->size();
  std::vector<bool> matched(t.known.size(), false);
  // Whether a known alert's span overlaps an episode's (the matching rule).
  auto overlaps = [](const Known& k, const Episode& e) {
    const int64_t e_end = e.closed ? e.last_we : INT64_MAX;
    return k.open_ws == e.open_ws || (k.open_ws < std::max(e_end, e.open_ws + 1) &&
                                      e.open_ws < std::max(k.end_we, k.open_ws + 1));
  };
  // The alert each episode was matched to (-1: none), to name it in the retraction of an
  // alert whose windows a late update joined to an earlier alert's episode.
  std::vector<int> episode_alert(episodes.size(), -1);
  for (size_t ei = 0; ei < episodes.size(); ++ei) {
    Episode& e = episodes[ei];
    int found = -1;
    for (size_t i = 0; i < t.known.size(); ++i) {
      if (matched[i]) continue;
      if (overlaps(t.known[i], e)) {
        found = static_cast<int>(i);
        break;
      }
    }
    store::AlertState state =
        e.firing ? (e.closed ? store::AlertState::kResolved : store::AlertState::kFiring)
                 : (e.closed ? store::AlertState::kResolved : store::AlertState::kPending);
    if (found < 0) {
      if (e.closed && !e.firing) continue;  // a blip shorter than for_windows, already over
      Known k;
      k.id = AlertId(device_id, rule.id, e.open_ws);
      k.open_ws = e.open_ws;
      k.open_we = e.open_we;
      k.opened_at = Wall(now);
      k.state = store::AlertState::kPending;
      if (auto d = dropped_.find(k.id); d != dropped_.end()) {
        // An alert ended when the rule's state for the device was dropped, judged again: a
        // new crossing, not a re-derivation of its stored row (RememberDropped). A new cycle
        // of the same alert (the id is the same): its opened_at is kept, its body says
        // `reopened`, and its webhook-ids are new.
        k.opened_at = d->second.opened_at;
        k.updated_ns = d->second.updated_ns;
        k.cycle = d->second.cycle + (d->second.fired ? 1 : 0);
        k.reopen_note = std::move(d->second.note);
        dropped_.erase(d);
      } else {
        AdoptStored(k);
      }
      t.known.push_back(k);
      matched.push_back(false);
      found = static_cast<int>(t.known.size() - 1);
      if (state == store::AlertState::kPending) {
        t.known[found].state = state;
        out->push_back(Make(rule, device_id, t.known[found], "pending", now, &e, ""));
        matched[found] = true;
        episode_alert[ei] = found;
        continue;
      }
    }
    matched[found] = true;
    episode_alert[ei] = found;
    Known& k = t.known[found];
    // An energy budget's day is judged from its latest record only: its peak is the
    // largest total reported for the day so far.
    if (rule.kind == RuleKind::kEnergyBudget && k.last) e.peak = std::max(e.peak, k.last->peak);
    k.end_we = e.closed ? e.last_we : INT64_MAX;
    // A retracted alert whose episode fires again is back (a new cycle of notifications).
    const bool was_retracted = k.retracted;
    if (e.firing) k.retracted = false;
    if (state == store::AlertState::kResolved && e.firing && (!k.fired || was_retracted)) {
      // The episode fired and is already over when first judged (a buffered upload, a late
      // update): the receiver gets what it would have got live, "firing" then "resolved"
      // (found by a black-box test: only "resolved" was ever sent).
      Episode firing = e;
      firing.closed = false;
      firing.resolved_ws = 0;
      firing.value = e.fired_value;
      const bool late = k.state == store::AlertState::kResolved;
      if (k.fired) ++k.cycle;  // it fired before: its earlier notifications were sent
      k.state = store::AlertState::kFiring;
      k.fired = true;
      out->push_back(Make(rule, device_id, k, "firing", now, &firing,
                          late ? "a late update changed the verdict" : ""));
    }
    if (state == store::AlertState::kResolved && !e.firing && k.fired && !was_retracted) {
      // An alert that fired whose episode a late update cut below for_windows: it did not
      // fire after all (a resolution would say it had).
      k.state = store::AlertState::kResolved;
      k.retracted = true;
      out->push_back(Make(rule, device_id, k, "retracted", now, &e,
                          "retracted: a late update means the condition no longer holds"));
      continue;
    }
    if (was_retracted && !k.fired && state == store::AlertState::kResolved) {
      // An alert that never fired, retracted (e.g. a late window had joined its run to an
      // earlier alert's), whose run a later update makes stand on its own again: its row
      // says so again (silently, as its pending and resolved were).
      k.retracted = false;
      out->push_back(
          Make(rule, device_id, k, "resolved", now, &e, "a late update changed the verdict"));
      continue;
    }
    if (k.state == state) {
      // A firing energy budget whose day total grew: the row and the SSE event show the
      // new total (value, peak), without a webhook — the receiver was told "firing", and a
      // webhook every early firing of the day record would flood it (found by a black-box
      // test: value and peak stayed at the first total over the budget all day).
      if (state == store::AlertState::kFiring && rule.kind == RuleKind::kEnergyBudget && k.last &&
          (k.last->value != e.value || k.last->peak != e.peak)) {
        AlertUpdate u = Make(rule, device_id, k, "firing", now, &e, "");
        u.notify = false;
        u.value_update = true;
        out->push_back(std::move(u));
        continue;
      }
      // A late update changed an episode that was already resolved: its resolution moved
      // to another window (news: a webhook with its own id), or only its values changed
      // (stored and on SSE as they are, the annotation kept: the resolution did not change;
      // no webhook). Found by a black-box test: neither was recorded. A change the alert
      // does not show (its episode grew by a window before the resolution) writes nothing
      // (found by a black-box test: "updated: a late update changed the resolution" on
      // every such window, and on every late sample of a day already over).
      if (state == store::AlertState::kResolved && k.fired && e.closed && e.firing) {
        const Episode* was = k.last ? &*k.last : nullptr;
        const bool moved = was == nullptr || !was->closed || was->resolved_ws != e.resolved_ws;
        if (moved) {
          out->push_back(Make(rule, device_id, k, "resolved", now, &e,
                              "updated: a late update changed the resolution", false,
                              fmt::format("updated/{}/{}", e.resolved_ws, ++k.resolution_updates)));
        } else if (was->value != e.value || was->peak != e.peak || was->fired_ws != e.fired_ws) {
          AlertUpdate u = Make(rule, device_id, k, "resolved", now, &e, k.annotation);
          u.notify = false;
          out->push_back(std::move(u));
        } else {
          k.last = e;  // (as the body shows it)
        }
      }
      continue;
    }
    std::string event;
    std::string note;
    // Firing again after a late update had set it back to pending (silently): the
    // receiver was told "firing" and nothing since — no news.
    bool news = true;
    if (state == store::AlertState::kFiring) {
      event = "firing";
      if (k.state == store::AlertState::kPending && k.fired && !was_retracted) {
        news = false;
        note = "a late update changed the verdict";
      } else {
        if (k.state != store::AlertState::kPending || k.fired) {
          note = "reopened: a late update changed the verdict";
        }
        // It fired before (then resolved or was retracted): its earlier notifications
        // were sent, the next ones are news.
        if (k.fired) ++k.cycle;
      }
      k.fired = true;
    } else if (state == store::AlertState::kResolved) {
      event = "resolved";
      if (e.firing) k.fired = true;
      if (rule.kind == RuleKind::kEnergyBudget) note = "the local day ended";
    } else {
      event = "pending";
    }
    k.state = state;
    out->push_back(Make(rule, device_id, k, event, now, &e, note));
    if (!news) out->back().notify = false;
  }
  const int64_t first_ws = t.windows.empty() ? INT64_MAX : t.windows.begin()->first;
  for (size_t i = 0; i < t.known.size(); ++i) {
    Known& k = t.known[i];
    if (matched[i]) continue;
    // Its windows now belong to the episode of another (earlier) alert: a late window
    // joined the two runs (found by a black-box test: a pending-only alert stayed as a
    // second, resolved alert of the same episode).
    std::string joined;
    for (size_t ei = 0; ei < episodes.size() && joined.empty(); ++ei) {
      if (episode_alert[ei] >= 0 && overlaps(k, episodes[ei])) {
        joined = fmt::format("retracted: a late update joined its windows to the episode of {}",
                             t.known[static_cast<size_t>(episode_alert[ei])].id);
      }
    }
    if (Active(k.state)) {
      k.state = store::AlertState::kResolved;
      k.end_we = k.open_we;
      k.retracted = true;
      out->push_back(Make(rule, device_id, k, "retracted", now, nullptr,
                          !joined.empty()
                              ? joined
                              : "retracted: a late update means the condition no longer holds"));
    } else if (!joined.empty() && !k.retracted) {
      // Resolved, fired or not: no longer an alert of its own. One that never fired is
      // retracted silently (no webhook told of it); one that fired gets a webhook.
      k.end_we = k.open_we;
      k.retracted = true;
      out->push_back(Make(rule, device_id, k, "retracted", now, nullptr, joined));
    } else if (k.fired && !k.retracted && k.open_ws >= first_ws && k.open_ws >= t.floor &&
               t.judged_from && k.open_ws >= *t.judged_from) {
      // A resolved alert that fired, whose episode a late update made vanish (all its
      // windows were judged and are retained, so it would have been re-derived): the
      // receiver was told "firing" for a condition that did not hold as reported.
      k.end_we = k.open_we;
      k.retracted = true;
      out->push_back(Make(rule, device_id, k, "retracted", now, nullptr,
                          "retracted: after a late update the episode no longer stands on its "
                          "own (the condition did not hold, or it joined another alert)"));
    }
  }
  DropWhatTheStoreHolds(t, out, first_update);
  // Forget resolved alerts that no retained window can touch any more.
  const int64_t oldest = t.windows.empty() ? INT64_MIN : t.windows.begin()->first;
  std::erase_if(t.known, [oldest](const Known& k) {
    return !Active(k.state) && k.end_we != INT64_MAX && k.end_we < oldest && !k.held;
  });
}

void Evaluator::FlushHeld(std::vector<AlertUpdate>* out) {
  replaying_ = false;
  const size_t first_update = out->size();
  for (auto& [key, t] : tracks_) {
    for (Known& k : t.known) {
      if (!k.held) continue;
      // The replay ended elsewhere than the row: a real change (with the stored opened_at).
      // A pending/firing step of an episode the row holds as resolved is one it is past.
      if (!Active(k.held->alert.state)) {
        // Derived against the replay's intermediate states; news is what differs from the
        // row: a resolution at the window the row has is a change of values only (stored,
        // no webhook), as a late update of values is.
        if (k.behind_store &&
            ResolvedWindow(k.held->alert.json) == ResolvedWindow(k.behind_store->json)) {
          k.held->notify = false;
        }
        out->push_back(std::move(*k.held));
        k.behind_store.reset();
      }
      k.held.reset();
    }
  }
  std::sort(out->begin() + static_cast<ptrdiff_t>(first_update), out->end(),
            [](const AlertUpdate& a, const AlertUpdate& b) { return a.alert.id < b.alert.id; });
}

void Evaluator::ContinueStoredEpisode(const Rule& rule, const std::string& device_id, Track& t) {
  if (t.start_checked || !stored_alerts_ || t.windows.empty()) return;
  if ((rule.kind != RuleKind::kThreshold && rule.kind != RuleKind::kRateOfChange) || t.base.cur) {
    t.start_checked = true;  // a restored open alert continues (RestoreAlert)
    return;
  }
  // Where the first episode begins, and whether a window judged before it shows that it
  // began there: one with a value (rate_of_change: a second one, the first has no
  // difference) that did not breach.
  Machine m = t.base;
  std::vector<Episode> closed;
  std::optional<int64_t> first;
  int valued = 0;
  for (const auto& [ws, v] : t.windows) {
    Step(rule, m, ws, v, &closed);
    if (!closed.empty() || m.cur) {
      first = closed.empty() ? m.cur->open_ws : closed.front().open_ws;
      break;
    }
    if (v.value) ++valued;
  }
  if (!first) return;  // no episode yet: asked when one begins
  t.start_checked = true;
  if (valued >= (rule.kind == RuleKind::kRateOfChange ? 2 : 1)) return;
  for (const Known& k : t.known) {
    if (k.open_ws <= *first && *first < k.end_we) return;  // known since start
  }
  const int64_t res = rule.resolution == model::Resolution::kHour ? kNanosPerHour : kNanosPerMinute;
  for (const store::Alert& a : stored_alerts_(rule.id, device_id)) {
    if (Active(a.state) || a.id.size() < 24) continue;
    int64_t open_ws = 0;
    if (!ParseRfc3339(std::string_view(a.id).substr(a.id.size() - 24), &open_ws)) continue;
    if (open_ws >= *first) continue;
    simdjson::dom::parser parser;
    simdjson::dom::element body;
    if (parser.parse(a.json).get(body) != simdjson::SUCCESS) continue;
    std::string_view text, event;
    int64_t resolved_ws = 0;
    // A retracted alert has no episode to continue.
    if (body["event"].get_string().get(event) != simdjson::SUCCESS || event != "resolved" ||
        body["resolved_window_start"].get_string().get(text) != simdjson::SUCCESS ||
        !ParseRfc3339(text, &resolved_ws) || *first >= resolved_ws) {
      continue;
    }
    // The episode from the alert's opening window to just before `first`, as the base
    // state (as RestoreAlert continues an open one): the windows from `first` on extend
    // and resolve it; earlier ones were judged before the crash.
    Episode e;
    e.open_ws = open_ws;
    e.open_we = open_ws + res;
    int64_t ns = 0;
    if (body["window_end"].get_string().get(text) == simdjson::SUCCESS && ParseRfc3339(text, &ns) &&
        ns > open_ws) {
      e.open_we = ns;
    }
    if (body["fired_window_start"].get_string().get(text) == simdjson::SUCCESS &&
        ParseRfc3339(text, &ns) && ns < *first) {
      e.firing = true;
      e.fired_ws = ns;
    }
    e.run = e.firing ? rule.for_windows : static_cast<int>((*first - open_ws) / res);
    e.last_we = *first;
    double v = 0;
    if (body["value"].get_double().get(v) == simdjson::SUCCESS) e.value = e.fired_value = v;
    // The stored peak is the episode's: the replayed windows are part of it.
    if (body["peak"].get_double().get(v) == simdjson::SUCCESS) e.peak = v;
    t.base.cur = e;
    t.base.prev_end = *first;
    t.base.prev_value.reset();
    t.floor = std::max(t.floor, *first);
    t.windows.erase(t.windows.begin(), t.windows.lower_bound(*first));
    return;
  }
}

void Evaluator::AdoptStored(Known& k) {
  if (!stored_lookup_) return;
  std::optional<store::Alert> row = stored_lookup_(k.id);
  if (!row) return;
  // The same id is the same alert: it opened when it first opened, and its updated_at
  // only moves when the evaluator changes it (found by a black-box test: after a kill -9
  // the replay re-derived a resolved alert with the restart time as opened_at/updated_at,
  // while GET /v1/alerts from/to still selected by the stored opened_at).
  k.opened_at = row->opened_at_ns;
  k.updated_ns = row->updated_at_ns;
  if (row->acked || row->snoozed_until_ns) {
    Flags& f = flags_[k.id];
    f.acked = row->acked;
    f.snoozed_until = row->snoozed_until_ns;
    // Its reminder (if any) was handled when the row was written: it is resolved.
    if (row->snoozed_until_ns) f.handled_until = *row->snoozed_until_ns;
  }
  if (!Active(row->state)) k.behind_store = std::move(row);
}

namespace {

// The body without its updated_at (always its last member): what a re-derived resolution
// is compared on with the stored one.
std::string_view BodyWithoutUpdatedAt(std::string_view json) {
  const size_t at = json.rfind(",\"updated_at\":");
  return at == std::string_view::npos ? json : json.substr(0, at);
}

}  // namespace

void Evaluator::DropWhatTheStoreHolds(Track& t, std::vector<AlertUpdate>* out, size_t first) {
  size_t kept = first;
  for (size_t i = first; i < out->size(); ++i) {
    AlertUpdate& u = (*out)[i];
    auto k = std::find_if(t.known.begin(), t.known.end(),
                          [&u](const Known& x) { return x.behind_store && x.id == u.alert.id; });
    if (k != t.known.end()) {
      const bool same =
          !Active(u.alert.state) && !u.reminder &&
          BodyWithoutUpdatedAt(u.alert.json) == BodyWithoutUpdatedAt(k->behind_store->json);
      const int64_t stored_updated = k->behind_store->updated_at_ns;
      if (same) {
        // Caught up with the row: what follows is news.
        k->behind_store.reset();
        k->held.reset();
        k->updated_ns = stored_updated;
        continue;
      }
      if (replaying_) {
        // A state the replay may pass through on its way to the row (found by a black-box
        // test: a kill -9 rewrote updated_at of an alert whose resolution a late event had
        // moved — the replay wrote the first resolution, then the moved one again).
        k->held = std::move(u);
        continue;
      }
      // pending/firing of an episode the store holds as resolved: a step it is past.
      if (Active(u.alert.state)) continue;
      k->behind_store.reset();  // a real change: what follows is news
    }
    if (kept != i) (*out)[kept] = std::move(u);
    ++kept;
  }
  out->erase(out->begin() + static_cast<ptrdiff_t>(kept), out->end());
}

void Evaluator::OnAbsenceActivity(const Rule& rule, const std::string& device_id, Track& t,
                                  const model::AggregateRecord& record, int64_t now,
                                  std::vector<AlertUpdate>* out) {
  t.last_seen_ns = now;
  for (Known& k : t.known) {
    if (!Active(k.state)) continue;
    k.state = store::AlertState::kResolved;
    bool backlog = record.window_end_ns <= k.opened_at;
    out->push_back(Make(rule, device_id, k, "resolved", now, nullptr,
                        backlog ? fmt::format("backlog: events from {} arrived late; the device "
                                              "was alive during the absence",
                                              FormatRfc3339Millis(record.window_start_ns))
                                : "the device reported again"));
    t.absence_cooldown_until = now + rule.cooldown_ns;
  }
  std::erase_if(t.known, [](const Known& k) { return !Active(k.state); });
}

void Evaluator::OnRecord(const model::AggregateRecord& record, int64_t now,
                         std::vector<AlertUpdate>* out) {
  if (started_ns_ == 0) started_ns_ = now;
  // New events from this device? (Replays re-emit records with counts already seen.)
  bool fresh = false;
  if (record.resolution == model::Resolution::kBase && record.count > 0) {
    DeviceActivity& a = activity_[record.device_id];
    auto it = a.counts.find(record.window_start_ns);
    if (it == a.counts.end()) {
      // A window an absence alert saw before a restart: re-emitted by the restored
      // processors (e.g. finalized when the silent device goes idle again), not new events
      // (found by a black-box test: the alert resolved, "the device reported again", and
      // fired anew).
      auto seen = seen_before_restart_.find(record.device_id);
      fresh = seen == seen_before_restart_.end() || record.window_end_ns > seen->second;
      if (!fresh && a.last_seen_ns == 0) a.last_seen_ns = started_ns_;
      a.counts[record.window_start_ns] = record.count;
      while (a.counts.size() > 16) a.counts.erase(a.counts.begin());
    } else if (record.count > it->second) {
      fresh = true;
      it->second = record.count;
    }
    if (fresh) {
      a.last_seen_ns = now;
      a.last_event_end_ns = std::max(a.last_event_end_ns, record.window_end_ns);
    }
  }
  if (rules_.empty() || deleted_.contains(record.device_id)) return;
  // The rules that can concern this device (IndexRules), in rules_ order.
  DeviceInfo info;
  bool have_info = false;
  candidates_.clear();
  if (auto it = rules_by_device_.find(record.device_id); it != rules_by_device_.end()) {
    candidates_.insert(candidates_.end(), it->second.begin(), it->second.end());
  }
  if (!rules_by_owner_.empty() || !rules_unscoped_.empty()) {
    info = lookup_ ? lookup_(record.device_id) : DeviceInfo{};
    have_info = true;
    if (auto it = rules_by_owner_.find(info.owner_id); it != rules_by_owner_.end()) {
      candidates_.insert(candidates_.end(), it->second.begin(), it->second.end());
    }
    candidates_.insert(candidates_.end(), rules_unscoped_.begin(), rules_unscoped_.end());
  }
  if (candidates_.size() > 1) std::sort(candidates_.begin(), candidates_.end());
  for (size_t index : candidates_) {
    const Rule& rule = rules_[index];
    if (!have_info) {
      info = lookup_ ? lookup_(record.device_id) : DeviceInfo{};
      have_info = true;
    }
    if (!RuleMatches(rule, record.device_id, info.owner_id, info.model)) continue;
    const std::string key = TrackKey(rule.id, record.device_id);
    if (rule.kind == RuleKind::kAbsence) {
      if (!fresh) continue;
      Track& t = tracks_[key];
      OnAbsenceActivity(rule, record.device_id, t, record, now, out);
      continue;
    }
    if (record.resolution != rule.resolution) continue;
    if (rule.kind != RuleKind::kEnergyBudget && !record.final) continue;
    Track& t = tracks_[key];
    if (record.window_start_ns < t.floor) continue;  // part of a restored alert's state
    if (!t.judged_from) t.judged_from = record.window_start_ns;
    auto it = t.windows.find(record.window_start_ns);
    if (it != t.windows.end() && it->second.version >= record.version) continue;  // replay
    if (it == t.windows.end() && !t.windows.empty() &&
        record.window_start_ns < t.windows.begin()->first &&
        t.windows.size() >= static_cast<size_t>(rule.for_windows) + kKeptWindows) {
      continue;  // older than anything that can still change a verdict
    }
    Verdict v;
    v.end = record.window_end_ns;
    v.version = record.version;
    v.final = record.final;
    v.value = AggregateValue(record, rule.metric, rule.aggregate);
    if (t.restored_day && *t.restored_day == record.window_start_ns) {
      if (!record.final && (!v.value || *v.value < t.restored_total)) {
        v.value = t.restored_total;  // a running total the alert was past (RestoreAlert)
      } else {
        t.restored_day.reset();  // caught up (or the day's final total): judged as it is
      }
    }
    t.windows[record.window_start_ns] = v;
    Recompute(rule, record.device_id, t, now, out);
  }
}

void Evaluator::Tick(int64_t now, std::vector<AlertUpdate>* out) {
  if (started_ns_ == 0) started_ns_ = now;
  std::erase_if(dropped_,
                [now](const auto& d) { return now - d.second.dropped_ns > 2 * kNanosPerDay; });
  RemindSnoozeEnded(now, out);
  for (const Rule& rule : rules_) {
    if (rule.kind != RuleKind::kAbsence || !rule.enabled) continue;
    // `reported`: the device was seen since start; otherwise `last_seen` is max(its
    // registration, the engine's start).
    auto check = [&](const std::string& device_id, int64_t last_seen, int64_t last_event_end,
                     bool reported) {
      Track& t = tracks_[TrackKey(rule.id, device_id)];
      bool unseen = !reported && last_seen >= t.last_seen_ns;
      last_seen = std::max(last_seen, t.last_seen_ns);
      if (now - last_seen < rule.absent_for_ns) return;
      for (const Known& k : t.known) {
        if (Active(k.state)) return;  // already open
      }
      if (now < t.absence_cooldown_until) return;
      if (activity_lookup_) {
        // Seen by the processors since (while no rule existed, say): not silent that long.
        if (std::optional<int64_t> seen = activity_lookup_(device_id); seen && *seen > last_seen) {
          t.last_seen_ns = *seen;
          last_seen = *seen;
          unseen = false;
          if (now - last_seen < rule.absent_for_ns) return;
        }
      }
      Known k;
      int64_t ws = now - now % kAbsenceIdWindow;
      // With absent_for under a minute a second episode can open in the same minute as an
      // earlier one: it takes the next free minute, so that it is a new alert with its own
      // webhook-ids (found by a black-box test: it reused the earlier id, and the outbox
      // dropped its firing webhook as a duplicate).
      if (ws <= t.last_absence_ws) ws = t.last_absence_ws + kAbsenceIdWindow;
      // So is a minute whose id the store holds: after a restart the track is new, and an
      // episode of the same minute before it would otherwise be overwritten (its firing
      // webhook-id reused, so the new "firing" dropped by the outbox).
      while (stored_lookup_ && stored_lookup_(AlertId(device_id, rule.id, ws))) {
        ws += kAbsenceIdWindow;
      }
      t.last_absence_ws = ws;
      k.id = AlertId(device_id, rule.id, ws);
      k.open_ws = ws;
      k.open_we = ws + kAbsenceIdWindow;
      k.opened_at = Wall(now);
      k.state = store::AlertState::kFiring;
      k.fired = true;
      k.last_event_end = last_event_end;
      t.known.push_back(k);
      // (The track's copy: Make records what was written — updated_at, owner.)
      // A device not seen since start has no record whose publication could be named
      // (found by a black-box test: a device that never sent anything was said to have had
      // its latest record published at its registration).
      std::string why;
      if (!unseen) {
        why = fmt::format(
            "no activity seen since {} (processing time: when its latest record was published; "
            "its last event is earlier)",
            FormatRfc3339Millis(last_seen));
      } else if (last_seen > started_ns_) {
        why =
            fmt::format("no activity since the device was registered at {}: it has never reported",
                        FormatRfc3339Millis(last_seen));
      } else {
        why = fmt::format(
            "no activity seen since Joule started at {}: the device has not reported "
            "since",
            FormatRfc3339Millis(last_seen));
      }
      out->push_back(Make(rule, device_id, t.known.back(), "firing", now, nullptr, std::move(why)));
    };
    if (!rule.scope.device_id.empty()) {
      // A device named by the rule and not seen since start counts as last seen at
      // max(registration, engine start), as for owner/model scopes (found by a black-box
      // test: a device registered after the start fired at once).
      auto a = activity_.find(rule.scope.device_id);
      DeviceInfo info = lookup_ ? lookup_(rule.scope.device_id) : DeviceInfo{};
      int64_t last =
          a == activity_.end() ? std::max(started_ns_, info.created_at_ns) : a->second.last_seen_ns;
      if (!deleted_.contains(rule.scope.device_id) &&
          RuleMatches(rule, rule.scope.device_id, info.owner_id, info.model)) {
        check(rule.scope.device_id, last, a == activity_.end() ? 0 : a->second.last_event_end_ns,
              a != activity_.end());
      }
      continue;
    }
    for (const auto& [device_id, a] : activity_) {
      DeviceInfo info = lookup_ ? lookup_(device_id) : DeviceInfo{};
      if (!RuleMatches(rule, device_id, info.owner_id, info.model)) continue;
      check(device_id, a.last_seen_ns, a.last_event_end_ns, true);
    }
    // Registered devices not seen since start: watched from max(registration, start).
    for (const auto& [device_id, reg] : registered_) {
      if (activity_.contains(device_id)) continue;
      if (!RuleMatches(rule, device_id, reg.info.owner_id, reg.info.model)) continue;
      check(device_id, std::max(reg.created_at_ns, started_ns_), 0, false);
    }
  }
}

void Evaluator::RegisterDevice(const std::string& device_id, const DeviceInfo& info,
                               int64_t created_at_ns) {
  Registered& r = registered_[device_id];
  r.info = info;
  r.created_at_ns = created_at_ns;
}

void Evaluator::ForgetDevice(const std::string& device_id) { registered_.erase(device_id); }

std::vector<std::string> Evaluator::DevicesWithOpenAlerts() const {
  std::vector<std::string> out;
  for (const auto& [key, t] : tracks_) {
    if (std::any_of(t.known.begin(), t.known.end(),
                    [](const Known& k) { return Active(k.state); })) {
      out.push_back(key.substr(key.find('\n') + 1));
    }
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

void Evaluator::RememberDropped(const Known& k, std::string_view ended, int64_t now) {
  std::string note;
  if (ended == "resolved: the rule was deleted") {
    note = "reopened: a rule with the same id was created again";
  } else if (ended == "resolved: the device left the rule's scope") {
    note = "reopened: the device is back in the rule's scope";
  } else if (ended == "resolved: the rule was disabled") {
    note = "reopened: the rule was enabled again";
  } else if (ended == "resolved: the device was deleted") {
    note = "reopened: the device was registered again";
  } else {
    note = "reopened: the rule judges the device again";
  }
  dropped_[k.id] = Dropped{k.opened_at, k.updated_ns, k.fired, k.cycle, std::move(note), now};
}

void Evaluator::DeviceChanged(const std::string& device_id, const std::optional<DeviceInfo>& info,
                              int64_t now, std::vector<AlertUpdate>* out, bool certain) {
  const size_t first_update = out->size();
  // The device's tracks, one lookup per rule (not a walk over every track).
  for (const Rule& rule_ref : rules_) {
    auto it = tracks_.find(TrackKey(rule_ref.id, device_id));
    if (it == tracks_.end()) continue;
    const Rule* rule = &rule_ref;
    if ((info && RuleCovers(*rule, device_id, info->owner_id, info->model)) ||
        (!info && !certain && rule->owner_id.empty() && !rule->scope.device_id.empty())) {
      continue;
    }
    // Found by a black-box test: an absence alert stayed firing for ever after its device's
    // model changed or the device was deleted, even when the device reported again. (Scope
    // only: a disabled rule's alerts are not "out of scope".)
    const bool deleted = !info;
    for (Known& k : it->second.known) {
      if (!Active(k.state)) continue;
      if (k.state == store::AlertState::kFiring) k.fired = true;
      k.state = store::AlertState::kResolved;
      if (k.end_we == INT64_MAX) k.end_we = std::max(k.open_we, k.last ? k.last->last_we : 0);
      k.keep_owner = true;
      const std::optional<Episode> last = k.last;
      const std::string_view ended = deleted ? "resolved: the device was deleted"
                                             : "resolved: the device left the rule's scope";
      out->push_back(
          Make(*rule, device_id, k, "resolved", now, last ? &*last : nullptr, std::string(ended)));
      RememberDropped(k, ended, now);
    }
    tracks_.erase(it);
  }
  if (info) {
    deleted_.erase(device_id);
  } else if (certain) {
    deleted_.insert(device_id);
    registered_.erase(device_id);
    activity_.erase(device_id);
  }
  std::sort(out->begin() + static_cast<ptrdiff_t>(first_update), out->end(),
            [](const AlertUpdate& a, const AlertUpdate& b) { return a.alert.id < b.alert.id; });
}

}  // namespace joule::alert

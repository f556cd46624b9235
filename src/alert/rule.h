// Alert rules (CONTRACT §4): the parsed, validated form of a rule's JSON, and its
// canonical JSON. Parsing is strict: unknown fields, wrong types and inconsistent
// settings are InvalidArgument with a message that names the field, so the API can
// answer 400 with it. Plain data; thread-compatible.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "model/aggregate_record.h"

namespace joule::alert {

enum class RuleKind { kThreshold, kAbsence, kRateOfChange, kEnergyBudget };
std::string_view RuleKindName(RuleKind kind);

enum class CompareOp { kGt, kGe, kLt, kLe, kEq, kNe };
std::string_view CompareOpName(CompareOp op);
bool Compare(double value, CompareOp op, double threshold);

// Which field of a MetricAggregate a rule reads.
enum class Aggregate { kCount, kMin, kMax, kAvg, kSum, kFirst, kLast, kEnergyWh, kTwa, kDelta };
std::string_view AggregateName(Aggregate aggregate);
// The value, or nullopt when the window has none (no samples, no coverage, wrong kind).
std::optional<double> AggregateValue(const model::AggregateRecord& record, std::string_view metric,
                                     Aggregate aggregate);

struct Channel {
  std::string type = "webhook";
  std::string url;
  std::string secret;
};

struct RuleScope {
  std::string device_id;  // exactly one of the three is set
  std::string owner_id;
  std::string model;
};

struct Rule {
  std::string id;
  std::string owner_id;  // who manages it; "" = admin-wide (model scope over all owners)
  std::string name;
  RuleScope scope;
  RuleKind kind = RuleKind::kThreshold;
  std::string metric = "power_w";
  Aggregate aggregate = Aggregate::kMax;
  CompareOp op = CompareOp::kGt;
  double threshold = 0;
  std::optional<double> clear_threshold;  // hysteresis; default = threshold
  int for_windows = 1;
  model::Resolution resolution = model::Resolution::kBase;  // 1m (base), 1h, 1d
  int64_t absent_for_ns = 0;                                // absence
  double budget_wh = 0;                                     // energy_budget
  std::string severity = "warning";
  std::vector<Channel> channels;
  int64_t cooldown_ns = 0;
  bool enabled = true;

  // The level at which a firing threshold alert clears.
  double ClearLevel() const { return clear_threshold.value_or(threshold); }
};

struct RuleParseOptions {
  bool allow_private_targets = false;  // alerts.allow_private_targets
  // A channel whose url an earlier channel has is a 400 ("channels[1].url duplicates
  // channels[0]"): it would deliver every transition twice. Stored rules made before that
  // was refused are read with this set: the first channel of each url is kept.
  bool drop_duplicate_channels = false;
  // The kind a metric of that name gets (CONTRACT §2 "Metric kinds": by name, unless
  // [metrics.kinds] says otherwise). Set (the API), an aggregate the kind never has is a
  // 400: delta of a metric that is not a counter, energy_wh or twa of one that is not a
  // power metric — such a rule would never see a value. Unset (rules read from the store),
  // not checked: the configured kinds may have changed since the rule was made.
  std::function<model::MetricKind(std::string_view metric)> metric_kind;
  // A duration over kMaxAlertDurationNs is a 400. Rules stored before that was refused are
  // read with this set: such a duration is read as the bound (it had overflowed when added
  // to a time, and did nothing).
  bool clamp_durations = false;
};

// The longest duration of a rule (cooldown, absent_for) or a snooze: 3650d (about ten
// years). Added to a time, a longer one could overflow int64 nanoseconds (year 2262): a
// cooldown of 100000d did nothing, a snooze for 100000d ended in 1716 at once (found by a
// black-box test).
inline constexpr int64_t kMaxAlertDurationNs = 3650LL * 24 * 3600 * 1'000'000'000;
// A duration field of a rule or a snooze (CONTRACT §4): a non-negative number with a unit —
// ms, s, m, h or d ("90s", "15m", "1.5h", "7d") — at most kMaxAlertDurationNs (`clamp`:
// a longer one is the bound). Otherwise InvalidArgument naming `field`. (A bare number was
// read as seconds; durations in the contract always carry their unit.)
Result<int64_t> ParseAlertDuration(std::string_view field, std::string_view text,
                                   bool clamp = false);

// Parses and validates a rule body (POST/PUT /v1/rules). `id` and `owner_id` of the
// result are left for the caller to set when the body has none.
Result<Rule> ParseRule(std::string_view json, const RuleParseOptions& options);

// Canonical JSON (what GET /v1/rules returns and the store keeps). Secrets are included
// only when `with_secrets` (never in API responses).
std::string RuleToJson(const Rule& rule, bool with_secrets);

// Whether the rule judges `device` (its owner and model): enabled and RuleCovers.
bool RuleMatches(const Rule& rule, std::string_view device_id, std::string_view device_owner,
                 std::string_view device_model);
// Whether `device` is in the rule's scope (and its owner's, for an owner's rule), enabled
// or not.
bool RuleCovers(const Rule& rule, std::string_view device_id, std::string_view device_owner,
                std::string_view device_model);

// "1m", "1h", "1d".
std::string_view RuleResolutionName(model::Resolution resolution);

}  // namespace joule::alert

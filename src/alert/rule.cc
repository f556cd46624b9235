#include "alert/rule.h"

#include <fmt/format.h>
#include <simdjson.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <set>

#include "alert/target_guard.h"
#include "common/clock.h"
#include "common/dot_segment.h"
#include "common/json_writer.h"
#include "common/time_format.h"

namespace joule::alert {
namespace {

constexpr size_t kMaxChannels = 8;
constexpr int kMaxForWindows = 1440;

bool ValidMetricName(std::string_view s) {
  if (s.empty() || s.size() > 64 || s[0] < 'a' || s[0] > 'z') return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  }
  return true;
}

// The id syntax of CONTRACT §1, without the dot segments (common/dot_segment.h): a rule
// with such an id could not be read, changed or deleted, and a scope with one could match
// no device.
bool ValidId(std::string_view s, size_t max) {
  if (s.empty() || s.size() > max || IsDotSegment(s)) return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
          c == '_' || c == ':' || c == '-')) {
      return false;
    }
  }
  return true;
}

Status Bad(std::string message) { return Status::InvalidArgument(std::move(message)); }

Result<std::string> Str(std::string_view name, simdjson::dom::element v) {
  std::string_view s;
  if (v.get_string().get(s) != simdjson::SUCCESS)
    return Bad(fmt::format("{} must be a string", name));
  return std::string(s);
}

Result<double> Num(std::string_view name, simdjson::dom::element v) {
  double d;
  if (v.get_double().get(d) != simdjson::SUCCESS) {
    int64_t i;
    uint64_t u;
    if (v.get_int64().get(i) == simdjson::SUCCESS) {
      d = static_cast<double>(i);
    } else if (v.get_uint64().get(u) == simdjson::SUCCESS) {
      d = static_cast<double>(u);
    } else {
      return Bad(fmt::format("{} must be a number", name));
    }
  }
  if (!std::isfinite(d)) return Bad(fmt::format("{} must be a finite number", name));
  return d;
}

Result<int64_t> Duration(std::string_view name, simdjson::dom::element v, bool clamp) {
  JOULE_ASSIGN_OR_RETURN(std::string s, Str(name, v));
  return ParseAlertDuration(name, s, clamp);
}

template <typename Enum, size_t N>
Result<Enum> Choice(std::string_view name, simdjson::dom::element v,
                    const std::pair<const char*, Enum> (&choices)[N]) {
  JOULE_ASSIGN_OR_RETURN(std::string s, Str(name, v));
  std::string list;
  for (const auto& [text, value] : choices) {
    if (s == text) return value;
    list += (list.empty() ? "" : ", ") + std::string(text);
  }
  return Bad(fmt::format("{} must be one of: {}", name, list));
}

constexpr std::pair<const char*, RuleKind> kKinds[] = {{"threshold", RuleKind::kThreshold},
                                                       {"absence", RuleKind::kAbsence},
                                                       {"rate_of_change", RuleKind::kRateOfChange},
                                                       {"energy_budget", RuleKind::kEnergyBudget}};
constexpr std::pair<const char*, CompareOp> kOps[] = {
    {">", CompareOp::kGt},  {">=", CompareOp::kGe}, {"<", CompareOp::kLt},
    {"<=", CompareOp::kLe}, {"==", CompareOp::kEq}, {"!=", CompareOp::kNe}};
constexpr std::pair<const char*, Aggregate> kAggregates[] = {
    {"count", Aggregate::kCount}, {"min", Aggregate::kMin},
    {"max", Aggregate::kMax},     {"avg", Aggregate::kAvg},
    {"sum", Aggregate::kSum},     {"first", Aggregate::kFirst},
    {"last", Aggregate::kLast},   {"energy_wh", Aggregate::kEnergyWh},
    {"twa", Aggregate::kTwa},     {"delta", Aggregate::kDelta}};
constexpr std::pair<const char*, model::Resolution> kResolutions[] = {
    {"1m", model::Resolution::kBase},
    {"1h", model::Resolution::kHour},
    {"1d", model::Resolution::kDay}};

Result<Channel> ParseChannel(simdjson::dom::element v, size_t index,
                             const RuleParseOptions& options) {
  simdjson::dom::object obj;
  const std::string where = fmt::format("channels[{}]", index);
  if (v.get_object().get(obj) != simdjson::SUCCESS) return Bad(where + " must be an object");
  Channel c;
  bool have_url = false;
  for (auto field : obj) {
    std::string_view key = field.key;
    if (key == "type") {
      JOULE_ASSIGN_OR_RETURN(c.type, Str(where + ".type", field.value));
      if (c.type != "webhook") return Bad(where + ".type must be \"webhook\"");
    } else if (key == "url") {
      JOULE_ASSIGN_OR_RETURN(c.url, Str(where + ".url", field.value));
      Status st = CheckWebhookUrl(c.url, options.allow_private_targets);
      if (!st.ok()) return Bad(where + ": " + st.message());
      have_url = true;
    } else if (key == "secret") {
      JOULE_ASSIGN_OR_RETURN(c.secret, Str(where + ".secret", field.value));
      if (c.secret.size() > 512) return Bad(where + ".secret must be at most 512 bytes");
    } else {
      return Bad(fmt::format("{}: unknown field \"{}\"", where, key.substr(0, 64)));
    }
  }
  if (!have_url) return Bad(where + ".url is required");
  if (c.secret.empty()) {
    return Bad(where + ".secret is required (webhooks are signed, CONTRACT §4)");
  }
  if (c.secret.rfind("whsec_", 0) == 0) {
    std::string_view b64 = std::string_view(c.secret).substr(6);
    bool ok = !b64.empty() && b64.size() % 4 == 0;
    for (char ch : b64) {
      ok &= std::isalnum(static_cast<unsigned char>(ch)) || ch == '+' || ch == '/' || ch == '=';
    }
    if (!ok) return Bad(where + ".secret: a whsec_ secret must be followed by base64");
  }
  return c;
}

}  // namespace

std::string_view RuleKindName(RuleKind kind) {
  for (const auto& [t, v] : kKinds) {
    if (v == kind) return t;
  }
  return "?";
}
std::string_view CompareOpName(CompareOp op) {
  for (const auto& [t, v] : kOps) {
    if (v == op) return t;
  }
  return "?";
}
std::string_view AggregateName(Aggregate aggregate) {
  for (const auto& [t, v] : kAggregates) {
    if (v == aggregate) return t;
  }
  return "?";
}
std::string_view RuleResolutionName(model::Resolution resolution) {
  for (const auto& [t, v] : kResolutions) {
    if (v == resolution) return t;
  }
  return "?";
}

bool Compare(double value, CompareOp op, double threshold) {
  switch (op) {
    case CompareOp::kGt:
      return value > threshold;
    case CompareOp::kGe:
      return value >= threshold;
    case CompareOp::kLt:
      return value < threshold;
    case CompareOp::kLe:
      return value <= threshold;
    case CompareOp::kEq:
      return value == threshold;
    case CompareOp::kNe:
      return value != threshold;
  }
  return false;
}

std::optional<double> AggregateValue(const model::AggregateRecord& record, std::string_view metric,
                                     Aggregate aggregate) {
  const model::MetricAggregate* m = record.FindMetric(metric);
  if (aggregate == Aggregate::kCount) return m ? static_cast<double>(m->count) : 0.0;
  if (!m) return std::nullopt;
  switch (aggregate) {
    case Aggregate::kEnergyWh:
      if (m->kind != model::MetricKind::kPower) return std::nullopt;
      return m->energy_wh;
    case Aggregate::kTwa:
      if (m->kind != model::MetricKind::kPower || m->covered_ns <= 0) return std::nullopt;
      return m->energy_wh * 3600.0 / (static_cast<double>(m->covered_ns) / 1e9);
    case Aggregate::kDelta:
      if (m->kind != model::MetricKind::kCounter) return std::nullopt;
      return m->delta;
    default:
      break;
  }
  if (m->count == 0) return std::nullopt;
  switch (aggregate) {
    case Aggregate::kMin:
      return m->min;
    case Aggregate::kMax:
      return m->max;
    case Aggregate::kAvg:
      return m->sum / static_cast<double>(m->count);
    case Aggregate::kSum:
      return m->sum;
    case Aggregate::kFirst:
      return m->first;
    case Aggregate::kLast:
      return m->last;
    default:
      return std::nullopt;
  }
}

Result<int64_t> ParseAlertDuration(std::string_view field, std::string_view text, bool clamp) {
  auto malformed = [&] {
    return Status::InvalidArgument(fmt::format(
        "{} must be a duration with a unit like \"90s\", \"10m\", \"1h\" or \"7d\"", field));
  };
  // The unit is required: "5" is not "5s" to every reader (ParseDurationNanos, for config,
  // reads a bare number as seconds).
  if (text.empty() || !std::isalpha(static_cast<unsigned char>(text.back()))) return malformed();
  // No space before the unit either (ParseDurationNanos takes "10 s" for config files, as
  // sizes take "4 MiB"; the API's durations stay as CONTRACT §4 spells them).
  if (text.find(' ') != std::string_view::npos) return malformed();
  const std::string_view number = text.substr(0, text.find_first_not_of("0123456789."));
  if (number.empty()) return malformed();
  Result<int64_t> parsed = ParseDurationNanos(text);
  int64_t ns = INT64_MAX;  // well-formed but too large for int64 nanoseconds: over the bound
  if (parsed.ok()) {
    ns = *parsed;
  } else if (parsed.status().message().find("too large") == std::string::npos) {
    return malformed();
  }
  if (ns < 0) return malformed();
  if (ns > kMaxAlertDurationNs) {
    if (clamp) return kMaxAlertDurationNs;
    return Status::InvalidArgument(fmt::format("{} must be at most 3650d (about ten years), got {}",
                                               field, text.substr(0, 32)));
  }
  return ns;
}

Result<Rule> ParseRule(std::string_view json, const RuleParseOptions& options) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  constexpr size_t kMaxRuleDepth = 16;  // a rule is at most 4 levels deep
  // simdjson's max_depth counts the document itself: N lets N - 1 levels of objects and
  // arrays through (found by a black-box test: a rule exactly 16 levels deep was refused).
  if (parser.allocate(std::max<size_t>(json.size(), 64), kMaxRuleDepth + 1) != simdjson::SUCCESS) {
    return Bad("cannot allocate a JSON parser for the rule");
  }
  const simdjson::error_code parsed = parser.parse(json.data(), json.size()).get(root);
  if (parsed == simdjson::DEPTH_ERROR) {
    return Bad(fmt::format("rule is nested deeper than {} levels", kMaxRuleDepth));
  }
  if (parsed != simdjson::SUCCESS) return Bad("rule is not valid JSON");
  simdjson::dom::object obj;
  if (root.get_object().get(obj) != simdjson::SUCCESS) return Bad("rule must be a JSON object");
  Rule r;
  std::set<std::string_view> seen;
  bool have_kind = false, have_threshold = false, have_metric = false, have_aggregate = false,
       have_op = false, have_resolution = false, have_for = false;
  for (auto field : obj) {
    std::string_view key = field.key;
    if (!seen.insert(key).second) {
      return Bad(fmt::format("field \"{}\" appears more than once", key.substr(0, 64)));
    }
    simdjson::dom::element v = field.value;
    if (key == "id") {
      JOULE_ASSIGN_OR_RETURN(r.id, Str(key, v));
      if (!ValidId(r.id, 64))
        return Bad("id must be 1-64 chars of [A-Za-z0-9._:-], not \".\" or \"..\"");
    } else if (key == "owner_id") {
      if (!v.is_null()) {
        JOULE_ASSIGN_OR_RETURN(r.owner_id, Str(key, v));
      }
    } else if (key == "name") {
      JOULE_ASSIGN_OR_RETURN(r.name, Str(key, v));
      if (r.name.size() > 200) return Bad("name must be at most 200 bytes");
    } else if (key == "scope") {
      simdjson::dom::object s;
      if (v.get_object().get(s) != simdjson::SUCCESS) return Bad("scope must be an object");
      int n = 0;
      for (auto sf : s) {
        std::string_view sk = sf.key;
        ++n;
        std::string* dst = sk == "device_id"  ? &r.scope.device_id
                           : sk == "owner_id" ? &r.scope.owner_id
                           : sk == "model"    ? &r.scope.model
                                              : nullptr;
        if (!dst) {
          return Bad(fmt::format("scope: unknown field \"{}\" (device_id, owner_id or model)",
                                 sk.substr(0, 64)));
        }
        JOULE_ASSIGN_OR_RETURN(*dst, Str(fmt::format("scope.{}", sk), sf.value));
        if (!ValidId(*dst, 128)) {
          return Bad(fmt::format(
              "scope.{} must be 1-128 chars of [A-Za-z0-9._:-], not \".\" or \"..\"", sk));
        }
      }
      if (n != 1) return Bad("scope must have exactly one of device_id, owner_id, model");
    } else if (key == "kind") {
      JOULE_ASSIGN_OR_RETURN(r.kind, Choice(key, v, kKinds));
      have_kind = true;
    } else if (key == "metric") {
      JOULE_ASSIGN_OR_RETURN(r.metric, Str(key, v));
      if (!ValidMetricName(r.metric)) return Bad("metric must match [a-z][a-z0-9_]{0,63}");
      have_metric = true;
    } else if (key == "aggregate") {
      JOULE_ASSIGN_OR_RETURN(r.aggregate, Choice(key, v, kAggregates));
      have_aggregate = true;
    } else if (key == "op") {
      JOULE_ASSIGN_OR_RETURN(r.op, Choice(key, v, kOps));
      have_op = true;
    } else if (key == "threshold") {
      JOULE_ASSIGN_OR_RETURN(r.threshold, Num(key, v));
      have_threshold = true;
    } else if (key == "clear_threshold") {
      if (!v.is_null()) {
        JOULE_ASSIGN_OR_RETURN(double c, Num(key, v));
        r.clear_threshold = c;
      }
    } else if (key == "for_windows") {
      int64_t n;
      if (v.get_int64().get(n) != simdjson::SUCCESS || n < 1 || n > kMaxForWindows) {
        return Bad(fmt::format("for_windows must be an integer from 1 to {}", kMaxForWindows));
      }
      r.for_windows = static_cast<int>(n);
      have_for = true;
    } else if (key == "resolution") {
      JOULE_ASSIGN_OR_RETURN(r.resolution, Choice(key, v, kResolutions));
      have_resolution = true;
    } else if (key == "absent_for") {
      JOULE_ASSIGN_OR_RETURN(r.absent_for_ns, Duration(key, v, options.clamp_durations));
      if (r.absent_for_ns < kNanosPerSecond) return Bad("absent_for must be at least 1s");
    } else if (key == "budget_wh") {
      JOULE_ASSIGN_OR_RETURN(r.budget_wh, Num(key, v));
      if (r.budget_wh <= 0) return Bad("budget_wh must be > 0");
    } else if (key == "severity") {
      JOULE_ASSIGN_OR_RETURN(r.severity, Str(key, v));
      if (r.severity != "info" && r.severity != "warning" && r.severity != "critical") {
        return Bad("severity must be one of: info, warning, critical");
      }
    } else if (key == "channels") {
      simdjson::dom::array a;
      if (v.get_array().get(a) != simdjson::SUCCESS) return Bad("channels must be an array");
      size_t i = 0;
      for (auto c : a) {
        if (i >= kMaxChannels) return Bad(fmt::format("at most {} channels", kMaxChannels));
        JOULE_ASSIGN_OR_RETURN(Channel ch, ParseChannel(c, i, options));
        auto same = std::find_if(r.channels.begin(), r.channels.end(),
                                 [&ch](const Channel& x) { return x.url == ch.url; });
        if (same == r.channels.end()) {
          r.channels.push_back(std::move(ch));
        } else if (!options.drop_duplicate_channels) {
          // Found by a black-box test: accepted, and every transition was delivered twice
          // (with different webhook-ids, so receivers could not de-duplicate).
          return Bad(fmt::format(
              "channels[{}].url duplicates channels[{}]: each channel must have its own url", i,
              same - r.channels.begin()));
        }
        ++i;
      }
    } else if (key == "cooldown") {
      JOULE_ASSIGN_OR_RETURN(r.cooldown_ns, Duration(key, v, options.clamp_durations));
    } else if (key == "enabled") {
      if (v.get_bool().get(r.enabled) != simdjson::SUCCESS) return Bad("enabled must be a boolean");
    } else if (key == "created_at" || key == "updated_at") {
      // read-only, echoed by GET; ignored on input
    } else {
      return Bad(fmt::format("unknown field \"{}\"", key.substr(0, 64)));
    }
  }
  if (!have_kind)
    return Bad("kind is required (threshold, absence, rate_of_change, energy_budget)");
  if (r.scope.device_id.empty() && r.scope.owner_id.empty() && r.scope.model.empty()) {
    return Bad("scope is required: {\"device_id\"}, {\"owner_id\"} or {\"model\"}");
  }
  if (r.kind == RuleKind::kEnergyBudget && !have_aggregate) {
    // The default follows the metric's kind (as configured when the API is asked): a
    // counter's delta, a power metric's energy_wh. A gauge has no energy: it takes an
    // explicit sum (found by a black-box test: the rule was stored with energy_wh, which a
    // gauge never has, and could never fire, while the same aggregate given was a 400).
    const model::MetricKind kind =
        options.metric_kind ? options.metric_kind(r.metric) : model::DefaultMetricKind(r.metric);
    if (options.metric_kind && kind == model::MetricKind::kGauge) {
      return Bad(fmt::format(
          "energy_budget on {} (a gauge metric) needs \"aggregate\": \"sum\" — the default "
          "energy_wh needs a power metric, delta a counter metric (CONTRACT §2 \"Metric kinds\": "
          "by name, or [metrics.kinds])",
          r.metric));
    }
    r.aggregate = kind == model::MetricKind::kCounter ? Aggregate::kDelta : Aggregate::kEnergyWh;
  }
  if (options.metric_kind && r.kind != RuleKind::kAbsence) {
    // Found by a black-box test: a threshold on the delta of power_w was accepted and never
    // had a value to judge.
    const model::MetricKind kind = options.metric_kind(r.metric);
    const bool delta = r.aggregate == Aggregate::kDelta;
    if ((delta && kind != model::MetricKind::kCounter) ||
        (!delta && (r.aggregate == Aggregate::kEnergyWh || r.aggregate == Aggregate::kTwa) &&
         kind != model::MetricKind::kPower)) {
      return Bad(fmt::format(
          "aggregate {} needs a {} metric; {} is a {} metric (CONTRACT §2 \"Metric kinds\": "
          "by name, or [metrics.kinds])",
          AggregateName(r.aggregate), delta ? "counter" : "power", r.metric,
          kind == model::MetricKind::kPower     ? "power"
          : kind == model::MetricKind::kCounter ? "counter"
                                                : "gauge"));
    }
  }
  switch (r.kind) {
    case RuleKind::kThreshold:
    case RuleKind::kRateOfChange:
      if (!have_metric) return Bad("metric is required");
      if (!have_aggregate) return Bad("aggregate is required");
      if (!have_op) return Bad("op is required");
      if (!have_threshold) return Bad("threshold is required");
      if (r.clear_threshold) {
        double c = *r.clear_threshold;
        bool ok = true;
        if (r.op == CompareOp::kGt || r.op == CompareOp::kGe) ok = c <= r.threshold;
        if (r.op == CompareOp::kLt || r.op == CompareOp::kLe) ok = c >= r.threshold;
        if (r.op == CompareOp::kEq || r.op == CompareOp::kNe) {
          return Bad("clear_threshold is not allowed with op == or !=");
        }
        if (!ok) {
          return Bad(fmt::format(
              "clear_threshold must be on the clearing side of threshold: for op {} it must be "
              "{} {}",
              CompareOpName(r.op),
              (r.op == CompareOp::kGt || r.op == CompareOp::kGe) ? "<=" : ">=", r.threshold));
        }
      }
      if (r.absent_for_ns || r.budget_wh) {
        return Bad(
            fmt::format("absent_for and budget_wh do not apply to kind {}", RuleKindName(r.kind)));
      }
      break;
    case RuleKind::kAbsence:
      if (r.absent_for_ns == 0) return Bad("absent_for is required for kind absence");
      // metric and resolution too: they were dropped silently (found by a black-box test),
      // so a rule meant for one metric watched every event of the device.
      if (have_threshold || have_op || have_aggregate || r.clear_threshold || have_for ||
          r.budget_wh || have_metric || have_resolution) {
        return Bad(
            "kind absence takes absent_for only (no metric, resolution, threshold, op, "
            "aggregate, for_windows)");
      }
      break;
    case RuleKind::kEnergyBudget:
      if (r.budget_wh <= 0) return Bad("budget_wh is required for kind energy_budget");
      if (have_resolution && r.resolution != model::Resolution::kDay) {
        return Bad("energy_budget is judged on the local day: resolution must be 1d");
      }
      if (have_threshold || have_op || r.clear_threshold || have_for || r.absent_for_ns) {
        return Bad("kind energy_budget takes budget_wh (no threshold, op, for_windows)");
      }
      r.resolution = model::Resolution::kDay;  // (the aggregate's default: above)
      if (r.aggregate != Aggregate::kEnergyWh && r.aggregate != Aggregate::kDelta &&
          r.aggregate != Aggregate::kSum) {
        return Bad("energy_budget aggregate must be energy_wh, delta or sum");
      }
      break;
  }
  return r;
}

std::string RuleToJson(const Rule& r, bool with_secrets) {
  JsonWriter w;
  w.BeginObject();
  w.Key("id");
  w.String(r.id);
  if (!r.name.empty()) {
    w.Key("name");
    w.String(r.name);
  }
  w.Key("owner_id");
  if (r.owner_id.empty())
    w.Null();
  else
    w.String(r.owner_id);
  w.Key("scope");
  w.BeginObject();
  if (!r.scope.device_id.empty()) {
    w.Key("device_id");
    w.String(r.scope.device_id);
  } else if (!r.scope.owner_id.empty()) {
    w.Key("owner_id");
    w.String(r.scope.owner_id);
  } else {
    w.Key("model");
    w.String(r.scope.model);
  }
  w.EndObject();
  w.Key("kind");
  w.String(RuleKindName(r.kind));
  if (r.kind != RuleKind::kAbsence) {
    w.Key("metric");
    w.String(r.metric);
    w.Key("aggregate");
    w.String(AggregateName(r.aggregate));
    w.Key("resolution");
    w.String(RuleResolutionName(r.resolution));
  }
  if (r.kind == RuleKind::kThreshold || r.kind == RuleKind::kRateOfChange) {
    w.Key("op");
    w.String(CompareOpName(r.op));
    w.Key("threshold");
    w.Double(r.threshold);
    if (r.clear_threshold) {
      w.Key("clear_threshold");
      w.Double(*r.clear_threshold);
    }
    w.Key("for_windows");
    w.Int(r.for_windows);
  }
  if (r.kind == RuleKind::kAbsence) {
    w.Key("absent_for");
    w.String(fmt::format("{}s", r.absent_for_ns / kNanosPerSecond));
  }
  if (r.kind == RuleKind::kEnergyBudget) {
    w.Key("budget_wh");
    w.Double(r.budget_wh);
  }
  w.Key("severity");
  w.String(r.severity);
  w.Key("channels");
  w.BeginArray();
  for (const Channel& c : r.channels) {
    w.BeginObject();
    w.Key("type");
    w.String(c.type);
    w.Key("url");
    w.String(c.url);
    w.Key("secret");
    if (with_secrets)
      w.String(c.secret);
    else
      w.String("<redacted>");
    w.EndObject();
  }
  w.EndArray();
  w.Key("cooldown");
  w.String(fmt::format("{}s", r.cooldown_ns / kNanosPerSecond));
  w.Key("enabled");
  w.Bool(r.enabled);
  w.EndObject();
  return w.Take();
}

bool RuleMatches(const Rule& rule, std::string_view device_id, std::string_view device_owner,
                 std::string_view device_model) {
  return rule.enabled && RuleCovers(rule, device_id, device_owner, device_model);
}

bool RuleCovers(const Rule& rule, std::string_view device_id, std::string_view device_owner,
                std::string_view device_model) {
  // An owner's rule only ever sees that owner's devices, whatever its scope says.
  if (!rule.owner_id.empty() && rule.owner_id != device_owner) return false;
  if (!rule.scope.device_id.empty()) return rule.scope.device_id == device_id;
  if (!rule.scope.owner_id.empty()) return rule.scope.owner_id == device_owner;
  return !rule.scope.model.empty() && rule.scope.model == device_model;
}

}  // namespace joule::alert

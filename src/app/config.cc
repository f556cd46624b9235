#include "app/config.h"

#include <fmt/format.h>
#include <toml++/toml.h>

#include <cctype>
#include <filesystem>
#include <functional>

#include "common/time_format.h"

namespace joule::app {
namespace {

using Setter = std::function<Status(Config&, const std::string&)>;

struct Key {
  const char* section;
  const char* name;
  Setter set;
  std::function<std::string(const Config&)> get;  // TOML literal
};

Setter String(std::string Config::*field, std::vector<std::string> allowed = {}) {
  return [field, allowed](Config& c, const std::string& v) -> Status {
    if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), v) == allowed.end()) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      return Status::InvalidArgument(fmt::format("'{}' is not one of: {}", v, list));
    }
    c.*field = v;
    return Status::Ok();
  };
}
template <typename T>
Setter Integer(T Config::*field, int64_t min, int64_t max) {
  return [field, min, max](Config& c, const std::string& v) -> Status {
    char* end = nullptr;
    errno = 0;
    long long x = std::strtoll(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0' || errno != 0 || x < min || x > max) {
      return Status::InvalidArgument(
          fmt::format("'{}' is not an integer in [{}, {}]", v, min, max));
    }
    c.*field = static_cast<T>(x);
    return Status::Ok();
  };
}
Setter Duration(int64_t Config::*field, bool allow_zero = false) {
  return [field, allow_zero](Config& c, const std::string& v) -> Status {
    JOULE_ASSIGN_OR_RETURN(int64_t ns, ParseDurationNanos(v));
    if (ns <= 0 && !allow_zero) return Status::InvalidArgument(fmt::format("'{}' must be > 0", v));
    c.*field = ns;
    return Status::Ok();
  };
}
Setter Size(uint64_t Config::*field, bool allow_zero = false) {
  return [field, allow_zero](Config& c, const std::string& v) -> Status {
    JOULE_ASSIGN_OR_RETURN(uint64_t n, ParseSizeBytes(v));
    if (n == 0 && !allow_zero) return Status::InvalidArgument(fmt::format("'{}' must be > 0", v));
    c.*field = n;
    return Status::Ok();
  };
}

std::string Quote(const std::string& s) { return fmt::format("\"{}\"", s); }
std::string DurationText(int64_t ns) {
  if (ns == 0) return "\"0s\"";
  if (ns % 86'400'000'000'000 == 0) return fmt::format("\"{}d\"", ns / 86'400'000'000'000);
  if (ns % 3'600'000'000'000 == 0) return fmt::format("\"{}h\"", ns / 3'600'000'000'000);
  if (ns % 60'000'000'000 == 0) return fmt::format("\"{}m\"", ns / 60'000'000'000);
  if (ns % 1'000'000'000 == 0) return fmt::format("\"{}s\"", ns / 1'000'000'000);
  if (ns % 1'000'000 == 0) return fmt::format("\"{}ms\"", ns / 1'000'000);
  if (ns % 1'000 == 0) return fmt::format("\"{}us\"", ns / 1'000);
  return fmt::format("\"{}ns\"", ns);
}

const std::vector<Key>& Keys() {
  static const std::vector<Key> keys = {
      {"server", "http_listen", String(&Config::http_listen),
       [](const Config& c) { return Quote(c.http_listen); }},
      {"server", "mqtt_listen", String(&Config::mqtt_listen),
       [](const Config& c) { return Quote(c.mqtt_listen); }},
      {"server", "io_threads", Integer(&Config::io_threads, 1, 64),
       [](const Config& c) { return std::to_string(c.io_threads); }},
      {"server", "background_nice", Integer(&Config::background_nice, 0, 19),
       [](const Config& c) { return std::to_string(c.background_nice); }},
      {"server", "max_connections", Integer(&Config::http_max_connections, 1, 1'000'000),
       [](const Config& c) { return std::to_string(c.http_max_connections); }},
      {"server", "max_header_bytes", Size(&Config::http_max_header_bytes),
       [](const Config& c) { return std::to_string(c.http_max_header_bytes); }},
      {"server", "read_timeout", Duration(&Config::http_read_timeout_ns),
       [](const Config& c) { return DurationText(c.http_read_timeout_ns); }},
      {"server", "idle_timeout", Duration(&Config::http_idle_timeout_ns),
       [](const Config& c) { return DurationText(c.http_idle_timeout_ns); }},
      {"server", "tls_cert_file", String(&Config::tls_cert_file),
       [](const Config& c) { return Quote(c.tls_cert_file); }},
      {"server", "tls_key_file", String(&Config::tls_key_file),
       [](const Config& c) { return Quote(c.tls_key_file); }},
      {"ingest", "mqtt_bridge_url", String(&Config::mqtt_bridge_url),
       [](const Config& c) { return Quote(c.mqtt_bridge_url); }},
      {"ingest", "mqtt_bridge_topics", String(&Config::mqtt_bridge_topics),
       [](const Config& c) { return Quote(c.mqtt_bridge_topics); }},
      {"ingest", "mqtt_bridge_client_id", String(&Config::mqtt_bridge_client_id),
       [](const Config& c) { return Quote(c.mqtt_bridge_client_id); }},
      {"ingest", "mqtt_bridge_username", String(&Config::mqtt_bridge_username),
       [](const Config& c) { return Quote(c.mqtt_bridge_username); }},
      {"ingest", "mqtt_bridge_password", String(&Config::mqtt_bridge_password),
       [](const Config& c) { return Quote(c.mqtt_bridge_password.empty() ? "" : "<set>"); }},
      {"ingest", "mqtt_bridge_ca_file", String(&Config::mqtt_bridge_ca_file),
       [](const Config& c) { return Quote(c.mqtt_bridge_ca_file); }},
      {"ingest", "mqtt_bridge_cert_file", String(&Config::mqtt_bridge_cert_file),
       [](const Config& c) { return Quote(c.mqtt_bridge_cert_file); }},
      {"ingest", "mqtt_bridge_key_file", String(&Config::mqtt_bridge_key_file),
       [](const Config& c) { return Quote(c.mqtt_bridge_key_file); }},
      {"storage", "data_dir", String(&Config::data_dir),
       [](const Config& c) { return Quote(c.data_dir); }},
      {"storage", "durability", String(&Config::durability, {"fsync", "none"}),
       [](const Config& c) { return Quote(c.durability); }},
      {"storage", "log_partitions", Integer(&Config::log_partitions, 0, 1024),
       [](const Config& c) { return std::to_string(c.log_partitions); }},
      {"storage", "log_segment_bytes", Size(&Config::log_segment_bytes),
       [](const Config& c) { return std::to_string(c.log_segment_bytes); }},
      {"storage", "log_retention_bytes", Size(&Config::log_retention_bytes, true),
       [](const Config& c) { return std::to_string(c.log_retention_bytes); }},
      {"storage", "log_retention", Duration(&Config::log_retention_ns, true),
       [](const Config& c) { return DurationText(c.log_retention_ns); }},
      {"storage", "log_max_pending_bytes", Size(&Config::log_max_pending_bytes),
       [](const Config& c) { return std::to_string(c.log_max_pending_bytes); }},
      {"storage", "log_group_commit_window", Duration(&Config::log_group_commit_window_ns, true),
       [](const Config& c) { return DurationText(c.log_group_commit_window_ns); }},
      {"storage", "log_prewrite_bytes", Size(&Config::log_prewrite_bytes, true),
       [](const Config& c) { return std::to_string(c.log_prewrite_bytes); }},
      {"stream", "window",
       [](Config& c, const std::string& v) -> Status {
         // Base windows must tile the 1h rollups and every local day: UTC offsets (and
         // Lord Howe's 30-minute DST shift) are multiples of 15 minutes.
         JOULE_ASSIGN_OR_RETURN(int64_t ns, ParseDurationNanos(v));
         constexpr int64_t kQuarterHour = 900'000'000'000;
         if (ns <= 0 || kQuarterHour % ns != 0) {
           return Status::InvalidArgument(fmt::format(
               "'{}' must divide 15 minutes (e.g. 1s, 10s, 30s, 1m, 5m, 15m) so that base "
               "windows tile hours and local days",
               v));
         }
         c.window_ns = ns;
         return Status::Ok();
       },
       [](const Config& c) { return DurationText(c.window_ns); }},
      {"stream", "out_of_orderness", Duration(&Config::out_of_orderness_ns, true),
       [](const Config& c) { return DurationText(c.out_of_orderness_ns); }},
      {"stream", "allowed_lateness", Duration(&Config::allowed_lateness_ns, true),
       [](const Config& c) { return DurationText(c.allowed_lateness_ns); }},
      {"stream", "idle_timeout", Duration(&Config::idle_timeout_ns),
       [](const Config& c) { return DurationText(c.idle_timeout_ns); }},
      {"stream", "early_fire_interval", Duration(&Config::early_fire_interval_ns),
       [](const Config& c) { return DurationText(c.early_fire_interval_ns); }},
      {"stream", "max_gap", Duration(&Config::max_gap_ns),
       [](const Config& c) { return DurationText(c.max_gap_ns); }},
      {"stream", "processor_threads", Integer(&Config::processor_threads, 1, 64),
       [](const Config& c) { return std::to_string(c.processor_threads); }},
      {"stream", "checkpoint_interval", Duration(&Config::checkpoint_interval_ns),
       [](const Config& c) { return DurationText(c.checkpoint_interval_ns); }},
      {"stream", "history_partial_interval", Duration(&Config::history_partial_interval_ns, true),
       [](const Config& c) { return DurationText(c.history_partial_interval_ns); }},
      {"auth", "mode", String(&Config::auth_mode, {"required", "disabled"}),
       [](const Config& c) { return Quote(c.auth_mode); }},
      {"auth", "admin_token", String(&Config::admin_token),
       [](const Config& c) { return Quote(c.admin_token.empty() ? "" : "<set>"); }},
      {"history", "retention_1m", Duration(&Config::history_retention_base_ns, true),
       [](const Config& c) { return DurationText(c.history_retention_base_ns); }},
      {"history", "retention_1h", Duration(&Config::history_retention_hour_ns, true),
       [](const Config& c) { return DurationText(c.history_retention_hour_ns); }},
      {"history", "retention_1d", Duration(&Config::history_retention_day_ns, true),
       [](const Config& c) { return DurationText(c.history_retention_day_ns); }},
      {"history", "json_cache_bytes", Size(&Config::history_json_cache_bytes, true),
       [](const Config& c) { return std::to_string(c.history_json_cache_bytes); }},
      {"metadata", "backend", String(&Config::metadata_backend, {"sqlite", "postgres"}),
       [](const Config& c) { return Quote(c.metadata_backend); }},
      {"metadata", "url", String(&Config::metadata_url),
       [](const Config& c) { return Quote(c.metadata_url); }},
      {"latest", "backend", String(&Config::latest_backend, {"memory", "redis"}),
       [](const Config& c) { return Quote(c.latest_backend); }},
      {"latest", "url", String(&Config::latest_url),
       [](const Config& c) { return Quote(c.latest_url); }},
      {"latest", "windows", Integer(&Config::latest_windows, 1, 100000),
       [](const Config& c) { return std::to_string(c.latest_windows); }},
      {"latest", "catchup_max_records",
       Integer(&Config::latest_catchup_max_records, 0, 100'000'000),
       [](const Config& c) { return std::to_string(c.latest_catchup_max_records); }},
      {"alerts", "allow_private_targets",
       [](Config& c, const std::string& v) -> Status {
         if (v != "true" && v != "false") {
           return Status::InvalidArgument(fmt::format("'{}' is not true or false", v));
         }
         c.alerts_allow_private_targets = v == "true";
         return Status::Ok();
       },
       [](const Config& c) {
         return std::string(c.alerts_allow_private_targets ? "true" : "false");
       }},
      {"alerts", "delivery_timeout", Duration(&Config::alerts_delivery_timeout_ns),
       [](const Config& c) { return DurationText(c.alerts_delivery_timeout_ns); }},
      {"alerts", "retry_initial_backoff", Duration(&Config::alerts_retry_initial_backoff_ns),
       [](const Config& c) { return DurationText(c.alerts_retry_initial_backoff_ns); }},
      {"alerts", "retry_max_backoff", Duration(&Config::alerts_retry_max_backoff_ns),
       [](const Config& c) { return DurationText(c.alerts_retry_max_backoff_ns); }},
      {"alerts", "delivery_max_attempts", Integer(&Config::alerts_delivery_max_attempts, 1, 1000),
       [](const Config& c) { return std::to_string(c.alerts_delivery_max_attempts); }},
      {"alerts", "queue_capacity", Integer(&Config::alerts_queue_capacity, 16, 10'000'000),
       [](const Config& c) { return std::to_string(c.alerts_queue_capacity); }},
      {"alerts", "outbox_capacity", Integer(&Config::alerts_outbox_capacity, 1, 100'000'000),
       [](const Config& c) { return std::to_string(c.alerts_outbox_capacity); }},
      {"alerts", "webhook_ca_file", String(&Config::alerts_webhook_ca_file),
       [](const Config& c) { return Quote(c.alerts_webhook_ca_file); }},
      {"limits", "max_body_bytes", Size(&Config::max_body_bytes),
       [](const Config& c) { return std::to_string(c.max_body_bytes); }},
      {"limits", "max_events_per_request", Integer(&Config::max_events_per_request, 1, 10'000'000),
       [](const Config& c) { return std::to_string(c.max_events_per_request); }},
      {"limits", "max_future_skew", Duration(&Config::max_future_skew_ns, true),
       [](const Config& c) { return DurationText(c.max_future_skew_ns); }},
      {"limits", "max_event_age", Duration(&Config::max_event_age_ns),
       [](const Config& c) { return DurationText(c.max_event_age_ns); }},
      {"limits", "requests_per_second", Integer(&Config::requests_per_second, 0, 1'000'000),
       [](const Config& c) { return std::to_string(c.requests_per_second); }},
      {"limits", "request_burst", Integer(&Config::request_burst, 1, 1'000'000),
       [](const Config& c) { return std::to_string(c.request_burst); }},
      {"limits", "streams_per_key", Integer(&Config::streams_per_key, 0, 1'000'000),
       [](const Config& c) { return std::to_string(c.streams_per_key); }},
      {"limits", "rules_per_owner", Integer(&Config::rules_per_owner, 0, 1'000'000),
       [](const Config& c) { return std::to_string(c.rules_per_owner); }},
      {"limits", "device_events_per_second",
       Integer(&Config::device_events_per_second, 0, 100'000'000),
       [](const Config& c) { return std::to_string(c.device_events_per_second); }},
      {"log", "level", String(&Config::log_level, {"debug", "info", "warn", "error"}),
       [](const Config& c) { return Quote(c.log_level); }},
      {"archive", "enabled",
       [](Config& c, const std::string& v) -> Status {
         if (v != "true" && v != "false") {
           return Status::InvalidArgument(fmt::format("'{}' is not true or false", v));
         }
         c.archive_enabled = v == "true";
         return Status::Ok();
       },
       [](const Config& c) { return std::string(c.archive_enabled ? "true" : "false"); }},
      {"archive", "max_file_bytes", Size(&Config::archive_max_file_bytes),
       [](const Config& c) { return std::to_string(c.archive_max_file_bytes); }},
      {"archive", "max_file_age", Duration(&Config::archive_max_file_age_ns),
       [](const Config& c) { return DurationText(c.archive_max_file_age_ns); }},
      {"archive", "retention", Duration(&Config::archive_retention_ns, true),
       [](const Config& c) { return DurationText(c.archive_retention_ns); }},
  };
  return keys;
}

Status SetMetricKind(Config& c, const std::string& metric, const std::string& kind) {
  model::MetricKind k;
  if (kind == "power")
    k = model::MetricKind::kPower;
  else if (kind == "counter")
    k = model::MetricKind::kCounter;
  else if (kind == "gauge")
    k = model::MetricKind::kGauge;
  else
    return Status::InvalidArgument(
        fmt::format("metric kind '{}' is not power, counter or gauge", kind));
  c.metric_kinds[metric] = k;
  return Status::Ok();
}

std::string NodeToString(const toml::node& node) {
  // Check the node's own type: toml++'s value<int64_t>() also converts booleans.
  if (node.is_string()) return *node.value<std::string>();
  if (node.is_boolean()) return *node.value<bool>() ? "true" : "false";
  if (node.is_integer()) return std::to_string(*node.value<int64_t>());
  return "\x01";  // marker: not a scalar we accept
}

std::string Upper(std::string s) {
  for (auto& ch : s) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  return s;
}

}  // namespace

Result<Config> LoadConfig(const std::string& path, char** envp,
                          std::vector<std::string>* warnings) {
  Config c;
  if (!path.empty()) {
    // (toml++ reads a directory as an empty file: a typo'd --config would start on defaults.)
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) {
      return Status::InvalidArgument(fmt::format("config {}: is a directory, not a file", path));
    }
    toml::table root;
    try {
      root = toml::parse_file(path);
    } catch (const toml::parse_error& e) {
      return Status::InvalidArgument(
          fmt::format("config {}: {} (line {})", path, e.description(), e.source().begin.line));
    }
    for (const auto& [section_key, section_node] : root) {
      std::string section(section_key.str());
      const toml::table* table = section_node.as_table();
      if (!table)
        return Status::InvalidArgument(
            fmt::format("config {}: '{}' must be a table", path, section));
      if (section == "metrics") {
        for (const auto& [sub, sub_node] : *table) {
          const toml::table* kinds = sub_node.as_table();
          if (sub.str() != "kinds" || !kinds) {
            return Status::InvalidArgument(
                fmt::format("config {}: unknown key metrics.{}", path, sub.str()));
          }
          for (const auto& [metric, kind] : *kinds) {
            JOULE_RETURN_IF_ERROR(SetMetricKind(c, std::string(metric.str()), NodeToString(kind)));
          }
        }
        continue;
      }
      for (const auto& [key, value] : *table) {
        const Key* found = nullptr;
        for (const auto& k : Keys()) {
          if (section == k.section && key.str() == k.name) found = &k;
        }
        if (!found) {
          return Status::InvalidArgument(
              fmt::format("config {}: unknown key {}.{}", path, section, key.str()));
        }
        Status st = found->set(c, NodeToString(value));
        if (!st.ok()) {
          return Status::InvalidArgument(
              fmt::format("config {}: {}.{}: {}", path, section, key.str(), st.message()));
        }
      }
    }
  }
  for (char** e = envp; e && *e; ++e) {
    std::string_view kv(*e);
    if (kv.substr(0, 6) != "JOULE_") continue;
    size_t eq = kv.find('=');
    if (eq == std::string_view::npos) continue;
    std::string name(kv.substr(0, eq));
    std::string value(kv.substr(eq + 1));
    const Key* found = nullptr;
    for (const auto& k : Keys()) {
      if (name == Upper(fmt::format("JOULE_{}_{}", k.section, k.name))) found = &k;
    }
    if (!found) {
      // Test-harness and tool variables (JOULE_BIN, …) share the prefix; only warn.
      if (warnings) {
        warnings->push_back(fmt::format(
            "ignoring {}: no such config key (`joule config` lists them as [section] key, "
            "set by JOULE_SECTION_KEY)",
            name));
      }
      continue;
    }
    Status st = found->set(c, value);
    if (!st.ok()) return Status::InvalidArgument(fmt::format("{}: {}", name, st.message()));
  }
  return c;
}

std::string ConfigToToml(const Config& c) {
  std::string out;
  std::string section;
  for (const auto& k : Keys()) {
    if (section != k.section) {
      section = k.section;
      out += fmt::format("{}[{}]\n", out.empty() ? "" : "\n", section);
    }
    out += fmt::format("{} = {}\n", k.name, k.get(c));
  }
  if (!c.metric_kinds.empty()) {
    out += "\n[metrics.kinds]\n";
    for (const auto& [name, kind] : c.metric_kinds) {
      out += fmt::format("{} = \"{}\"\n", name, model::MetricKindName(kind));
    }
  }
  return out;
}

}  // namespace joule::app

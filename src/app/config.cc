#include "app/config.h"

#include <fmt/format.h>
#include <toml++/toml.h>

#include <algorithm>
#include <boost/asio/ip/address.hpp>
#include <cctype>
#include <filesystem>
#include <functional>
#include <string_view>
#include <utility>

#include "common/time_format.h"
#include "common/url_password.h"
#include "ingest/validation.h"
#include "net/mqtt/subscriber.h"
#include "net/url.h"
#include "store/postgres/postgres_metadata_store.h"
#include "store/redis/redis_latest_store.h"

namespace joule::app {

static_assert(kMaxMetadataTimeoutNs ==
                  std::chrono::nanoseconds(store::PostgresMetadataStore::kMigrateTimeout).count(),
              "metadata.*_timeout stays within the statement_timeout the store sets");

std::string FormatDuration(int64_t ns) {
  if (ns == 0) return "0s";
  if (ns % 86'400'000'000'000 == 0) return fmt::format("{}d", ns / 86'400'000'000'000);
  if (ns % 3'600'000'000'000 == 0) return fmt::format("{}h", ns / 3'600'000'000'000);
  if (ns % 60'000'000'000 == 0) return fmt::format("{}m", ns / 60'000'000'000);
  if (ns % 1'000'000'000 == 0) return fmt::format("{}s", ns / 1'000'000'000);
  if (ns % 1'000'000 == 0) return fmt::format("{}ms", ns / 1'000'000);
  if (ns % 1'000 == 0) return fmt::format("{}us", ns / 1'000);
  return fmt::format("{}ns", ns);
}

namespace {

// "16KiB" for a whole number of KiB, MiB or GiB, else the bytes ("100 bytes").
std::string FormatSize(uint64_t n) {
  if (n != 0 && n % (1ull << 30) == 0) return fmt::format("{}GiB", n >> 30);
  if (n != 0 && n % (1ull << 20) == 0) return fmt::format("{}MiB", n >> 20);
  if (n != 0 && n % (1ull << 10) == 0) return fmt::format("{}KiB", n >> 10);
  return fmt::format("{} bytes", n);
}

// What a key's value is, for a TOML file (a wrong type is an error naming the key and the
// type expected; from the environment every value is text).
enum class ValueType { kString, kInteger, kDuration, kSize, kBool };

struct Setter {
  ValueType type;
  std::function<Status(Config&, const std::string&)> set;
};

struct Key {
  const char* section;
  const char* name;
  Setter setter;
  std::function<std::string(const Config&)> get;  // TOML literal
};

// `joule config` prints every secret as this; a config that carries it back is refused
// (fed back, it became the admin token "<set>": found by a black-box test).
constexpr std::string_view kSecretPlaceholder = kRedactedSecret;
constexpr std::string_view kPlaceholderHelp =
    "is the placeholder `joule config` prints for a secret; set the real value or remove the "
    "key";

std::string Upper(std::string s) {
  for (auto& ch : s) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  return s;
}
std::string Lower(std::string s) {
  for (auto& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

bool IsPlaceholder(std::string_view v) {
  if (v.size() >= 2 && v.front() == '\'' && v.back() == '\'') v = v.substr(1, v.size() - 2);
  const std::string lower = Lower(std::string(v));
  return lower == kSecretPlaceholder || lower == "%3cset%3e";
}

Setter String(std::string Config::*field, std::vector<std::string> allowed = {}) {
  return {ValueType::kString, [field, allowed](Config& c, const std::string& v) -> Status {
            if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), v) == allowed.end()) {
              std::string list;
              for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
              return Status::InvalidArgument(fmt::format("'{}' is not one of: {}", v, list));
            }
            c.*field = v;
            return Status::Ok();
          }};
}
// A path that must be set: an empty storage.data_dir passed `joule config`, then `joule serve`
// exited 1 with "cannot create data dir" (found by a black-box test).
Setter RequiredPath(std::string Config::*field) {
  return {ValueType::kString, [field](Config& c, const std::string& v) -> Status {
            if (v.empty()) {
              return Status::InvalidArgument("must not be empty (a directory path, e.g. ./data)");
            }
            c.*field = v;
            return Status::Ok();
          }};
}
// A secret (printed as "<set>" by `joule config`): the placeholder itself is refused.
Setter Secret(std::string Config::*field) {
  return {ValueType::kString, [field](Config& c, const std::string& v) -> Status {
            if (IsPlaceholder(v)) {
              return Status::InvalidArgument(fmt::format("\"{}\" {}", v, kPlaceholderHelp));
            }
            c.*field = v;
            return Status::Ok();
          }};
}
// A secret compared against an HTTP header (auth.admin_token, sent as "Authorization: Bearer
// …"): HTTP drops a header's leading and trailing whitespace and a control character cannot
// be sent in one, so such a token could never match and the admin was locked out without a
// word (found by a black-box test). The message never quotes the value.
Setter HeaderSecret(std::string Config::*field) {
  Setter secret = Secret(field);
  return {ValueType::kString, [set = secret.set](Config& c, const std::string& v) -> Status {
            auto space = [](char ch) {
              return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\v' ||
                     ch == '\f';
            };
            const bool control = std::any_of(v.begin(), v.end(), [](char ch) {
              return static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f;
            });
            if (!v.empty() && (space(v.front()) || space(v.back()) || control)) {
              return Status::InvalidArgument(
                  "must not start or end with whitespace or contain control characters: it is "
                  "compared with an HTTP header, which drops surrounding whitespace and cannot "
                  "carry control characters, so it could never match");
            }
            return set(c, v);
          }};
}
// A URL whose password (if any) is a secret: printed redacted, the placeholder refused.
// `check` validates the rest (may be empty).
Setter Url(std::string Config::*field, std::function<Status(const std::string&)> check = {}) {
  return {ValueType::kString, [field, check](Config& c, const std::string& v) -> Status {
            for (const auto& [pos, len] : UrlPasswordSpans(v)) {
              if (IsPlaceholder(std::string_view(v).substr(pos, len))) {
                return Status::InvalidArgument(fmt::format("the password \"{}\" in '{}' {}",
                                                           v.substr(pos, len), RedactUrlPassword(v),
                                                           kPlaceholderHelp));
              }
            }
            if (check) {
              Status st = check(v);
              // The message may quote the URL: never with its password.
              if (!st.ok()) return Status::InvalidArgument(RedactUrlPasswordIn(st.message(), v));
            }
            c.*field = v;
            return Status::Ok();
          }};
}
// A listen address "host:port" as the listeners take it (src/net/tcp_listen.cc): host an IP
// address, "localhost" or empty (all interfaces); checked at load so that a bad one names
// its key and fails before the server opens anything.
Setter Listen(std::string Config::*field, bool empty_is_off) {
  return {ValueType::kString, [field, empty_is_off](Config& c, const std::string& v) -> Status {
            if (v.empty() && empty_is_off) {
              c.*field = v;
              return Status::Ok();
            }
            JOULE_ASSIGN_OR_RETURN(net::HostPort hp, net::ParseHostPort(v));
            if (!hp.host.empty() && hp.host != "localhost") {
              boost::system::error_code ec;
              boost::asio::ip::make_address(hp.host, ec);
              if (ec) {
                return Status::InvalidArgument(fmt::format(
                    "bad listen address '{}': the host must be an IP address, localhost or "
                    "empty (all interfaces), e.g. 127.0.0.1:8080 or :8080",
                    v));
              }
            }
            c.*field = v;
            return Status::Ok();
          }};
}
template <typename T>
Setter Integer(T Config::*field, int64_t min, int64_t max) {
  return {ValueType::kInteger, [field, min, max](Config& c, const std::string& v) -> Status {
            // Digits with an optional '-': strtoll alone also took " 5" and "+3".
            const bool digits = !v.empty() && (std::isdigit(static_cast<unsigned char>(v[0])) ||
                                               (v[0] == '-' && v.size() > 1));
            char* end = nullptr;
            errno = 0;
            long long x = digits ? std::strtoll(v.c_str(), &end, 10) : 0;
            if (!digits || *end != '\0' || errno != 0 || x < min || x > max) {
              return Status::InvalidArgument(
                  fmt::format("'{}' is not an integer in [{}, {}]", v, min, max));
            }
            c.*field = static_cast<T>(x);
            return Status::Ok();
          }};
}
Setter Duration(int64_t Config::*field, bool allow_zero = false) {
  return {ValueType::kDuration, [field, allow_zero](Config& c, const std::string& v) -> Status {
            JOULE_ASSIGN_OR_RETURN(int64_t ns, ParseDurationNanos(v));
            if (ns <= 0 && !allow_zero) {
              return Status::InvalidArgument(fmt::format("'{}' must be > 0", v));
            }
            c.*field = ns;
            return Status::Ok();
          }};
}
Setter Size(uint64_t Config::*field, bool allow_zero = false) {
  return {ValueType::kSize, [field, allow_zero](Config& c, const std::string& v) -> Status {
            JOULE_ASSIGN_OR_RETURN(uint64_t n, ParseSizeBytes(v));
            if (n == 0 && !allow_zero) {
              return Status::InvalidArgument(fmt::format("'{}' must be > 0", v));
            }
            c.*field = n;
            return Status::Ok();
          }};
}
// A size within [min, max] bytes (max 0 = no maximum), for keys where a small value breaks the
// server (a max_header_bytes of 10 made every request a 431, a log_segment_bytes of 1 one segment
// per record: found by the operator's black-box test, session 31).
Setter SizeIn(uint64_t Config::*field, uint64_t min, uint64_t max) {
  return {ValueType::kSize, [field, min, max](Config& c, const std::string& v) -> Status {
            JOULE_ASSIGN_OR_RETURN(uint64_t n, ParseSizeBytes(v));
            if (n < min || (max != 0 && n > max)) {
              return Status::InvalidArgument(
                  max == 0 ? fmt::format("'{}' is less than the minimum, {}", v, FormatSize(min))
                           : fmt::format("'{}' is not in [{}, {}]", v, FormatSize(min),
                                         FormatSize(max)));
            }
            c.*field = n;
            return Status::Ok();
          }};
}
// A duration of at least `min_ns` (found by a black-box test: a read_timeout of 1ns dropped
// every request, a checkpoint_interval of 1ns checkpointed 20 times a second, a max_gap of 1ns
// never counted energy); `why` says what a shorter one breaks.
Setter DurationAtLeast(int64_t Config::*field, int64_t min_ns, std::string_view why) {
  return {ValueType::kDuration,
          [field, min_ns, why = std::string(why)](Config& c, const std::string& v) -> Status {
            JOULE_ASSIGN_OR_RETURN(int64_t ns, ParseDurationNanos(v));
            if (ns < min_ns) {
              return Status::InvalidArgument(fmt::format("'{}' is less than the minimum, {}: {}", v,
                                                         FormatDuration(min_ns), why));
            }
            c.*field = ns;
            return Status::Ok();
          }};
}
// A duration in [min, max].
Setter DurationIn(int64_t Config::*field, int64_t min_ns, int64_t max_ns, std::string_view why) {
  return {
      ValueType::kDuration,
      [field, min_ns, max_ns, why = std::string(why)](Config& c, const std::string& v) -> Status {
        JOULE_ASSIGN_OR_RETURN(int64_t ns, ParseDurationNanos(v));
        if (ns < min_ns || ns > max_ns) {
          return Status::InvalidArgument(fmt::format("'{}' is not in [{}, {}]: {}", v,
                                                     FormatDuration(min_ns), FormatDuration(max_ns),
                                                     why));
        }
        c.*field = ns;
        return Status::Ok();
      }};
}
// A duration in [0, max].
Setter DurationUpTo(int64_t Config::*field, int64_t max_ns, std::string_view why) {
  return {ValueType::kDuration,
          [field, max_ns, why = std::string(why)](Config& c, const std::string& v) -> Status {
            JOULE_ASSIGN_OR_RETURN(int64_t ns, ParseDurationNanos(v));
            if (ns < 0 || ns > max_ns) {
              return Status::InvalidArgument(
                  fmt::format("'{}' is not in [0s, {}]: {}", v, FormatDuration(max_ns), why));
            }
            c.*field = ns;
            return Status::Ok();
          }};
}
Setter Bool(bool Config::*field) {
  return {ValueType::kBool, [field](Config& c, const std::string& v) -> Status {
            if (v != "true" && v != "false") {
              return Status::InvalidArgument(fmt::format("'{}' is not true or false", v));
            }
            c.*field = v == "true";
            return Status::Ok();
          }};
}

// A TOML basic string: quotes, backslashes and control characters escaped.
std::string Quote(const std::string& s) {
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += ch;
    } else if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) {
      out += fmt::format("\\u{:04X}", static_cast<unsigned char>(ch));
    } else {
      out += ch;
    }
  }
  return out + "\"";
}
std::string DurationText(int64_t ns) { return "\"" + FormatDuration(ns) + "\""; }

const std::vector<Key>& Keys() {
  static const std::vector<Key> keys = {
      {"server", "http_listen", Listen(&Config::http_listen, false),
       [](const Config& c) { return Quote(c.http_listen); }},
      {"server", "mqtt_listen", Listen(&Config::mqtt_listen, true),
       [](const Config& c) { return Quote(c.mqtt_listen); }},
      {"server", "io_threads", Integer(&Config::io_threads, 1, 64),
       [](const Config& c) { return std::to_string(c.io_threads); }},
      {"server", "background_nice", Integer(&Config::background_nice, 0, 19),
       [](const Config& c) { return std::to_string(c.background_nice); }},
      {"server", "max_connections", Integer(&Config::http_max_connections, 1, 1'000'000),
       [](const Config& c) { return std::to_string(c.http_max_connections); }},
      {"server", "max_header_bytes",
       SizeIn(&Config::http_max_header_bytes, kMinHeaderBytes, kMaxHeaderBytes),
       [](const Config& c) { return std::to_string(c.http_max_header_bytes); }},
      {"server", "read_timeout",
       DurationAtLeast(&Config::http_read_timeout_ns, kMinHttpTimeoutNs,
                       "a shorter one drops requests still being sent"),
       [](const Config& c) { return DurationText(c.http_read_timeout_ns); }},
      {"server", "idle_timeout",
       DurationAtLeast(&Config::http_idle_timeout_ns, kMinHttpTimeoutNs,
                       "a shorter one closes kept-alive connections between requests"),
       [](const Config& c) { return DurationText(c.http_idle_timeout_ns); }},
      {"server", "tls_cert_file", String(&Config::tls_cert_file),
       [](const Config& c) { return Quote(c.tls_cert_file); }},
      {"server", "tls_key_file", String(&Config::tls_key_file),
       [](const Config& c) { return Quote(c.tls_key_file); }},
      {"ingest", "mqtt_bridge_url",
       Url(&Config::mqtt_bridge_url,
           [](const std::string& v) {
             if (v.empty()) return Status::Ok();
             net::mqtt::MqttSubscriberOptions ignored;
             return net::mqtt::ParseBrokerUrl(v, &ignored);
           }),
       [](const Config& c) { return Quote(RedactUrlPassword(c.mqtt_bridge_url)); }},
      {"ingest",
       "mqtt_bridge_topics",
       {ValueType::kString,
        [](Config& c, const std::string& v) -> Status {
          // A malformed filter was accepted; the broker then closed every connection and the
          // bridge reconnected forever naming nothing (found by a black-box test).
          std::vector<std::string> ignored;
          JOULE_RETURN_IF_ERROR(net::mqtt::ParseTopicFilters(v, &ignored));
          c.mqtt_bridge_topics = v;
          return Status::Ok();
        }},
       [](const Config& c) { return Quote(c.mqtt_bridge_topics); }},
      {"ingest", "mqtt_bridge_client_id", String(&Config::mqtt_bridge_client_id),
       [](const Config& c) { return Quote(c.mqtt_bridge_client_id); }},
      {"ingest", "mqtt_bridge_username", String(&Config::mqtt_bridge_username),
       [](const Config& c) { return Quote(c.mqtt_bridge_username); }},
      {"ingest", "mqtt_bridge_password", Secret(&Config::mqtt_bridge_password),
       [](const Config& c) { return Quote(c.mqtt_bridge_password.empty() ? "" : "<set>"); }},
      {"ingest", "mqtt_bridge_ca_file", String(&Config::mqtt_bridge_ca_file),
       [](const Config& c) { return Quote(c.mqtt_bridge_ca_file); }},
      {"ingest", "mqtt_bridge_cert_file", String(&Config::mqtt_bridge_cert_file),
       [](const Config& c) { return Quote(c.mqtt_bridge_cert_file); }},
      {"ingest", "mqtt_bridge_key_file", String(&Config::mqtt_bridge_key_file),
       [](const Config& c) { return Quote(c.mqtt_bridge_key_file); }},
      {"storage", "data_dir", RequiredPath(&Config::data_dir),
       [](const Config& c) { return Quote(c.data_dir); }},
      {"storage", "durability", String(&Config::durability, {"fsync", "none"}),
       [](const Config& c) { return Quote(c.durability); }},
      {"storage", "log_partitions", Integer(&Config::log_partitions, 0, 1024),
       [](const Config& c) { return std::to_string(c.log_partitions); }},
      {"storage", "log_segment_bytes", SizeIn(&Config::log_segment_bytes, kMinLogSegmentBytes, 0),
       [](const Config& c) { return std::to_string(c.log_segment_bytes); }},
      {"storage", "log_retention_bytes", Size(&Config::log_retention_bytes, true),
       [](const Config& c) { return std::to_string(c.log_retention_bytes); }},
      {"storage", "log_retention", Duration(&Config::log_retention_ns, true),
       [](const Config& c) { return DurationText(c.log_retention_ns); }},
      {"storage", "log_max_pending_bytes", Size(&Config::log_max_pending_bytes),
       [](const Config& c) { return std::to_string(c.log_max_pending_bytes); }},
      {"storage", "log_group_commit_window",
       DurationUpTo(&Config::log_group_commit_window_ns, kMaxGroupCommitWindowNs,
                    "it delays every acknowledgement (src/log/README.md, \"Group-commit "
                    "window\")"),
       [](const Config& c) { return DurationText(c.log_group_commit_window_ns); }},
      {"storage", "log_prewrite_bytes", Size(&Config::log_prewrite_bytes, true),
       [](const Config& c) { return std::to_string(c.log_prewrite_bytes); }},
      {"storage", "log_damage", String(&Config::log_damage, {"refuse", "cut"}),
       [](const Config& c) { return Quote(c.log_damage); }},
      {"stream",
       "window",
       {ValueType::kDuration,
        [](Config& c, const std::string& v) -> Status {
          // Base windows must tile the 1h rollups and every local day: UTC offsets (and
          // Lord Howe's 30-minute DST shift) are multiples of 15 minutes. And a whole number
          // of seconds: "1us" divided 15 minutes too, and two events 1 s apart then made a
          // million windows, one core at 100 % and SIGTERM unanswered (found by a black-box
          // test).
          JOULE_ASSIGN_OR_RETURN(int64_t ns, ParseDurationNanos(v));
          constexpr int64_t kSecond = 1'000'000'000;
          constexpr int64_t kQuarterHour = 900 * kSecond;
          if (ns < kSecond || ns % kSecond != 0 || kQuarterHour % ns != 0) {
            std::string allowed;
            for (int64_t s = 1; s <= 900; ++s) {
              if (900 % s == 0) {
                allowed += (allowed.empty() ? "" : ", ") + FormatDuration(s * kSecond);
              }
            }
            return Status::InvalidArgument(fmt::format(
                "'{}' must be a whole number of seconds, at least 1s, that divides 15 minutes "
                "(one of {}) so that base windows tile hours and local days",
                v, allowed));
          }
          c.window_ns = ns;
          return Status::Ok();
        }},
       [](const Config& c) { return DurationText(c.window_ns); }},
      {"stream", "out_of_orderness", Duration(&Config::out_of_orderness_ns, true),
       [](const Config& c) { return DurationText(c.out_of_orderness_ns); }},
      {"stream", "allowed_lateness", Duration(&Config::allowed_lateness_ns, true),
       [](const Config& c) { return DurationText(c.allowed_lateness_ns); }},
      {"stream", "idle_timeout", Duration(&Config::idle_timeout_ns),
       [](const Config& c) { return DurationText(c.idle_timeout_ns); }},
      {"stream", "early_fire_interval", Duration(&Config::early_fire_interval_ns),
       [](const Config& c) { return DurationText(c.early_fire_interval_ns); }},
      {"stream", "max_gap",
       DurationAtLeast(&Config::max_gap_ns, kMinMaxGapNs,
                       "power samples further apart count no energy, and devices send at most "
                       "about one a second"),
       [](const Config& c) { return DurationText(c.max_gap_ns); }},
      {"stream", "processor_threads", Integer(&Config::processor_threads, 1, 64),
       [](const Config& c) { return std::to_string(c.processor_threads); }},
      {"stream", "checkpoint_interval",
       DurationAtLeast(&Config::checkpoint_interval_ns, kMinCheckpointIntervalNs,
                       "every checkpoint writes each processor's whole window state"),
       [](const Config& c) { return DurationText(c.checkpoint_interval_ns); }},
      {"stream", "history_partial_interval", Duration(&Config::history_partial_interval_ns, true),
       [](const Config& c) { return DurationText(c.history_partial_interval_ns); }},
      {"auth", "mode", String(&Config::auth_mode, {"required", "disabled"}),
       [](const Config& c) { return Quote(c.auth_mode); }},
      {"auth", "admin_token", HeaderSecret(&Config::admin_token),
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
      {"metadata", "url", Url(&Config::metadata_url),
       [](const Config& c) { return Quote(RedactUrlPassword(c.metadata_url)); }},
      {"metadata", "lookup_timeout",
       DurationIn(&Config::metadata_lookup_timeout_ns, kMinMetadataTimeoutNs, kMaxMetadataTimeoutNs,
                  "a shorter one gives up on a healthy database, a longer one is cut by the "
                  "server's statement_timeout"),
       [](const Config& c) { return DurationText(c.metadata_lookup_timeout_ns); }},
      {"metadata", "query_timeout",
       DurationIn(&Config::metadata_query_timeout_ns, kMinMetadataTimeoutNs, kMaxMetadataTimeoutNs,
                  "a shorter one gives up on a healthy database, a longer one is cut by the "
                  "server's statement_timeout"),
       [](const Config& c) { return DurationText(c.metadata_query_timeout_ns); }},
      {"latest", "backend", String(&Config::latest_backend, {"memory", "redis"}),
       [](const Config& c) { return Quote(c.latest_backend); }},
      // Checked when set, like ingest.mqtt_bridge_url: a malformed one passed `joule config`,
      // then `joule serve` exited 1 with the password in the log (found by a black-box test).
      {"latest", "url",
       Url(&Config::latest_url,
           [](const std::string& v) {
             if (v.empty()) return Status::Ok();
             return store::ParseRedisUrl(v).status();
           }),
       [](const Config& c) { return Quote(RedactUrlPassword(c.latest_url)); }},
      {"latest", "windows", Integer(&Config::latest_windows, 1, 100000),
       [](const Config& c) { return std::to_string(c.latest_windows); }},
      {"latest", "catchup_max_records",
       Integer(&Config::latest_catchup_max_records, 0, 100'000'000),
       [](const Config& c) { return std::to_string(c.latest_catchup_max_records); }},
      {"alerts", "allow_private_targets", Bool(&Config::alerts_allow_private_targets),
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
      {"alerts", "delivery_max_targets", Integer(&Config::alerts_delivery_max_targets, 1, 4096),
       [](const Config& c) { return std::to_string(c.alerts_delivery_max_targets); }},
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
      {"archive", "enabled", Bool(&Config::archive_enabled),
       [](const Config& c) { return std::string(c.archive_enabled ? "true" : "false"); }},
      {"archive", "max_file_bytes",
       SizeIn(&Config::archive_max_file_bytes, kMinArchiveFileBytes, 0),
       [](const Config& c) { return std::to_string(c.archive_max_file_bytes); }},
      {"archive", "max_file_age",
       DurationAtLeast(&Config::archive_max_file_age_ns, kMinArchiveFileAgeNs,
                       "every sealed file is a file (and a fsync) of its own"),
       [](const Config& c) { return DurationText(c.archive_max_file_age_ns); }},
      {"archive", "retention", Duration(&Config::archive_retention_ns, true),
       [](const Config& c) { return DurationText(c.archive_retention_ns); }},
  };
  return keys;
}

// The key of a [metrics.kinds] entry as a message names it (quoted when it is no bare key).
std::string MetricKindKey(std::string_view metric) {
  return "metrics.kinds." +
         (ingest::ValidMetricName(metric) ? std::string(metric) : Quote(std::string(metric)));
}

// A name that can never be a metric's (CONTRACT §1) is refused: it was accepted silently and
// its kind applied to nothing (found by a black-box test).
Status SetMetricKind(Config& c, const std::string& metric, const std::string& kind) {
  if (!ingest::ValidMetricName(metric)) {
    return Status::InvalidArgument(fmt::format(
        "{} is not a metric name ([a-z][a-z0-9_]{{0,63}}, CONTRACT §1)", Quote(metric)));
  }
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

std::string_view TomlTypeName(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
    default:
      return "nothing";
  }
}

// The text a setter parses, from a TOML value of a type the key takes (a string for text,
// duration and size keys; an integer for integer, duration (seconds) and size (bytes) keys;
// a boolean for boolean keys); another type is an error saying what the key expects. An
// integer or boolean key does not take a string: `max_events_per_request = "10"` and
// `enabled = "true"` were taken (found by the operator's black-box test, session 31).
Result<std::string> NodeText(const toml::node& node, ValueType type) {
  // Check the node's own type: toml++'s value<int64_t>() also converts booleans.
  if (node.is_string() && type != ValueType::kInteger && type != ValueType::kBool) {
    return *node.value<std::string>();
  }
  std::string_view expected;
  switch (type) {
    case ValueType::kString:
      expected = "a string";
      break;
    case ValueType::kInteger:
      if (node.is_integer()) return std::to_string(*node.value<int64_t>());
      expected = "an integer";
      break;
    case ValueType::kDuration:
      if (node.is_integer()) return std::to_string(*node.value<int64_t>());
      expected = "a duration string like \"10s\"";
      break;
    case ValueType::kSize:
      if (node.is_integer()) return std::to_string(*node.value<int64_t>());
      expected = "a size like \"64MiB\" or a number of bytes";
      break;
    case ValueType::kBool:
      if (node.is_boolean()) return std::string(*node.value<bool>() ? "true" : "false");
      expected = "true or false";
      break;
  }
  return Status::InvalidArgument(fmt::format("expected {}, got {}", expected, TomlTypeName(node)));
}

// The address a listen setting binds (as src/net/tcp_listen.cc does: empty host = every
// interface, IPv6 and IPv4), for a setting Listen() accepted.
boost::asio::ip::address ListenAddress(const net::HostPort& hp) {
  if (hp.host.empty()) return boost::asio::ip::address_v6::any();
  if (hp.host == "localhost") return boost::asio::ip::address_v4::loopback();
  boost::system::error_code ec;
  const boost::asio::ip::address a = boost::asio::ip::make_address(hp.host, ec);
  // An IPv4-mapped IPv6 address (::ffff:a.b.c.d) binds the IPv4 one: [::ffff:127.0.0.1]:P
  // and 127.0.0.1:P passed the check, then the second bind failed (found by a black-box
  // test).
  if (a.is_v6() && a.to_v6().is_v4_mapped()) {
    return boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, a.to_v6());
  }
  return a;
}

// Whether two listen settings take the same port: the same non-zero port on the same
// address, or on addresses one of which covers the other (:: covers every one, 0.0.0.0 every
// IPv4 one). Port 0 (the system picks) never collides.
bool ListenersCollide(const std::string& a, const std::string& b) {
  Result<net::HostPort> x = net::ParseHostPort(a);
  Result<net::HostPort> y = net::ParseHostPort(b);
  if (!x.ok() || !y.ok() || x->port == 0 || x->port != y->port) return false;
  const boost::asio::ip::address p = ListenAddress(*x);
  const boost::asio::ip::address q = ListenAddress(*y);
  auto covers = [](const boost::asio::ip::address& any, const boost::asio::ip::address& other) {
    return any.is_unspecified() && (any.is_v6() || other.is_v4());
  };
  return p == q || covers(p, q) || covers(q, p);
}

// A file the server reads at start (TLS certificates, keys, CAs): one that does not exist,
// or a directory, is refused at load naming the key — it passed `joule config`, then `joule
// serve` exited 1, for TLS without naming the key (found by the operator's black-box test,
// session 31). Only what is certain: a file this user cannot see into (a key readable by
// the server's user alone, read by `joule devices` run by another) is left to the server,
// whose error names the key; so is a file whose contents are bad.
Status CheckFileExists(std::string_view key, const std::string& path) {
  if (path.empty()) return Status::Ok();
  std::error_code ec;
  const std::filesystem::file_status st = std::filesystem::status(path, ec);
  if (st.type() == std::filesystem::file_type::not_found) {
    return Status::InvalidArgument(fmt::format("{}: '{}': no such file", key, path));
  }
  if (st.type() == std::filesystem::file_type::directory) {
    return Status::InvalidArgument(fmt::format("{}: '{}' is a directory, not a file", key, path));
  }
  return Status::Ok();
}

// Whether a metadata.url is a PostgreSQL connection string rather than a SQLite file path: a
// URI ("postgresql://…", any "scheme://") or libpq's "keyword=value …" form.
bool LooksLikePostgresUrl(std::string_view url) {
  if (url.find("://") != std::string_view::npos) return true;
  size_t i = 0;
  while (i < url.size() && (std::isalnum(static_cast<unsigned char>(url[i])) || url[i] == '_')) {
    ++i;
  }
  if (i == 0) return false;
  while (i < url.size() && url[i] == ' ') ++i;
  return i < url.size() && url[i] == '=';
}

// Settings that only make sense together, checked once the file and the environment are
// both applied (so a bad combination fails the same way, before anything is opened).
Status CheckCombinations(const Config& c) {
  // Both listeners on one port: `joule serve` failed to bind the second (found by a
  // black-box test).
  if (!c.mqtt_listen.empty() && ListenersCollide(c.http_listen, c.mqtt_listen)) {
    return Status::InvalidArgument(fmt::format(
        "server.http_listen (\"{}\") and server.mqtt_listen (\"{}\") take the same port: give "
        "each listener its own (or mqtt_listen = \"\" to turn MQTT off)",
        c.http_listen, c.mqtt_listen));
  }
  if (c.alerts_retry_initial_backoff_ns > c.alerts_retry_max_backoff_ns) {
    return Status::InvalidArgument(fmt::format(
        "alerts.retry_initial_backoff ({}) is more than alerts.retry_max_backoff ({}): the "
        "backoff starts at the one and grows up to the other",
        FormatDuration(c.alerts_retry_initial_backoff_ns),
        FormatDuration(c.alerts_retry_max_backoff_ns)));
  }
  // A history retention (0 = forever) shorter than its resolution keeps no record a whole
  // window; one shorter than stream.allowed_lateness drops records that late events still
  // update (found by a black-box test: retention_1m "1m" with allowed_lateness "30d").
  const struct {
    const char* key;
    int64_t retention_ns;
    int64_t resolution_ns;
    const char* resolution;
  } retentions[] = {
      {"history.retention_1m", c.history_retention_base_ns, c.window_ns, "stream.window"},
      {"history.retention_1h", c.history_retention_hour_ns, 3'600'000'000'000, "1h"},
      {"history.retention_1d", c.history_retention_day_ns, 86'400'000'000'000, "1d"},
  };
  for (const auto& r : retentions) {
    if (r.retention_ns == 0) continue;
    if (r.retention_ns < r.resolution_ns) {
      return Status::InvalidArgument(fmt::format(
          "{} ({}) is shorter than its resolution ({}, {}): set at least that, or "
          "0s (forever)",
          r.key, FormatDuration(r.retention_ns), r.resolution, FormatDuration(r.resolution_ns)));
    }
    if (r.retention_ns < c.allowed_lateness_ns) {
      return Status::InvalidArgument(fmt::format(
          "{} ({}) is shorter than stream.allowed_lateness ({}): records that late events "
          "still update would be gone; set at least that, or 0s (forever)",
          r.key, FormatDuration(r.retention_ns), FormatDuration(c.allowed_lateness_ns)));
    }
  }
  // A URL for a backend that is not selected was silently ignored: a PostgreSQL URL without
  // metadata.backend = "postgres" ran on SQLite (found by a black-box test). With sqlite,
  // metadata.url is the SQLite file's path (default {data_dir}/metadata.db), so only what is
  // a PostgreSQL connection string is refused there; latest.url is always a Redis URL.
  if (c.metadata_backend == "sqlite" && LooksLikePostgresUrl(c.metadata_url)) {
    return Status::InvalidArgument(fmt::format(
        "metadata.url is set (to \"{}\") but metadata.backend is \"sqlite\"; set "
        "metadata.backend = \"postgres\" or remove the url (with sqlite, metadata.url is the "
        "SQLite file's path)",
        RedactUrlPassword(c.metadata_url)));
  }
  // (With sqlite, the timeouts are accepted and have no effect: their defaults are always
  // "set", so refusing them there would need telling a written default from none.)
  if (c.metadata_lookup_timeout_ns > c.metadata_query_timeout_ns) {
    return Status::InvalidArgument(fmt::format(
        "metadata.lookup_timeout ({}) is more than metadata.query_timeout ({}): the request "
        "path's lookups are the ones that must not wait longer",
        FormatDuration(c.metadata_lookup_timeout_ns), FormatDuration(c.metadata_query_timeout_ns)));
  }
  if (c.latest_backend == "memory" && !c.latest_url.empty()) {
    return Status::InvalidArgument(
        "latest.url is set but latest.backend is \"memory\"; set latest.backend = \"redis\" or "
        "remove the url");
  }
  if (c.metadata_backend == "postgres" && c.metadata_url.empty()) {
    return Status::InvalidArgument(
        "metadata.backend = \"postgres\" needs metadata.url (a libpq URL, e.g. "
        "postgresql://joule@127.0.0.1:5432/joule)");
  }
  if (c.metadata_backend == "postgres") {
    // libpq's own parse, as the store's connect would make it: a malformed URL is refused
    // here, naming the key (it was an exit 1 at start, with libpq quoting the password).
    if (Status st = store::CheckPostgresUrl(c.metadata_url); !st.ok()) {
      return Status::InvalidArgument(fmt::format("metadata.url: {}", st.message()));
    }
  }
  if (c.latest_backend == "redis" && c.latest_url.empty()) {
    return Status::InvalidArgument(
        "latest.backend = \"redis\" needs latest.url (e.g. redis://127.0.0.1:6379/0)");
  }
  if (c.tls_cert_file.empty() != c.tls_key_file.empty()) {
    return Status::InvalidArgument(
        "server.tls_cert_file and server.tls_key_file must be set together");
  }
  JOULE_RETURN_IF_ERROR(CheckFileExists("server.tls_cert_file", c.tls_cert_file));
  JOULE_RETURN_IF_ERROR(CheckFileExists("server.tls_key_file", c.tls_key_file));
  JOULE_RETURN_IF_ERROR(CheckFileExists("alerts.webhook_ca_file", c.alerts_webhook_ca_file));
  JOULE_RETURN_IF_ERROR(CheckFileExists("ingest.mqtt_bridge_ca_file", c.mqtt_bridge_ca_file));
  JOULE_RETURN_IF_ERROR(CheckFileExists("ingest.mqtt_bridge_cert_file", c.mqtt_bridge_cert_file));
  JOULE_RETURN_IF_ERROR(CheckFileExists("ingest.mqtt_bridge_key_file", c.mqtt_bridge_key_file));
  if (!c.mqtt_bridge_url.empty()) {
    net::mqtt::MqttSubscriberOptions broker;  // the url was checked when it was set
    JOULE_RETURN_IF_ERROR(net::mqtt::ParseBrokerUrl(c.mqtt_bridge_url, &broker));
    if (c.mqtt_bridge_topics.find_first_not_of(", ") == std::string::npos ||
        c.mqtt_bridge_client_id.empty()) {
      return Status::InvalidArgument(
          "ingest.mqtt_bridge_topics and ingest.mqtt_bridge_client_id must not be empty when "
          "ingest.mqtt_bridge_url is set");
    }
    if (!broker.use_tls && (!c.mqtt_bridge_ca_file.empty() || !c.mqtt_bridge_cert_file.empty() ||
                            !c.mqtt_bridge_key_file.empty())) {
      return Status::InvalidArgument(
          "ingest.mqtt_bridge_ca_file / _cert_file / _key_file are set but "
          "ingest.mqtt_bridge_url is not mqtts://");
    }
    // Checked here, exit 2 naming the key missing: `joule serve` found it only when
    // loading the TLS context, after opening the data dir, and exited 1 with "set both
    // files or neither" (found by a black-box test).
    if (c.mqtt_bridge_cert_file.empty() != c.mqtt_bridge_key_file.empty()) {
      return Status::InvalidArgument(fmt::format(
          "{} is set but {} is not: a client certificate needs its private key (set both "
          "ingest.mqtt_bridge_cert_file and ingest.mqtt_bridge_key_file, or neither)",
          c.mqtt_bridge_cert_file.empty() ? "ingest.mqtt_bridge_key_file"
                                          : "ingest.mqtt_bridge_cert_file",
          c.mqtt_bridge_cert_file.empty() ? "ingest.mqtt_bridge_cert_file"
                                          : "ingest.mqtt_bridge_key_file"));
    }
  }
  return Status::Ok();
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
    if (!std::filesystem::exists(path, ec)) {
      return Status::InvalidArgument(fmt::format("config {}: no such file", path));
    }
    toml::table root;
    try {
      root = toml::parse_file(path);
    } catch (const toml::parse_error& e) {
      // (line 0: not a syntax error but the file itself, e.g. not readable)
      const auto line = e.source().begin.line;
      return Status::InvalidArgument(
          line == 0 ? fmt::format("config {}: {}", path, e.description())
                    : fmt::format("config {}: {} (line {})", path, e.description(), line));
    }
    for (const auto& [section_key, section_node] : root) {
      std::string section(section_key.str());
      const toml::table* table = section_node.as_table();
      if (!table) {
        // A key above every [section] (it said "'io_threads' must be a table"; found by a
        // black-box test): say so, and where a key of that name lives.
        std::string where;
        for (const auto& k : Keys()) {
          if (section == k.name) {
            where += fmt::format("{}[{}] {}", where.empty() ? "" : " or ", k.section, k.name);
          }
        }
        return Status::InvalidArgument(
            where.empty()
                ? fmt::format("config {}: unknown top-level key '{}' (every key belongs in a "
                              "[section]: `joule config` lists them)",
                              path, section)
                : fmt::format("config {}: key '{}' is outside any section; did you mean {}?", path,
                              section, where));
      }
      // An unknown section is an error even when empty (`[sever]` alone was taken; found by
      // a black-box test), as an unknown key in it is.
      const bool known_section =
          section == "metrics" || std::any_of(Keys().begin(), Keys().end(),
                                              [&](const Key& k) { return section == k.section; });
      if (!known_section) {
        return Status::InvalidArgument(fmt::format(
            "config {}: unknown section [{}] (`joule config` lists them)", path, section));
      }
      if (section == "metrics") {
        for (const auto& [sub, sub_node] : *table) {
          const toml::table* kinds = sub_node.as_table();
          if (sub.str() != "kinds") {
            return Status::InvalidArgument(
                fmt::format("config {}: unknown key metrics.{}", path, sub.str()));
          }
          if (!kinds) {  // (`kinds = 5` said "unknown key metrics.kinds")
            return Status::InvalidArgument(fmt::format(
                "config {}: metrics.kinds: expected a table (metric = \"power\", \"counter\" "
                "or \"gauge\"), got {}",
                path, TomlTypeName(sub_node)));
          }
          for (const auto& [metric, kind] : *kinds) {
            Status st =
                kind.is_string()
                    ? SetMetricKind(c, std::string(metric.str()), *kind.value<std::string>())
                    : Status::InvalidArgument(
                          fmt::format("expected a string (power, counter or gauge), got {}",
                                      TomlTypeName(kind)));
            if (!st.ok()) {
              return Status::InvalidArgument(fmt::format(
                  "config {}: {}: {}", path, MetricKindKey(metric.str()), st.message()));
            }
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
        Result<std::string> text = NodeText(value, found->setter.type);
        Status st = text.ok() ? found->setter.set(c, *text) : text.status();
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
    // [metrics.kinds] <name>: JOULE_METRICS_KINDS_<NAME>, the name lower-cased (metric
    // names are lower case, so the mapping loses nothing).
    if (constexpr std::string_view kKinds = "JOULE_METRICS_KINDS_"; name.starts_with(kKinds)) {
      Status st = SetMetricKind(c, Lower(name.substr(kKinds.size())), value);
      if (!st.ok()) return Status::InvalidArgument(fmt::format("{}: {}", name, st.message()));
      continue;
    }
    const Key* found = nullptr;
    for (const auto& k : Keys()) {
      if (name == Upper(fmt::format("JOULE_{}_{}", k.section, k.name))) found = &k;
    }
    if (!found) {
      // Test-harness and tool variables (JOULE_BIN, …) share the prefix; only warn. No
      // section is called "test": JOULE_TEST_* belongs to the test services
      // (scripts/test-services.sh exports JOULE_TEST_PG_URL, …) and is not even warned
      // about — a shell set up as the docs say would warn on every command.
      if (warnings && !name.starts_with("JOULE_TEST_")) {
        warnings->push_back(fmt::format(
            "ignoring {}: no such config key (`joule config` lists them as [section] key, "
            "set by JOULE_SECTION_KEY)",
            name));
      }
      continue;
    }
    Status st = found->setter.set(c, value);
    if (!st.ok()) return Status::InvalidArgument(fmt::format("{}: {}", name, st.message()));
  }
  JOULE_RETURN_IF_ERROR(CheckCombinations(c));
  return c;
}

std::string ConfigToToml(const Config& c) {
  std::string out =
      "# The effective configuration. Secrets (auth.admin_token, ingest.mqtt_bridge_password,\n"
      "# the password of a URL) are shown as \"<set>\": this is not a complete config for\n"
      "# them, and a config that carries \"<set>\" back is refused.\n";
  std::string section;
  for (const auto& k : Keys()) {
    if (section != k.section) {
      section = k.section;
      out += fmt::format("\n[{}]\n", section);
    }
    out += fmt::format("{} = {}\n", k.name, k.get(c));
  }
  // Printed also when empty, so that every key shows (CONTRACT §2 "Metric kinds").
  out += "\n[metrics.kinds]\n";
  out +=
      "# metric name = \"power\", \"counter\" or \"gauge\"; unset names get the kind of their\n"
      "# suffix (_w power; _wh, _total counter; else gauge). E.g.:\n"
      "# solar_w = \"power\"\n";
  for (const auto& [name, kind] : c.metric_kinds) {
    out += fmt::format("{} = \"{}\"\n", name, model::MetricKindName(kind));
  }
  return out;
}

}  // namespace joule::app

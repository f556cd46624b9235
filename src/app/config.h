// Config: every setting of `joule serve`, with the embedded defaults of CONTRACT §5.
// Loaded from an optional TOML file, then overridden by JOULE_<SECTION>_<KEY>
// environment variables (upper case, dots → '_'), which win; a [metrics.kinds] entry by
// JOULE_METRICS_KINDS_<NAME> (the metric name lower-cased).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "model/aggregate_record.h"

namespace joule::app {

// Bounds of keys that took nonsense (found by the operator's black-box test, session 31).
// server.max_header_bytes: below 1 KiB even "GET /healthz" with a Host and an
// Authorization header is a 431; above 1 MiB a connection's read buffer (that + 128 KiB)
// is no longer a bound worth having.
constexpr uint64_t kMinHeaderBytes = 1024;
constexpr uint64_t kMaxHeaderBytes = 1024 * 1024;
// storage.log_segment_bytes: a segment holds dozens of records at least (a 1-byte segment
// gave one segment file per record); the crash tests' 16 KiB is the smallest in use.
constexpr uint64_t kMinLogSegmentBytes = 16 * 1024;
// storage.log_group_commit_window: it delays every acknowledgement by up to this much. The
// windows measured were 0 to 2 ms (src/log/README.md, "Group-commit window"); more than
// 100 ms only delays, and a shutdown ends it anyway.
constexpr int64_t kMaxGroupCommitWindowNs = 100'000'000;

// Lower bounds of durations and sizes that took nonsense (found by a black-box test): a
// server.read_timeout or idle_timeout of 1ns dropped every request; a
// stream.checkpoint_interval of 1ns checkpointed 20 times a second (the crash tests' 100 ms is
// the shortest in use); a stream.max_gap of 1ns never counted energy (devices send about once
// a second at most); an archive.max_file_age of 1ns or max_file_bytes of 1 sealed a file per
// event or so.
constexpr int64_t kMinHttpTimeoutNs = 100'000'000;
constexpr int64_t kMinCheckpointIntervalNs = 100'000'000;
constexpr int64_t kMinMaxGapNs = 1'000'000'000;
constexpr int64_t kMinArchiveFileAgeNs = 1'000'000'000;
constexpr uint64_t kMinArchiveFileBytes = 64 * 1024;
// metadata.lookup_timeout and metadata.query_timeout (PostgreSQL): at least 100 ms, like the
// other timeouts (less gives up on a healthy database across any network: one round trip of
// a connect is several); at most 60 s, the migrations' bound and so the server-side
// statement_timeout each connection gets (a longer query bound would be cut by the server
// anyway). And lookup_timeout not above query_timeout: a lookup is the request path's
// (an HTTP I/O thread or an ingest waits for it), never the slower kind.
constexpr int64_t kMinMetadataTimeoutNs = 100'000'000;
constexpr int64_t kMaxMetadataTimeoutNs = 60'000'000'000;

struct Config {
  // [server]
  std::string http_listen = "127.0.0.1:8080";
  std::string mqtt_listen = "127.0.0.1:1883";
  // TLS for both listeners (docs/SECURITY.md): both set = HTTPS and MQTT over TLS only.
  std::string tls_cert_file;  // PEM certificate chain
  std::string tls_key_file;   // PEM private key
  // Bridge mode (docs/formats/mqtt.md §6): subscribe to an external broker; empty url = off.
  std::string mqtt_bridge_url;                             // mqtt[s]://host[:port]
  std::string mqtt_bridge_topics = "devices/+/telemetry";  // comma-separated filters
  std::string mqtt_bridge_client_id = "joule-bridge";
  std::string mqtt_bridge_username;
  std::string mqtt_bridge_password;
  std::string mqtt_bridge_ca_file;    // mqtts://: PEM CAs to trust (empty: the system's)
  std::string mqtt_bridge_cert_file;  // mqtts://: PEM client certificate (mutual TLS)
  std::string mqtt_bridge_key_file;   // mqtts://: PEM client private key
  int io_threads = 2;
  // How much higher the nice value of the background threads (processors, archiver, replay
  // jobs) is than the server's own, at which the threads that acknowledge ingest run; 0 = the
  // same (src/app/README.md, "Thread priorities").
  int background_nice = 5;
  // HTTP connection limits (slow clients, header floods, connection floods).
  int64_t http_max_connections = 10000;
  // Request line + headers, kMinHeaderBytes..kMaxHeaderBytes.
  uint64_t http_max_header_bytes = 16 * 1024;
  int64_t http_read_timeout_ns = 30'000'000'000;
  int64_t http_idle_timeout_ns = 60'000'000'000;
  // [storage]
  std::string data_dir = "./data";
  std::string durability = "fsync";  // or "none"
  // 0 = the existing log's count, else processor_threads (app/log_partitions.h).
  uint32_t log_partitions = 0;
  uint64_t log_segment_bytes = 64ull << 20;  // at least kMinLogSegmentBytes
  uint64_t log_retention_bytes = 0;          // per partition; 0 = unlimited
  int64_t log_retention_ns = 0;              // 0 = forever
  uint64_t log_max_pending_bytes = 64ull << 20;
  // With fsync: how long the log's writer waits for more batches before a group-commit
  // round (log::LogOptions::group_commit_window_ns); 0 = commit at once (the default since
  // session 13: batches that arrive while a round syncs form the next round anyway); at
  // most kMaxGroupCommitWindowNs.
  int64_t log_group_commit_window_ns = 0;
  // With fsync: how far ahead of its last record the active segment is kept written with
  // zeros (log::LogOptions::prewrite_bytes, docs/formats/log.md "Pre-written tail"); 0 =
  // off (copy-on-write filesystems such as btrfs or ZFS gain nothing from it).
  uint64_t log_prewrite_bytes = 8ull << 20;
  // What a start does when the active log segment's tail is damaged where records were
  // acknowledged (not a torn tail): "refuse" (exit 1 naming the segment; nothing changed) or
  // "cut" (an operator's explicit choice for one start: copied to quarantine, then cut;
  // docs/OPERATIONS.md "A damaged log segment").
  std::string log_damage = "refuse";
  // [stream]
  int64_t window_ns = 60'000'000'000;
  int64_t out_of_orderness_ns = 10'000'000'000;
  int64_t allowed_lateness_ns = 3'600'000'000'000;
  int64_t idle_timeout_ns = 60'000'000'000;
  int64_t early_fire_interval_ns = 5'000'000'000;
  int64_t max_gap_ns = 300'000'000'000;
  int processor_threads = 2;
  int64_t checkpoint_interval_ns = 60'000'000'000;
  // Partial (final:false) records reach history at most once per key per this interval;
  // 0 = every early firing (src/app/README.md "History and early firings").
  int64_t history_partial_interval_ns = 60'000'000'000;
  // [auth]
  std::string auth_mode = "required";  // or "disabled"
  std::string admin_token;
  // [history]
  int64_t history_retention_base_ns = 30 * 86'400'000'000'000;
  int64_t history_retention_hour_ns = 730 * 86'400'000'000'000;
  int64_t history_retention_day_ns = 0;  // forever
  // Encoded JSON of history records kept in memory for the history API; 0 = off.
  uint64_t history_json_cache_bytes = 64ull << 20;
  // [metadata]
  std::string metadata_backend = "sqlite";
  std::string metadata_url;
  // PostgreSQL only (accepted and without effect with sqlite, whose calls are local): how
  // long a lookup of the request path (token, device) and any other operation may wait for
  // the database before giving up with 503 (src/store/README.md).
  int64_t metadata_lookup_timeout_ns = 2'000'000'000;
  int64_t metadata_query_timeout_ns = 10'000'000'000;
  // [latest]
  std::string latest_backend = "memory";
  std::string latest_url;
  uint32_t latest_windows = 60;
  // Records a Redis latest store outage may buffer for its catch-up (over all processors);
  // past it, devices are re-read from history when Redis returns (src/store/README.md).
  uint32_t latest_catchup_max_records = 50'000;
  // [alerts] (CONTRACT §4)
  bool alerts_allow_private_targets = false;  // webhooks to loopback/private/link-local
  int64_t alerts_delivery_timeout_ns = 5'000'000'000;
  int64_t alerts_retry_initial_backoff_ns = 1'000'000'000;
  int64_t alerts_retry_max_backoff_ns = 300'000'000'000;
  int alerts_delivery_max_attempts = 10;
  int alerts_delivery_max_targets = 256;  // webhook targets with a worker at once
  uint32_t alerts_queue_capacity = 65536;
  uint32_t alerts_outbox_capacity = 100000;  // pending webhook deliveries
  std::string alerts_webhook_ca_file;  // PEM CA(s) trusted for https webhooks, besides the system's
  // [limits]
  uint64_t max_body_bytes = 4ull << 20;
  uint64_t max_events_per_request = 10000;
  int64_t max_future_skew_ns = 300'000'000'000;
  int64_t max_event_age_ns = 7 * 86'400'000'000'000;
  // Token buckets (0 = unlimited): requests per device token / owner key (the admin token
  // is never limited), and events per device with a burst of two seconds' worth.
  uint32_t requests_per_second = 10;
  uint32_t request_burst = 20;
  uint32_t device_events_per_second = 1000;
  // Live streams (GET /v1/stream) open at once per owner key (0 = unlimited; the admin
  // token is not limited), so that one tenant cannot hold every connection.
  uint32_t streams_per_key = 16;
  // Alert rules an owner key may create (0 = unlimited; the admin is not limited): every
  // rule is evaluated against every record of its scope.
  uint32_t rules_per_owner = 100;
  // [metrics.kinds]
  std::map<std::string, model::MetricKind, std::less<>> metric_kinds;
  // [log]
  std::string log_level = "info";
  // [archive] (docs/formats/archive.md)
  bool archive_enabled = true;
  uint64_t archive_max_file_bytes = 64ull << 20;
  int64_t archive_max_file_age_ns = 300'000'000'000;
  int64_t archive_retention_ns = 0;  // 0 = forever
  // Not a setting (no key): `joule serve --accept-partial-rebuild`, for one start. A
  // processor without a checkpoint rebuilds from a log that retention truncated instead of
  // refusing to start (PartitionProcessorOptions::accept_partial_rebuild).
  bool accept_partial_rebuild = false;
};

// Loads `path` (may be empty: defaults only) and applies the environment `envp`
// (a NULL-terminated array like `environ`). Unknown keys in the file are errors;
// unknown JOULE_* variables are reported in `warnings`.
Result<Config> LoadConfig(const std::string& path, char** envp,
                          std::vector<std::string>* warnings = nullptr);

// The effective configuration as TOML (for `joule config` and docs). Secrets are
// redacted: auth.admin_token and ingest.mqtt_bridge_password print as "<set>" when set,
// and so does the password inside metadata.url, latest.url and ingest.mqtt_bridge_url.
// LoadConfig refuses "<set>" as any of them, so the output fed back fails loudly instead
// of, say, making "<set>" the admin token.
std::string ConfigToToml(const Config& config);

// A duration as the config writes it: "40m", "1h", "250ms" (the largest unit that divides it).
std::string FormatDuration(int64_t ns);

}  // namespace joule::app

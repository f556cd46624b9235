#include "app/server.h"

#include <fmt/format.h>
#include <sys/random.h>
#include <sys/statvfs.h>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "alert/alert_engine.h"
#include "api/api_context.h"
#include "api/audit.h"
#include "api/live_hub.h"
#include "api/record_json_cache.h"
#include "api/routes.h"
#include "app/archiver.h"
#include "app/data_dir_create.h"
#include "app/data_dir_id.h"
#include "app/data_dir_lock.h"
#include "app/engine_setup.h"
#include "app/file_limit.h"
#include "app/log_partitions.h"
#include "app/metadata_open.h"
#include "app/partition_processor.h"
#include "app/process_metrics.h"
#include "app/replay_jobs.h"
#include "app/replay_journal.h"
#include "common/logging.h"
#include "common/processing_clock.h"
#include "common/thread_priority.h"
#include "ingest/event_appender.h"
#include "ingest/mqtt_bridge.h"
#include "ingest/mqtt_ingest.h"
#include "ingest/rate_limiter.h"
#include "log/log.h"
#include "log/quarantine.h"
#include "model/partition.h"
#include "net/http_server.h"
#include "net/mqtt/listener.h"
#include "net/mqtt/subscriber.h"
#include "net/router.h"
#include "net/tls_context.h"
#include "store/audit/audit_log.h"
#include "store/latest_health.h"
#include "store/memory/memory_latest_store.h"
#include "store/metadata_cache.h"
#include "store/redis/redis_latest_store.h"
#include "store/rocksdb/rocksdb_history_store.h"
#include "web/web_routes.h"

namespace joule::app {
namespace {

// A start that fails on a full disk says so, names the data dir and its free space (found by
// a black-box test: a restart on a full disk said only "cannot open latest store", backend
// "memory"). Refusing to start is the policy (docs/RELIABILITY.md #6): acknowledged events
// are in the log, and a supervisor's restart succeeds once there is space. Returns whether
// `status` was a full disk (then it is logged).
// A failure is taken for a full disk when its message says so, or (SQLite says only "disk
// I/O error") when the data dir's filesystem has less than 1 MiB left.
bool ReportDiskFull(std::string_view step, const Status& status, const std::string& data_dir) {
  const std::string& m = status.message();
  std::string free_bytes = "unknown";
  bool nearly_full = false;
  if (struct statvfs v; ::statvfs(data_dir.c_str(), &v) == 0) {
    const uint64_t bytes = static_cast<uint64_t>(v.f_bavail) * v.f_frsize;
    free_bytes = std::to_string(bytes);
    nearly_full = bytes < (uint64_t{1} << 20);
  }
  if (m.find(std::strerror(ENOSPC)) == std::string::npos &&
      m.find(std::strerror(EDQUOT)) == std::string::npos && !nearly_full) {
    return false;
  }
  logging::Error("cannot start: the disk holding the data dir is full",
                 {{"path", data_dir},
                  {"free_bytes", free_bytes},
                  {"step", std::string(step)},
                  {"error", status.ToString()},
                  {"action",
                   "free space on that filesystem and start again (acknowledged events "
                   "are safe in the log)"}});
  return true;
}

std::string RandomToken() {
  unsigned char buf[24];
  if (getrandom(buf, sizeof buf, 0) != static_cast<ssize_t>(sizeof buf)) std::abort();
  static const char* kHex = "0123456789abcdef";
  std::string s;
  for (unsigned char b : buf) {
    s += kHex[b >> 4];
    s += kHex[b & 15];
  }
  return s;
}

// The admin token: from config, else the one generated on first start and kept in
// {data_dir}/admin_token (mode 0600). The log says where it is kept, never the token: the
// log goes to journald or files that more people read (until session 32 the first start
// printed it in a plain-text line, which also broke the one-JSON-object-per-line log;
// found by a black-box test).
Result<std::string> ResolveAdminToken(const Config& config) {
  if (!config.admin_token.empty()) {
    if (config.admin_token.size() < 20) {
      logging::Warn(
          "auth.admin_token is short (under 20 characters): it opens everything — use a long "
          "random one, or leave it unset and let the first start generate one");
    }
    // A token an earlier start generated is not accepted now: a tool reading the file
    // (joule replay without auth.admin_token) is refused with 401 (found by a black-box
    // test). Left in place (a later start without auth.admin_token takes it again).
    std::ifstream in(std::filesystem::path(config.data_dir) / "admin_token");
    std::string kept;
    if (in && std::getline(in, kept) && !kept.empty() && kept != config.admin_token) {
      const std::string path = (std::filesystem::path(config.data_dir) / "admin_token").string();
      logging::Warn(
          "the data dir's admin_token file holds another token than auth.admin_token, which "
          "this server does not accept",
          {{"file", path},
           {"action",
            "delete the file if no start without auth.admin_token needs it; give the "
            "tools the configured token (joule replay --admin-token, or "
            "auth.admin_token in their config)"}});
    }
    return config.admin_token;
  }
  std::filesystem::path path = std::filesystem::path(config.data_dir) / "admin_token";
  std::ifstream in(path);
  std::string token;
  if (in && std::getline(in, token) && !token.empty()) return token;
  token = RandomToken();
  std::ofstream out(path, std::ios::trunc);
  if (!out) {
    return Status::IoError(fmt::format("cannot write {}: {}", path.string(), std::strerror(errno)));
  }
  out << token << "\n";
  out.close();
  std::filesystem::permissions(
      path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  logging::Info("generated admin token",
                {{"file", path.string()},
                 {"mode", "0600"},
                 {"action", fmt::format("read it from that file (cat {}); it is not logged",
                                        path.string())}});
  return token;
}

// The data dir's id (app/data_dir_id.h): read or created for Redis, which keeps it;
// renewed for the memory store (Redis misses what this run emits: a later run with Redis
// must rewrite it). Its own start step, so that a full disk names it (found by a black-box
// test: it was reported as "cannot open latest store", backend "memory").
Result<std::string> PrepareDataDirId(const Config& config) {
  if (config.latest_backend == "redis") return LoadOrCreateDataDirId(config.data_dir);
  JOULE_RETURN_IF_ERROR(RenewDataDirId(config.data_dir));
  return std::string();
}

Result<std::unique_ptr<store::LatestStore>> OpenLatest(const Config& config,
                                                       const std::string& data_dir_id,
                                                       MetricsRegistry* metrics) {
  if (config.latest_backend == "redis") {
    store::RedisLatestStoreOptions o;
    if (!config.latest_url.empty()) o.url = config.latest_url;
    o.windows_per_device = config.latest_windows;
    o.metrics = metrics;
    o.instance_id = data_dir_id;  // which data dir wrote to Redis last (agg:instance)
    JOULE_ASSIGN_OR_RETURN(auto redis, store::RedisLatestStore::Open(o));
    return std::unique_ptr<store::LatestStore>(std::move(redis));
  }
  return std::unique_ptr<store::LatestStore>(
      std::make_unique<store::MemoryLatestStore>(config.latest_windows));
}

sigset_t StopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  return set;
}

}  // namespace

void HoldStopSignals() {
  const sigset_t set = StopSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

void ReleaseStopSignals() {
  const sigset_t set = StopSignals();
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
}

int RunServer(const Config& given_config) {
  Config config = given_config;  // with the log's partition count resolved (below)
  logging::Level level;
  if (logging::ParseLevel(config.log_level, &level)) logging::SetLevel(level);
  std::error_code ec;
  // A new data dir is its owner's only (0700); a path that is not a directory is refused.
  if (Status created = CreateDataDir(config.data_dir); !created.ok()) {
    if (created.code() == StatusCode::kInvalidArgument) {
      logging::Error("cannot use data dir: it exists and is not a directory",
                     {{"dir", config.data_dir}, {"action", "point storage.data_dir elsewhere"}});
    } else {
      logging::Error("cannot create data dir",
                     {{"dir", config.data_dir}, {"error", created.message()}});
    }
    return 1;
  }
  // One process per data dir, before anything in it is opened or recovered (a second
  // `joule serve` on a running server's data dir removed its archiver's open file before
  // RocksDB refused it: found by a black-box test).
  Result<DataDirLock> dir_lock = DataDirLock::Acquire(config.data_dir, "serve");
  if (!dir_lock.ok()) {
    logging::Error(DataDirLockFailure(dir_lock.status()), {{"error", dir_lock.status().message()}});
    return 1;
  }
  // Every connection is a descriptor: the soft limit (often 1024) up to the hard one, and a
  // warning when that is still short of server.max_connections (HTTP and MQTT each).
  RaiseFileLimit(static_cast<uint64_t>(config.http_max_connections),
                 config.mqtt_listen.empty() ? 1 : 2);
  // A data dir that has run and lost its log (moved away) is refused before the log's
  // opener creates an empty one: the refusals that followed blamed the archive's or the
  // processors' checkpoints and suggested deleting them (found by a black-box test).
  if (Status present = CheckLogPresent(config); !present.ok()) {
    logging::Error("cannot open log", {{"error", present.ToString()}});
    return 1;
  }
  // storage.log_partitions = 0: the existing log's count, else one per processor thread.
  if (Result<uint32_t> partitions = ResolveLogPartitions(config); partitions.ok()) {
    config.log_partitions = *partitions;
  } else {
    logging::Error("cannot open log", {{"error", partitions.status().ToString()}});
    return 1;
  }

  std::string admin_token;
  if (config.auth_mode == "disabled") {
    logging::Warn("authentication is DISABLED (auth.mode = \"disabled\"): local demos only");
  } else {
    Result<std::string> t = ResolveAdminToken(config);
    if (!t.ok()) {
      logging::Error("admin token", {{"error", t.status().ToString()}});
      return 1;
    }
    admin_token = *t;
  }
  if (config.durability == "none") {
    // As auth disabled: a setting the contract calls unsafe says so at every start (it
    // started silently: found by a black-box test).
    logging::Warn(
        "durability is OFF (storage.durability = \"none\"): nothing is fsynced, so events "
        "already acknowledged (HTTP 202, MQTT PUBACK) can be lost if the machine crashes or "
        "loses power; for benchmarks only");
  }

  // The wall clock: received_at, ingest's timestamp bounds, Date headers, tokens, audit,
  // the log's append times, webhook timestamps.
  const Clock* clock = SystemClock::Default();
  // Processing time (docs/CONTRACT.md §2): the wall clock with its steps absorbed and slewed
  // out — the window engine's deadlines, checkpoints, alert evaluation (absence, budgets'
  // day end), history retention's horizon.
  const Clock* processing_clock = ProcessingClock::Default();
  MetricsRegistry metrics;
  RegisterProcessMetrics(&metrics);

  log::LogOptions log_options;
  log_options.dir = (std::filesystem::path(config.data_dir) / "log").string();
  log_options.partitions = config.log_partitions;
  log_options.segment_bytes = config.log_segment_bytes;
  log_options.fsync = config.durability == "fsync";
  log_options.retention_bytes = config.log_retention_bytes;
  log_options.retention_age_ns = config.log_retention_ns;
  log_options.max_pending_bytes = config.log_max_pending_bytes;
  log_options.group_commit_window_ns = config.log_group_commit_window_ns;
  log_options.prewrite_bytes = config.log_prewrite_bytes;
  log_options.clock = clock;
  // CRC-check every sealed segment too: a damaged one makes the server refuse to start
  // rather than stall or serve around it (docs/RELIABILITY.md).
  log_options.verify_on_open = true;
  // A damaged record met at run time: its segment is copied here and reported (/readyz,
  // metrics); the partition's consumers stop there (docs/RELIABILITY.md).
  log_options.quarantine_dir = (std::filesystem::path(config.data_dir) / "quarantine").string();
  // A tail cut below an offset a processor or the archiver already passed would delete
  // acknowledged records: refused unless storage.log_damage = "cut".
  SetLogRecoveryOptions(config, config.log_partitions, &log_options);
  Result<std::unique_ptr<log::Log>> opened = log::Log::Open(log_options, &metrics);
  if (!opened.ok()) {
    if (opened.status().code() == StatusCode::kCorruption) {
      logging::Error(
          "cannot open log",
          {{"error", opened.status().ToString()},
           {"what_to_do",
            "restore the segment named from a backup and start again; if it cannot be "
            "restored, start once with storage.log_damage = \"cut\" "
            "(JOULE_STORAGE_LOG_DAMAGE=cut): the damaged records are copied to "
            "{data_dir}/quarantine, then cut (docs/OPERATIONS.md, \"A damaged log segment\")"}});
    } else if (!ReportDiskFull("cannot open log", opened.status(), config.data_dir)) {
      logging::Error("cannot open log", {{"error", opened.status().ToString()}});
    }
    return 1;
  }
  std::unique_ptr<log::Log> log = std::move(*opened);

  // A processor without a checkpoint on a log that retention truncated is refused before
  // anything is written: no processor started (the first rewrote its checkpoint and raised
  // engine_epoch before the second was refused), no archiver, no new empty checkpoints
  // directory (`mv checkpoints.moved checkpoints`, as docs/OPERATIONS.md says, then moved
  // the directory into it: found by a black-box test). The same split as below.
  {
    const int threads = std::max(1, std::min<int>(config.processor_threads, config.log_partitions));
    for (int i = 0; i < threads; ++i) {
      PartitionProcessorOptions po;
      po.index = i;
      for (uint32_t p = i; p < config.log_partitions; p += threads) po.partitions.push_back(p);
      po.checkpoint_path = (std::filesystem::path(config.data_dir) / "checkpoints" /
                            fmt::format("processor-{}.ckpt", i))
                               .string();
      po.accept_partial_rebuild = config.accept_partial_rebuild;
      if (Status st = CheckPartialRebuild(*log, po); !st.ok()) {
        logging::Error("cannot start processor", {{"error", st.ToString()}});
        return 1;
      }
    }
  }

  // The raw archive follows the log on its own thread (docs/formats/archive.md).
  std::unique_ptr<Archiver> archiver;
  if (config.archive_enabled) {
    ArchiverOptions ao;
    ao.dir = (std::filesystem::path(config.data_dir) / "archive").string();
    ao.max_file_bytes = config.archive_max_file_bytes;
    ao.max_file_age_ns = config.archive_max_file_age_ns;
    ao.retention_ns = config.archive_retention_ns;
    ao.nice = config.background_nice;
    // Processing time: retries, retention's interval and horizon (a forward step of the wall
    // clock does not expire hours); open files' age is steady_clock (ArchiveWriterOptions).
    archiver = std::make_unique<Archiver>(ao, log.get(), processing_clock, &metrics);
    Status archiver_started = archiver->Start();
    if (!archiver_started.ok()) {
      if (!ReportDiskFull("cannot start archiver", archiver_started, config.data_dir)) {
        logging::Error("cannot start archiver", {{"error", archiver_started.ToString()}});
      }
      return 1;
    }
  }

  Result<std::unique_ptr<store::MetadataCache>> metadata_opened =
      OpenCachedMetadata(config, &metrics);
  if (!metadata_opened.ok()) {
    // (SQLite's file is in the data dir by default: after a clean stop it must create its
    // write-ahead log, which a full disk refuses as a "disk I/O error".)
    if (config.metadata_backend != "sqlite" ||
        !ReportDiskFull("cannot open metadata store", metadata_opened.status(), config.data_dir)) {
      logging::Error(
          "cannot open metadata store",
          {{"backend", config.metadata_backend}, {"error", metadata_opened.status().ToString()}});
    }
    return 1;
  }
  std::unique_ptr<store::MetadataCache> metadata = std::move(*metadata_opened);
  MetadataTimezones timezones(metadata.get());

  Result<std::string> data_dir_id = PrepareDataDirId(config);
  if (!data_dir_id.ok()) {
    if (!ReportDiskFull("cannot write the data dir id", data_dir_id.status(), config.data_dir)) {
      logging::Error("cannot write the data dir id",
                     {{"path", config.data_dir}, {"error", data_dir_id.status().ToString()}});
    }
    return 1;
  }
  Result<std::unique_ptr<store::LatestStore>> latest_opened =
      OpenLatest(config, *data_dir_id, &metrics);
  if (!latest_opened.ok()) {
    if (!ReportDiskFull("cannot open latest store", latest_opened.status(), config.data_dir)) {
      logging::Error("cannot open latest store", {{"backend", config.latest_backend},
                                                  {"error", latest_opened.status().ToString()}});
    }
    return 1;
  }
  std::unique_ptr<store::LatestStore> latest_store = std::move(*latest_opened);
  store::LatestStore& latest = *latest_store;
  // A remote latest store may go away: its reachability drives the processors' catch-up,
  // the realtime fallback and /readyz (src/store/README.md).
  std::unique_ptr<store::LatestStoreHealth> latest_health;
  if (config.latest_backend == "redis") {
    latest_health = std::make_unique<store::LatestStoreHealth>(
        &latest, store::LatestStoreHealthOptions(), clock, &metrics);
    if (Status ping = latest.Ping(); !ping.ok()) {
      logging::Warn("latest store not reachable at start; serving reads from history",
                    {{"backend", config.latest_backend}, {"error", ping.ToString()}});
      latest_health->ReportFailure(ping);
    }
    latest_health->Start();
  }

  store::RocksDbHistoryOptions history_options;
  history_options.path = (std::filesystem::path(config.data_dir) / "history").string();
  history_options.retention.base_ns = config.history_retention_base_ns;
  history_options.retention.hour_ns = config.history_retention_hour_ns;
  history_options.retention.day_ns = config.history_retention_day_ns;
  history_options.clock = processing_clock;  // a forward step does not expire records
  auto history_opened = store::RocksDbHistoryStore::Open(history_options, &metrics);
  if (!history_opened.ok()) {
    if (!ReportDiskFull("cannot open history store", history_opened.status(), config.data_dir)) {
      logging::Error("cannot open history store", {{"error", history_opened.status().ToString()}});
    }
    return 1;
  }
  std::unique_ptr<store::RocksDbHistoryStore> history = std::move(*history_opened);
  // Follows every history write, so it outlives the processors (declared after it).
  api::RecordJsonCache history_json_cache(config.history_json_cache_bytes, &metrics);
  history_json_cache.Attach(history.get());

  std::filesystem::create_directories(std::filesystem::path(config.data_dir) / "checkpoints", ec);
  // A replay killed between writing history and its processors (or `joule replay`) taking
  // the difference of the open 1h/1d rollups left a journal (app/replay_journal.h): its
  // history writes are redone now, and the processors get its corrections below.
  Result<std::vector<ReplayJournal>> replay_journals =
      RedoReplayJournals(config.data_dir, history.get(), &latest);
  if (!replay_journals.ok()) {
    logging::Error(
        "cannot finish an interrupted replay (its journal stays in the data dir's "
        "replay_journal directory)",
        {{"error", replay_journals.status().ToString()}});
    return 1;
  }
  api::LiveHub live([m = metadata.get()](std::string_view device_id) {
    Result<store::Device> d = m->GetDevice(device_id);
    return d.ok() ? d->owner_id : std::string();
  });
  live.StartRevalidator(kNanosPerSecond);  // stopped below, before what it checks goes
  metrics.AddGaugeCallback("joule_sse_subscribers", "Open /v1/stream subscriptions", {},
                           [&live] { return static_cast<double>(live.subscriber_count()); });
  // Alerts (CONTRACT §4): evaluated on their own thread; outbox in {data_dir}/alerts.
  alert::AlertEngineOptions alert_options;
  alert_options.dir = (std::filesystem::path(config.data_dir) / "alerts").string();
  {
    Result<std::string> salt = LoadOrCreateWebhookIdSalt(alert_options.dir);
    if (!salt.ok()) {
      if (!ReportDiskFull("cannot create the webhook-id salt", salt.status(), config.data_dir)) {
        logging::Error("cannot read or create the webhook-id salt",
                       {{"error", salt.status().ToString()}});
      }
      return 1;
    }
    alert_options.webhook_id_salt = *salt;
  }
  alert_options.fsync = config.durability == "fsync";
  alert_options.allow_private_targets = config.alerts_allow_private_targets;
  alert_options.queue_capacity = config.alerts_queue_capacity;
  alert_options.outbox_capacity = config.alerts_outbox_capacity;
  alert_options.notifier.ca_file = config.alerts_webhook_ca_file;
  alert_options.notifier.timeout_ns = config.alerts_delivery_timeout_ns;
  alert_options.notifier.initial_backoff_ns = config.alerts_retry_initial_backoff_ns;
  alert_options.notifier.max_backoff_ns = config.alerts_retry_max_backoff_ns;
  alert_options.notifier.max_attempts = config.alerts_delivery_max_attempts;
  alert_options.notifier.max_targets = static_cast<size_t>(config.alerts_delivery_max_targets);
  alert_options.publish = [&live](const store::Alert& alert) {
    live.PublishAlert(alert.device_id, alert.owner_id, alert.json);
  };
  alert_options.processing_clock = processing_clock;
  // Set once the processors exist (below); until then, and until each caught up with the
  // log once, the alert engine holds what the replay re-derives (alert/evaluator.h).
  std::atomic<const std::vector<std::unique_ptr<PartitionProcessor>>*> replaying_processors{
      nullptr};
  alert_options.replay_done = [&replaying_processors] {
    const auto* ps = replaying_processors.load();
    if (ps == nullptr) return false;
    for (const auto& p : *ps) {
      if (!p->CaughtUpOnce()) return false;
    }
    return true;
  };
  // The processors' view of a device's activity (the engine's device health: the ingest time
  // of its latest event), for absence rules that appear while devices report.
  alert_options.device_last_seen = [&replaying_processors,
                                    &config](const std::string& id) -> std::optional<int64_t> {
    const auto* ps = replaying_processors.load();
    if (ps == nullptr || ps->empty()) return std::nullopt;
    const uint32_t p = model::PartitionOf(id, config.log_partitions);
    stream::WindowEngine::DeviceHealth h;
    if (!(*ps)[p % ps->size()]->Health(id, &h) || h.last_seen_ns == 0) return std::nullopt;
    return h.last_seen_ns;
  };
  auto alerts_opened = alert::AlertEngine::Open(alert_options, metadata.get(), clock, &metrics);
  if (!alerts_opened.ok()) {
    if (!ReportDiskFull("cannot open alert engine", alerts_opened.status(), config.data_dir)) {
      logging::Error("cannot open alert engine", {{"error", alerts_opened.status().ToString()}});
    }
    return 1;
  }
  std::unique_ptr<alert::AlertEngine> alerts = std::move(*alerts_opened);
  if (Status alerts_started = alerts->Start(); !alerts_started.ok()) {
    if (!ReportDiskFull("cannot start alert engine", alerts_started, config.data_dir)) {
      logging::Error("cannot start alert engine", {{"error", alerts_started.ToString()}});
    }
    return 1;
  }
  // Partition p belongs to processor p % threads. More threads than the log has partitions
  // would have nothing to read: only as many run, and the checkpoints' layout is unchanged
  // (docs/formats/processor_checkpoint.md).
  const int threads = std::max(1, std::min<int>(config.processor_threads, config.log_partitions));
  if (threads < config.processor_threads) {
    logging::Warn(
        "fewer processor threads than stream.processor_threads: the log has fewer "
        "partitions, and an existing log keeps its count (src/app/README.md)",
        {{"processor_threads", std::to_string(config.processor_threads)},
         {"log_partitions", std::to_string(config.log_partitions)},
         {"running", std::to_string(threads)}});
  }
  std::vector<std::unique_ptr<PartitionProcessor>> processors;
  for (int i = 0; i < threads; ++i) {
    PartitionProcessorOptions po;
    po.index = i;
    po.count = threads;
    po.nice = config.background_nice;
    for (uint32_t p = i; p < config.log_partitions; p += threads) po.partitions.push_back(p);
    po.engine = EngineOptionsFrom(config);
    po.checkpoint_path = (std::filesystem::path(config.data_dir) / "checkpoints" /
                          fmt::format("processor-{}.ckpt", i))
                             .string();
    po.epoch_path = (std::filesystem::path(config.data_dir) / "engine_epoch").string();
    po.checkpoint_interval_ns = config.checkpoint_interval_ns;
    po.history_partial_interval_ns = config.history_partial_interval_ns;
    po.live = &live;
    po.alerts = alerts.get();
    po.latest_health = latest_health.get();
    po.latest_windows = config.latest_windows;
    po.latest_catchup_max_records =
        std::max<size_t>(1, config.latest_catchup_max_records / static_cast<size_t>(threads));
    po.wall_clock = clock;
    po.accept_partial_rebuild = config.accept_partial_rebuild;
    processors.push_back(std::make_unique<PartitionProcessor>(
        std::move(po), log.get(), &latest, history.get(), processing_clock, &metrics, &timezones));
  }
  // The corrections of interrupted replays, applied by each processor once it has caught up
  // with the log (and skipped by one whose checkpoint has them already).
  for (const ReplayJournal& j : *replay_journals) {
    std::vector<std::vector<std::pair<model::AggregateRecord, model::AggregateRecord>>> per(
        processors.size());
    for (const BaseCorrection& c : j.corrections) {
      uint32_t p = model::PartitionOf(c.after.device_id, config.log_partitions);
      per[p % threads].emplace_back(c.before, c.after);
    }
    for (size_t i = 0; i < processors.size(); ++i) {
      if (!per[i].empty()) processors[i]->CorrectBaseWindows(j.seq, std::move(per[i]));
    }
    logging::Warn("finishing an interrupted replay",
                  {{"journal", std::to_string(j.seq)},
                   {"records", std::to_string(j.writes.size())},
                   {"corrections", std::to_string(j.corrections.size())}});
  }
  // The processors start (restore their checkpoints, seconds for a large state) once the
  // listeners are open, below: ingest goes on meanwhile and /readyz says "starting".
  std::atomic<bool> processors_started{false};
  for (auto& p : processors) p->RegisterWithLog();
  for (size_t i = 0; i < processors.size(); ++i) {
    PartitionProcessor* p = processors[i].get();
    metrics.AddGaugeCallback("joule_processor_lag_records", "Durable records not yet processed",
                             {{"processor", std::to_string(i)}},
                             [p] { return static_cast<double>(p->LagRecords()); });
    metrics.AddGaugeCallback("joule_processor_lag_seconds",
                             "Age of the oldest unprocessed durable record",
                             {{"processor", std::to_string(i)}}, [p] { return p->LagSeconds(); });
  }

  // The interrupted replays' journals go once every processor has checkpointed them.
  std::atomic<bool> journals_stop{false};
  std::thread journal_cleaner;
  struct JoinOnExit {  // also on the early returns below
    std::atomic<bool>* stop;
    std::thread* thread;
    ~JoinOnExit() {
      stop->store(true);
      if (thread->joinable()) thread->join();
    }
  } journal_cleaner_guard{&journals_stop, &journal_cleaner};
  if (!replay_journals->empty()) {
    journal_cleaner = std::thread([&processors, &journals_stop, &replay_journals, &config] {
      while (true) {
        bool all = true;
        for (auto& p : processors) all = p->WaitForCorrections(200'000'000) && all;
        if (all) break;
        if (journals_stop.load()) return;  // the next start finishes them
      }
      for (const ReplayJournal& j : *replay_journals) {
        Status st = RemoveReplayJournal(ReplayJournalDir(config.data_dir), j.seq);
        if (!st.ok()) {
          logging::Error("replay journal not removed", {{"error", st.ToString()}});
          return;
        }
      }
      logging::Info("interrupted replay(s) finished",
                    {{"journals", std::to_string(replay_journals->size())}});
    });
  }

  // Replay jobs (POST /v1/admin/replay): only with the archive they read.
  MetadataTimezones replay_timezones(metadata.get());
  std::unique_ptr<ReplayJobs> replay_jobs;
  if (archiver) {
    ReplayJobsOptions ro;
    ro.archive_dir = (std::filesystem::path(config.data_dir) / "archive").string();
    ro.engine = EngineOptionsFrom(config);
    ro.nice = config.background_nice;
    ro.unregistered_ids_archived = config.auth_mode == "disabled";
    ro.live_watermark = [&processors, &config, threads](std::string_view device_id,
                                                        int64_t* watermark_ns) {
      stream::WindowEngine::DeviceHealth h;
      uint32_t p = model::PartitionOf(device_id, config.log_partitions);
      if (!processors[p % threads]->Health(device_id, &h)) return false;
      *watermark_ns = h.watermark_ns;
      return true;
    };
    ro.journal_dir = ReplayJournalDir(config.data_dir);
    ro.hand_over = [&processors, &config, threads](
                       uint64_t seq,
                       const std::vector<BaseCorrection>& corrections) -> Result<bool> {
      // All of a journal's corrections for one processor in one hand-over: the checkpoint
      // that records the journal holds every one of them.
      std::vector<std::vector<std::pair<model::AggregateRecord, model::AggregateRecord>>> per(
          processors.size());
      for (const BaseCorrection& c : corrections) {
        uint32_t p = model::PartitionOf(c.after.device_id, config.log_partitions);
        per[p % threads].emplace_back(c.before, c.after);
      }
      for (size_t i = 0; i < processors.size(); ++i) {
        if (!per[i].empty()) processors[i]->CorrectBaseWindows(seq, std::move(per[i]));
      }
      bool all = true;
      for (auto& p : processors) all = p->WaitForCorrections(30 * kNanosPerSecond) && all;
      return all;
    };
    replay_jobs =
        std::make_unique<ReplayJobs>(std::move(ro), archiver.get(), history.get(), &latest,
                                     metadata.get(), &replay_timezones, &metrics);
  }

  if (latest_health) {
    metrics.AddGaugeCallback("joule_latest_catchup_pending_records",
                             "Latest-store records buffered during an outage, not yet written", {},
                             [&processors] {
                               size_t n = 0;
                               for (auto& p : processors) n += p->LatestPendingRecords();
                               return static_cast<double>(n);
                             });
    metrics.AddGaugeCallback(
        "joule_latest_catchup_pending_devices",
        "Devices with latest-store writes still to catch up (buffered, reading, or re-read "
        "from history)",
        {}, [&processors] {
          size_t n = 0;
          for (auto& p : processors) n += p->LatestPendingDevices();
          return static_cast<double>(n);
        });
  }

  ingest::EventAppender appender(log.get(), &metrics);
  api::Authenticator auth(config.auth_mode, admin_token, metadata.get());
  std::unique_ptr<ingest::RateLimiter> request_limiter;
  if (config.requests_per_second > 0) {
    request_limiter =
        std::make_unique<ingest::RateLimiter>(config.requests_per_second, config.request_burst);
  }
  std::unique_ptr<ingest::RateLimiter> event_limiter;
  if (config.device_events_per_second > 0) {
    event_limiter = std::make_unique<ingest::RateLimiter>(config.device_events_per_second,
                                                          2.0 * config.device_events_per_second);
  }
  // Audit log of administrative actions (docs/formats/audit.md).
  Result<std::unique_ptr<store::AuditLog>> audit_opened = store::AuditLog::Open(
      (std::filesystem::path(config.data_dir) / "audit" / "audit.jsonl").string());
  if (!audit_opened.ok()) {
    if (!ReportDiskFull("cannot open the audit log", audit_opened.status(), config.data_dir)) {
      logging::Error("cannot open the audit log", {{"error", audit_opened.status().ToString()}});
    }
    return 1;
  }
  std::unique_ptr<store::AuditLog> audit = std::move(*audit_opened);
  api::ApiContext ctx;
  ctx.clock = clock;
  ctx.audit = audit.get();
  ctx.metrics = &metrics;
  api::RegisterAuditMetrics(&metrics);  // joule_audit_write_errors_total 0 from start
  ctx.auth = &auth;
  ctx.limits.max_body_bytes = config.max_body_bytes;
  ctx.limits.max_events_per_request = config.max_events_per_request;
  ctx.limits.max_future_skew_ns = config.max_future_skew_ns;
  ctx.limits.max_event_age_ns = config.max_event_age_ns;
  ctx.appender = &appender;
  ctx.request_limiter = request_limiter.get();
  ctx.event_limiter = event_limiter.get();
  ctx.limiter_clock = MonotonicClock::Default();
  ctx.latest = &latest;
  ctx.latest_windows = config.latest_windows;
  ctx.streams_per_key = config.streams_per_key;
  ctx.rules_per_owner = config.rules_per_owner;
  ctx.metric_kinds = config.metric_kinds;
  if (latest_health) {
    ctx.latest_state = [&processors, h = latest_health.get()] {
      api::ApiContext::LatestState s;
      store::LatestStoreHealth::State hs = h->state();
      s.up = hs.up;
      s.down_since_ns = hs.down_since_ns;
      s.outages = hs.outages;
      s.last_error = std::move(hs.last_error);
      for (auto& p : processors) {
        s.pending_records += p->LatestPendingRecords();
        s.pending_devices += p->LatestPendingDevices();
      }
      return s;
    };
    ctx.latest_failed = [h = latest_health.get()](const Status& st) { h->ReportFailure(st); };
  }
  ctx.history = history.get();
  ctx.history_json_cache = &history_json_cache;
  ctx.metadata = metadata.get();
  ctx.live = &live;
  ctx.alerts = alerts.get();
  ctx.replay = replay_jobs.get();
  ctx.base_window_ns = config.window_ns;
  ctx.health = [&processors, &config, threads](std::string_view device_id,
                                               stream::WindowEngine::DeviceHealth* out) {
    uint32_t p = model::PartitionOf(device_id, config.log_partitions);
    return processors[p % threads]->Health(device_id, out);
  };
  ctx.log_damage = [l = log.get()] {
    std::vector<std::string> out;
    for (const log::CorruptionReport& c : l->corruptions()) {
      out.push_back(log::CorruptionReportJson(c));
    }
    return out;
  };
  ctx.writer_faults = [&processors, &archiver, &log, &metadata] {
    std::vector<api::ApiContext::WriterFault> out;
    // Ingest refused: the log cannot write (disk full, no descriptors) — every append is
    // answered 503 until a round succeeds again (found by a black-box test: /readyz said
    // "ready" meanwhile).
    const log::Log::WriteFault lf = log->write_fault();
    if (lf.refusing) out.push_back({"log", lf.since_ns, lf.error, 0});
    api::ApiContext::WriterFault history;
    for (auto& p : processors) {
      const PartitionProcessor::HistoryBlock b = p->HistoryBlocked();
      if (!b.blocked) continue;
      if (history.writer.empty() || b.since_ns < history.since_ns) {
        history.since_ns = b.since_ns;
        history.error = b.error;
      }
      history.writer = "history";
      history.pending_records += b.pending_records;
    }
    if (!history.writer.empty()) out.push_back(std::move(history));
    if (archiver) {
      const Archiver::State a = archiver->state();
      if (a.failing) out.push_back({"archive", a.since_ns, a.error, 0});
    }
    // Admin writes (and alert state) refused for a full disk: answered 503 until a write
    // succeeds or the store sees space again (session 31: they were 500s, /readyz "ready").
    store::MetadataCache::WriteRefusal m = metadata->write_refusal();
    if (m.refusing) out.push_back({"metadata", m.since_ns, std::move(m.error), 0});
    return out;
  };
  // What /readyz reports, as gauges for Prometheus (docs/OPERATIONS.md): whether the
  // metadata database answers, and which writers a failing disk has stopped.
  metrics.AddGaugeCallback(
      "joule_metadata_up",
      "1 when the metadata store is reachable (PostgreSQL: its LISTEN connection is up and no "
      "query ran out of time since a probe last answered)",
      {}, [m = metadata.get()] { return m->reachable() ? 1.0 : 0.0; });
  std::vector<std::string> writers = {"log", "history", "metadata"};
  if (archiver) writers.emplace_back("archive");
  for (const std::string& writer : writers) {
    metrics.AddGaugeCallback(
        "joule_writer_failing",
        "1 while this writer cannot write (a full or failing disk) and retries, as /readyz says",
        {{"writer", writer}}, [faults = ctx.writer_faults, writer] {
          for (const api::ApiContext::WriterFault& f : faults()) {
            if (f.writer == writer) return 1.0;
          }
          return 0.0;
        });
  }
  ctx.restoring = [&processors_started] { return !processors_started.load(); };
  ctx.ready = [&processors, &processors_started] {
    if (!processors_started.load()) return false;
    for (auto& p : processors) {
      if (!p->ServingOnce()) return false;
    }
    return true;
  };

  net::Router router;
  api::AddAllRoutes(router, ctx);
  web::AddWebRoutes(router);  // the dashboard at "/", from assets embedded at build time

  std::shared_ptr<net::TlsContext> tls;
  if (!config.tls_cert_file.empty() || !config.tls_key_file.empty()) {
    if (config.tls_cert_file.empty() || config.tls_key_file.empty()) {
      logging::Error("server.tls_cert_file and server.tls_key_file must be set together");
      return 1;
    }
    Result<std::shared_ptr<net::TlsContext>> loaded =
        net::LoadServerTlsContext(config.tls_cert_file, config.tls_key_file);
    if (!loaded.ok()) {
      // (named by key: "TLS certificate file '…': asio.ssl error" did not say which setting)
      logging::Error("cannot load the TLS certificate (server.tls_cert_file, tls_key_file)",
                     {{"error", loaded.status().ToString()}});
      return 1;
    }
    tls = std::move(*loaded);
  }

  // One io_context per I/O thread, each run by its own thread (concurrency hint 1): the
  // first also holds the listeners, signals and the MQTT bridge; HTTP and MQTT connections
  // are spread over all of them at accept. A connection's reads, handler and writes then
  // stay on one thread — no hand-over through a shared scheduler queue, no futex wake-up
  // of the other thread per event (src/net/README.md, "Threads").
  boost::asio::io_context io(1);
  std::vector<std::unique_ptr<boost::asio::io_context>> worker_ios;
  std::vector<boost::asio::io_context*> connection_contexts = {&io};
  for (int i = 1; i < config.io_threads; ++i) {
    worker_ios.push_back(std::make_unique<boost::asio::io_context>(1));
    connection_contexts.push_back(worker_ios.back().get());
  }
  net::HttpServerOptions http_options;
  http_options.connection_contexts = connection_contexts;
  http_options.listen = config.http_listen;
  http_options.tls = tls;
  http_options.max_body_bytes = config.max_body_bytes;
  http_options.max_connections = static_cast<size_t>(config.http_max_connections);
  http_options.max_header_bytes = static_cast<uint32_t>(config.http_max_header_bytes);
  http_options.read_timeout_ns = config.http_read_timeout_ns;
  http_options.idle_timeout_ns = config.http_idle_timeout_ns;
  net::HttpServer http(io, http_options, router, &metrics);
  Status st = http.Start();
  if (!st.ok()) {
    logging::Error("cannot start HTTP listener",
                   {{"address", config.http_listen},
                    {"error", st.ToString()},
                    {"hint", "another address: server.http_listen (JOULE_SERVER_HTTP_LISTEN)"}});
    return 1;
  }
  std::string host = config.http_listen.substr(0, config.http_listen.rfind(':'));
  std::string address = fmt::format("{}:{}", host, http.port());
  logging::Info("http listening", {{"address", address}, {"tls", tls ? "true" : "false"}});
  ingest::MqttIngestOptions mqtt_ingest_options;
  mqtt_ingest_options.auth_disabled = auth.disabled();
  mqtt_ingest_options.limits = ctx.limits;
  mqtt_ingest_options.clock = clock;
  mqtt_ingest_options.event_limiter = event_limiter.get();
  mqtt_ingest_options.limiter_clock = MonotonicClock::Default();
  // Constructed only when used: their metrics are on /metrics only then, as the listener's
  // and the bridge client's are (found by the operator metrics' black-box test).
  std::optional<ingest::MqttIngest> mqtt_ingest;
  std::unique_ptr<net::mqtt::MqttListener> mqtt;
  if (!config.mqtt_listen.empty()) {
    mqtt_ingest.emplace(mqtt_ingest_options, metadata.get(), &appender, &metrics);
    net::mqtt::MqttListenerOptions mqtt_options;
    mqtt_options.listen = config.mqtt_listen;
    mqtt_options.tls = tls;
    mqtt_options.connection_contexts = connection_contexts;
    mqtt_options.max_packet_size =
        static_cast<uint32_t>(std::min<uint64_t>(config.max_body_bytes + (64u << 10), 268'435'455));
    // The same cap as HTTP's, for MQTT's own connections (SECURITY.md).
    mqtt_options.max_connections = static_cast<size_t>(config.http_max_connections);
    mqtt = std::make_unique<net::mqtt::MqttListener>(io, mqtt_options, &*mqtt_ingest, &metrics);
    Status mqtt_st = mqtt->Start();
    if (!mqtt_st.ok()) {
      // Debian's mosquitto package runs a broker on localhost:1883, the default here.
      logging::Error("cannot start MQTT listener",
                     {{"address", config.mqtt_listen},
                      {"error", mqtt_st.ToString()},
                      {"hint",
                       "another address: server.mqtt_listen (JOULE_SERVER_MQTT_LISTEN); \"\" "
                       "turns MQTT off (a mosquitto broker on 1883?)"}});
      return 1;
    }
    std::string mqtt_host = config.mqtt_listen.substr(0, config.mqtt_listen.rfind(':'));
    logging::Info("mqtt listening", {{"address", fmt::format("{}:{}", mqtt_host, mqtt->port())},
                                     {"tls", tls ? "true" : "false"}});
  }

  // Bridge mode: events from an external broker, acknowledged upstream once durable.
  ingest::MqttBridgeOptions bridge_options;
  bridge_options.auth_disabled = auth.disabled();
  bridge_options.limits = ctx.limits;
  bridge_options.clock = clock;
  std::optional<ingest::MqttBridge> bridge;
  std::unique_ptr<net::mqtt::MqttSubscriber> bridge_client;
  if (!config.mqtt_bridge_url.empty()) {
    bridge.emplace(bridge_options, metadata.get(), &appender, &metrics);
    net::mqtt::MqttSubscriberOptions sub;
    Status url_st = net::mqtt::ParseBrokerUrl(config.mqtt_bridge_url, &sub);
    if (!url_st.ok()) {
      logging::Error("bad ingest.mqtt_bridge_url", {{"error", url_st.ToString()}});
      return 1;
    }
    // (Checked at load: LoadConfig refuses a malformed filter naming the key.)
    if (Status st = net::mqtt::ParseTopicFilters(config.mqtt_bridge_topics, &sub.topics);
        !st.ok()) {
      logging::Error("bad ingest.mqtt_bridge_topics", {{"error", st.ToString()}});
      return 1;
    }
    if (sub.topics.empty() || config.mqtt_bridge_client_id.empty()) {
      logging::Error(
          "ingest.mqtt_bridge_topics and ingest.mqtt_bridge_client_id must not be "
          "empty when ingest.mqtt_bridge_url is set");
      return 1;
    }
    const bool bridge_tls_files = !config.mqtt_bridge_ca_file.empty() ||
                                  !config.mqtt_bridge_cert_file.empty() ||
                                  !config.mqtt_bridge_key_file.empty();
    if (sub.use_tls) {
      auto bridge_tls = net::LoadClientTlsContext(
          config.mqtt_bridge_ca_file, config.mqtt_bridge_cert_file, config.mqtt_bridge_key_file);
      if (!bridge_tls.ok()) {
        logging::Error("bad ingest.mqtt_bridge TLS settings",
                       {{"error", bridge_tls.status().ToString()}});
        return 1;
      }
      sub.tls_context = std::move(bridge_tls).value();
    } else if (bridge_tls_files) {
      // Refuse rather than silently connect in clear text with certificates configured.
      logging::Error(
          "ingest.mqtt_bridge_ca_file / _cert_file / _key_file are set but "
          "ingest.mqtt_bridge_url is not mqtts://");
      return 1;
    }
    sub.client_id = config.mqtt_bridge_client_id;
    if (!config.mqtt_bridge_username.empty()) sub.username = config.mqtt_bridge_username;
    if (!config.mqtt_bridge_password.empty()) sub.password = config.mqtt_bridge_password;
    sub.max_packet_size =
        static_cast<uint32_t>(std::min<uint64_t>(config.max_body_bytes + (64u << 10), 268'435'455));
    bridge_client = std::make_unique<net::mqtt::MqttSubscriber>(io, sub, &*bridge, &metrics);
    bridge_client->Start();
    logging::Info("mqtt bridge starting", {{"broker", fmt::format("{}:{}", sub.host, sub.port)},
                                           {"tls", sub.use_tls ? "true" : "false"},
                                           {"topics", config.mqtt_bridge_topics},
                                           {"client_id", sub.client_id}});
  }

  bool shutting_down = false;  // on io's thread
  int listeners_open = 0;      // on io's thread, once shutting down
  std::atomic<bool> stop_starting{false};
  auto shut_down = [&] {
    if (std::exchange(shutting_down, true)) return;
    stop_starting.store(true);  // a processor not yet started stays so (nothing to save)
    // Appends in flight are committed at once: a request waiting for its acknowledgement
    // must not wait out storage.log_group_commit_window (it got no answer with 25s).
    log->EndGroupCommitWindow();
    // Both listeners answer what they took in (HTTP requests, MQTT publishes in flight get
    // their PUBACKs once durable) and take nothing new; io stops when both are done.
    listeners_open = mqtt ? 2 : 1;
    auto closed = [&io, &listeners_open] {
      if (--listeners_open == 0) io.stop();
    };
    if (mqtt) mqtt->Shutdown(closed);
    if (bridge_client) bridge_client->Stop();  // unacknowledged messages stay with the broker
    http.Shutdown(closed);
  };
  // SIGHUP (the terminal closed, or `kill -HUP`) stops the server the same way: it killed
  // it at once, without the final checkpoints or a "stopped" line (found by the operator's
  // black-box test, session 31). There is nothing to reload: the config is read at start.
  boost::asio::signal_set signals(io, SIGINT, SIGTERM, SIGHUP);
  signals.async_wait([&](const boost::system::error_code& error, int signo) {
    if (error) return;
    logging::Info("shutting down", {{"signal", std::to_string(signo)}});
    shut_down();
  });
  // A stop signal held since main() (one sent while the server was starting) is delivered
  // now, to the handler above (found by a black-box test: a SIGTERM in the first ~20 ms
  // ended the process with status 143 and no log line). The threads started before keep
  // them blocked and never take them.
  ReleaseStopSignals();

  // The processors start while the listeners take events into the log: a restart refuses
  // no event for the seconds a large state takes to restore (they were refused while the
  // ports stayed closed). One after the other: a restore holds the checkpoint's image and
  // the state it builds (about twice the state), and side by side the peaks add up — for
  // no faster start on two cores (docs/benchmarks/HISTORY.md, "Session 23"). A processor that
  // cannot start stops the server.
  std::atomic<bool> start_failed{false};
  std::string start_error;  // the starter's, read after it is joined
  std::thread starter([&] {
    const int64_t t0 = MonotonicClock::Default()->NowNanos();
    for (auto& p : processors) {
      if (stop_starting.load()) return;
      Status st = p->Start();
      if (st.ok()) continue;
      if (!ReportDiskFull("cannot start processor", st, config.data_dir)) {
        logging::Error("cannot start processor", {{"error", st.ToString()}});
      }
      start_error = st.ToString();
      start_failed.store(true);
      boost::asio::post(io, shut_down);
      return;
    }
    processors_started.store(true);
    replaying_processors.store(&processors);
    logging::Info(
        "processors started",
        {{"seconds",
          fmt::format("{:.3f}",
                      static_cast<double>(MonotonicClock::Default()->NowNanos() - t0) / 1e9)}});
  });
  std::vector<std::thread> io_threads;
  std::vector<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> keep;
  for (auto& w : worker_ios) {
    keep.push_back(boost::asio::make_work_guard(*w));
    io_threads.emplace_back([w = w.get(), i = io_threads.size() + 1] {
      // Named so that its CPU can be told apart (top -H, /proc/PID/task/*/comm, perf); the
      // main thread runs io_context 0.
      SetUpThread(fmt::format("joule-io-{}", i), 0);
      w->run();
    });
  }
  io.run();                // until the HTTP server's shutdown is done: its connections are gone
  live.StopRevalidator();  // (it calls the authenticator, which goes with the API context)
  for (auto& k : keep) k.reset();
  for (auto& w : worker_ios) w->stop();
  for (auto& t : io_threads) t.join();
  starter.join();  // a SIGTERM during a restore waits for it (the processors' Stop below)
  // The processors that did not start (one failed, or the stop came first) never apply the
  // corrections a replay's hand-over waits for: it gives up now, not after its 30 s (the
  // journal stays for the next start).
  for (auto& p : processors) p->Abandon();

  // Each step of the shutdown is reported in the last line, and the exit status says whether
  // all succeeded (README "Running it"). A failed one loses nothing: the log holds every
  // acknowledged event and the next start recovers from the last checkpoints written.
  Status flushed = log->Flush();
  if (replay_jobs) replay_jobs->Stop();  // cancels a running replay between devices
  journals_stop.store(true);
  if (journal_cleaner.joinable()) journal_cleaner.join();
  Status checkpoints;  // the first processor's failure
  for (auto& p : processors) {
    Status st = p->Stop();  // its held history records and final checkpoint
    if (!st.ok() && checkpoints.ok()) checkpoints = std::move(st);
  }
  replaying_processors.store(nullptr);  // a replay cut short: its held changes are not news
  if (latest_health) latest_health->Stop();
  alerts->Stop();  // evaluates what the processors queued; deliveries stay in the outbox
  // Only now, with the alert thread joined: its replay_done may have loaded the pointer
  // before the store of nullptr above and still be walking the processors (they were
  // destroyed under it: a use after free at shutdown, found by ThreadSanitizer).
  processors.clear();
  Status sealed = archiver ? archiver->Stop() : Status::Ok();  // seals everything durable
  archiver.reset();
  Status history_flushed = history->Flush();
  if (!history_flushed.ok()) {
    logging::Error("history flush failed", {{"error", history_flushed.ToString()}});
  }
  history.reset();
  log.reset();
  // A processor that could not start makes the stop unclean too (the last line said
  // "clean": "true" at info level before an exit 1: found by a black-box test).
  const bool clean = flushed.ok() && checkpoints.ok() && sealed.ok() && history_flushed.ok() &&
                     !start_failed.load();
  auto outcome = [](const Status& st) { return st.ok() ? std::string("ok") : st.ToString(); };
  logging::Log(clean ? logging::Level::kInfo : logging::Level::kError, "stopped",
               {{"clean", clean ? "true" : "false"},
                {"processors_start", start_failed.load() ? start_error : std::string("ok")},
                {"log_flush", outcome(flushed)},
                {"checkpoints", outcome(checkpoints)},
                {"history_flush", outcome(history_flushed)},
                {"archive_seal", config.archive_enabled ? outcome(sealed) : "off"}});
  return clean ? 0 : 1;
}

}  // namespace joule::app

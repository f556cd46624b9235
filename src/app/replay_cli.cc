#include "app/replay_cli.h"

#include <fmt/format.h>
#include <simdjson.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <thread>

#include "api/query_params.h"
#include "api/replay_service.h"
#include "app/archive_retention_note.h"
#include "app/archive_seal.h"
#include "app/checkpoint_correction.h"
#include "app/data_dir_create.h"
#include "app/data_dir_id.h"
#include "app/data_dir_lock.h"
#include "app/engine_setup.h"
#include "app/http_client.h"
#include "app/log_partitions.h"
#include "app/metadata_open.h"
#include "app/replay.h"
#include "app/replay_journal.h"
#include "app/restore_seed.h"
#include "common/clock.h"
#include "common/json_writer.h"
#include "common/time_format.h"
#include "log/log.h"
#include "log/segment_format.h"
#include "net/url.h"
#include "store/metadata_store.h"
#include "store/redis/redis_latest_store.h"
#include "store/rocksdb/rocksdb_history_store.h"

namespace joule::app {
namespace {

int Fail(const std::string& message, int code = 1) {
  fmt::print(stderr, "joule replay: {}\n", message);
  return code;
}

void PrintSummary(int64_t from, int64_t to, bool dry_run, const ReplayStats& stats,
                  const std::string& job) {
  JsonWriter w;
  w.BeginObject();
  w.Key("from");
  w.String(FormatRfc3339Millis(from));
  w.Key("to");
  w.String(FormatRfc3339Millis(to));
  w.Key("dry_run");
  w.Bool(dry_run);
  if (!job.empty()) {
    w.Key("job");
    w.String(job);
  }
  WriteReplayStats(w, stats);
  w.EndObject();
  fmt::print("{}\n", w.str());
}

// The admin token sent to the server and where it came from, for the message of a refusal
// (a 401 said only "unknown token": found by a black-box test, the tool had read a
// {data_dir}/admin_token an earlier start generated while the server ran with
// JOULE_AUTH_ADMIN_TOKEN, which it does not accept).
struct AdminToken {
  std::string token;
  std::string source;
};

AdminToken AdminTokenToSend(const Config& config, const ReplayCliOptions& options) {
  if (!options.admin_token.empty()) return {options.admin_token, "--admin-token"};
  if (!config.admin_token.empty()) {
    const char* env = std::getenv("JOULE_AUTH_ADMIN_TOKEN");
    return {config.admin_token, env != nullptr && *env != '\0'
                                    ? "JOULE_AUTH_ADMIN_TOKEN"
                                    : "auth.admin_token of the config file"};
  }
  const std::string path = (std::filesystem::path(config.data_dir) / "admin_token").string();
  std::ifstream in(path);
  std::string token;
  if (in) std::getline(in, token);
  if (token.empty()) {
    return {"", fmt::format("no --admin-token, auth.admin_token or {}", path)};
  }
  return {token, fmt::format("the file {} (the token a start without auth.admin_token "
                             "generated; a server run with auth.admin_token does not take it)",
                             path)};
}

// Appended to a 401/403: which token was sent and how to send the server's.
std::string TokenHint(int status, const AdminToken& token) {
  if (status != 401 && status != 403) return "";
  if (token.token.empty()) {
    return fmt::format(
        "; no admin token was given ({}): pass the server's admin token with --admin-token "
        "TOKEN, or give this command the server's auth.admin_token (--config, "
        "JOULE_AUTH_ADMIN_TOKEN)",
        token.source);
  }
  return fmt::format(
      "; the admin token sent came from {}: pass the server's admin token with --admin-token "
      "TOKEN, or give this command the server's auth.admin_token (--config, "
      "JOULE_AUTH_ADMIN_TOKEN)",
      token.source);
}

std::string UrlEncode(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out += fmt::format("%{:02X}", c);
    }
  }
  return out;
}

bool TlsConfigured(const Config& config) {
  return !config.tls_cert_file.empty() && !config.tls_key_file.empty();
}

// The server at `url` does the replay; progress lines to stderr, the summary to stdout.
// `url_from_config`: `url` was derived from server.http_listen (no --server given).
int RunRemote(const Config& config, const std::string& url, bool url_from_config,
              const AdminToken& admin, const ReplayCliOptions& options, int64_t from, int64_t to) {
  const std::string& token = admin.token;
  std::string_view rest(url);
  bool https = false;
  if (rest.rfind("http://", 0) == 0) {
    rest.remove_prefix(7);
  } else if (rest.rfind("https://", 0) == 0) {
    rest.remove_prefix(8);
    https = true;
  }
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  Result<net::HostPort> hp = net::ParseHostPort(rest);
  if (!hp.ok() || rest.find('/') != std::string_view::npos) {
    return Fail(fmt::format("--server must be http://host:port or https://host:port, not {}", url),
                2);
  }
  if (!options.cacert.empty() && !https) {
    return Fail(fmt::format("--cacert is for an https:// server, not {}", url), 2);
  }
  std::string host = hp->host.empty() || hp->host == "0.0.0.0" ? "127.0.0.1" : hp->host;
  if (host == "::") host = "::1";
  std::optional<ClientTlsTrust> trust;
  if (https) {
    // On the server's machine its own certificate (server.tls_cert_file) is trusted as is;
    // elsewhere the system's CAs and --cacert, host name checked (client_tls.h).
    trust = ClientTlsTrust{options.cacert, TlsConfigured(config) ? config.tls_cert_file : ""};
  }
  HttpClient client(host, std::to_string(hp->port), std::move(trust));

  api::ReplayJobRequest request;
  request.from_ns = from;
  request.to_ns = to;
  request.device_id = options.device_id;
  request.owner_id = options.owner_id;
  request.dry_run = options.dry_run;
  std::string body;
  int status = client.Post("/v1/admin/replay", "application/json", api::ReplayRequestJson(request),
                           token, &body);
  if (status < 0) {
    // A TLS listener closes a plain HTTP connection without an answer. The address came
    // from this process's config and environment, which need not be the server's (it
    // said only "cannot reach" with a TLS hint to a user whose server was on another
    // port: found by a black-box test).
    const std::string_view tls_hint =
        https ? ""
              : " (a server with TLS on, server.tls_cert_file, is asked with --server "
                "https://HOST:PORT)";
    if (url_from_config) {
      return Fail(fmt::format(
          "cannot reach the server at {}: {}; that address is server.http_listen as this "
          "command reads it (--config, JOULE_SERVER_HTTP_LISTEN): for a server on another "
          "address or port pass --server http://HOST:PORT{}",
          url, client.last_error(), tls_hint));
    }
    return Fail(fmt::format("cannot reach the server at {}: {}; check --server{}", url,
                            client.last_error(), tls_hint));
  }
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (status != 202) {
    std::string_view message = body;
    if (parser.parse(body).get(doc) == simdjson::SUCCESS) {
      std::string_view m;
      if (doc["error"]["message"].get_string().get(m) == simdjson::SUCCESS) message = m;
    }
    return Fail(fmt::format("the server at {} refused the replay: HTTP {}: {}{}", url, status,
                            message, TokenHint(status, admin)));
  }
  std::string_view id_view;
  if (parser.parse(body).get(doc) != simdjson::SUCCESS ||
      doc["id"].get_string().get(id_view) != simdjson::SUCCESS) {
    return Fail("unexpected answer from the server: " + body);
  }
  const std::string id(id_view);
  fmt::print(stderr, "joule replay: the server at {} runs it as job {}\n", url, id);

  std::string last_line;
  auto last_print = std::chrono::steady_clock::now() - std::chrono::hours(1);
  while (true) {
    status = client.Get("/v1/admin/replay/" + UrlEncode(id), token, &body);
    // What becomes of the job when the server is gone: docs/formats/archive.md, "Replay
    // journal" (it printed "lost the job … (HTTP -1)" and the last answer, "running").
    constexpr std::string_view kAfterRestart =
        "Replay jobs live in the server's memory and do not survive a restart: the batches the "
        "job committed stay, one it had begun to commit is finished from the replay journal "
        "by the next server start, and the rest of the range is not written. Once the server "
        "is back, run the same `joule replay` again (what is already written is found "
        "unchanged; docs/formats/archive.md, \"Replay journal\")";
    if (status < 0) {
      return Fail(fmt::format(
          "lost the connection to the server at {} while job {} was running ({}): the server "
          "stopped or crashed, or the network failed. {}",
          url, id, client.last_error(), kAfterRestart));
    }
    if (status == 404) {
      return Fail(
          fmt::format("the server at {} no longer knows job {}: it restarted while the job ran. {}",
                      url, id, kAfterRestart));
    }
    if (status != 200) {
      std::string_view message = body;
      if (parser.parse(body).get(doc) == simdjson::SUCCESS) {
        std::string_view m;
        if (doc["error"]["message"].get_string().get(m) == simdjson::SUCCESS) message = m;
      }
      return Fail(fmt::format("cannot follow job {} at {}: HTTP {}: {}{}", id, url, status,
                              std::string(message), TokenHint(status, admin)));
    }
    if (parser.parse(body).get(doc) != simdjson::SUCCESS) {
      return Fail("unexpected answer from the server: " + body);
    }
    std::string_view state;
    if (doc["state"].get_string().get(state) != simdjson::SUCCESS) state = "";
    ReplayProgress p;
    simdjson::dom::object po;
    if (doc["progress"].get_object().get(po) == simdjson::SUCCESS) {
      std::string_view phase;
      if (po["phase"].get_string().get(phase) == simdjson::SUCCESS) p.phase = phase;
      auto u = [&](const char* key) {
        uint64_t v = 0;
        return po[key].get_uint64().get(v) == simdjson::SUCCESS ? v : uint64_t{0};
      };
      p.files_done = u("files_done");
      p.files_total = u("files_total");
      p.devices_done = u("devices_done");
      p.devices_total = u("devices_total");
      p.stats.events_read = u("events_read");
      p.stats.duplicates = u("duplicates");
      p.stats.devices = u("devices");
      p.stats.records_computed = u("records_computed");
      p.stats.records_written = u("records_written");
      p.stats.records_unchanged = u("records_unchanged");
      p.stats.records_live = u("records_live");
      p.stats.records_incomplete = u("records_incomplete");
      p.stats.records_expired = u("records_expired");
    }
    const auto now = std::chrono::steady_clock::now();
    std::string line = ReplayProgressLine(p);
    if (state != "running") {
      if (line != last_line) fmt::print(stderr, "joule replay: {}\n", line);
      if (state == "succeeded") {
        PrintSummary(from, to, options.dry_run, p.stats, id);
        return 0;
      }
      std::string_view error;
      if (doc["error"].get_string().get(error) != simdjson::SUCCESS) error = "(no message)";
      return Fail(fmt::format("job {} failed: {}", id, error));
    }
    if (line != last_line && now - last_print >= std::chrono::seconds(1)) {
      fmt::print(stderr, "joule replay: {}\n", line);
      last_line = line;
      last_print = now;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
}

}  // namespace

int RunReplay(const Config& config, const ReplayCliOptions& options) {
  // As the API reads them (api/query_params.h): RFC 3339 or epoch milliseconds, clamped to
  // [1900-01-01, 2170-01-01), so `--to 9999-12-31T23:59:59Z` is "everything from --from on"
  // (it was refused: int64 nanoseconds end in 2262; found by a black-box test).
  Result<int64_t> from_time = api::ParseTimeParam("--from", options.from);
  if (!from_time.ok()) return Fail(from_time.status().message(), 2);
  Result<int64_t> to_time = api::ParseTimeParam("--to", options.to);
  if (!to_time.ok()) return Fail(to_time.status().message(), 2);
  const int64_t from = *from_time, to = *to_time;
  if (to <= from) return Fail("--to must be after --from", 2);
  if (!options.device_id.empty() && !options.owner_id.empty()) {
    return Fail("give --device or --owner, not both", 2);
  }
  // (with --server: as far as this config knows the server's archive.retention)
  if (std::string note = ArchiveRetentionNote(config, from, SystemClock::Default()->NowNanos());
      !note.empty()) {
    fmt::print(stderr, "joule replay: {}\n", note);
  }
  if (!options.server.empty()) {
    return RunRemote(config, options.server, /*url_from_config=*/false,
                     AdminTokenToSend(config, options), options, from, to);
  }
  // As export says it (it printed RocksDB's own log line and "While mkdir if missing").
  if (!std::filesystem::is_directory(config.data_dir)) {
    return Fail(NoDataDirMessage(config.data_dir));
  }

  ReplayRequest req;
  req.from_ns = from;
  req.to_ns = to;
  req.archive_dir = (std::filesystem::path(config.data_dir) / "archive").string();
  req.engine = EngineOptionsFrom(config);
  req.dry_run = options.dry_run;

  store::RocksDbHistoryOptions ho;
  ho.path = (std::filesystem::path(config.data_dir) / "history").string();
  ho.retention.base_ns = config.history_retention_base_ns;
  ho.retention.hour_ns = config.history_retention_hour_ns;
  ho.retention.day_ns = config.history_retention_day_ns;
  // A running server holds the data dir (its lock; the history store's, for a server from
  // before the data dir lock): it does the replay itself. Otherwise this process holds the
  // lock while it seals the log tail and writes history, so no server starts meanwhile.
  std::optional<DataDirLock> dir_lock;
  bool in_use = false;
  if (std::filesystem::is_directory(config.data_dir)) {
    // Another offline command (an export, a replay) is waited for: it is no server to ask
    // (found by a black-box test: "cannot reach the server", exit 1).
    Result<DataDirLock> locked = DataDirLock::AcquireWaiting(
        config.data_dir, "replay", kDataDirLockWait,
        [](const std::string& m) { fmt::print(stderr, "joule replay: {}\n", m); });
    if (locked.ok()) {
      dir_lock.emplace(std::move(*locked));
    } else if (locked.status().code() == StatusCode::kUnavailable) {
      in_use = true;
    } else {
      return Fail(locked.status().ToString());
    }
  }
  Result<std::unique_ptr<store::RocksDbHistoryStore>> history =
      Status::Unavailable("data dir in use");
  if (!in_use) {
    history = store::RocksDbHistoryStore::Open(ho, nullptr);
    if (!history.ok()) {
      const std::string msg = history.status().ToString();
      std::string lower = msg;
      std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
      if (lower.find("lock") == std::string::npos) return Fail("history store: " + msg);
      in_use = true;
    }
  }
  if (in_use) {
    Result<net::HostPort> hp = net::ParseHostPort(config.http_listen);
    if (!hp.ok() || hp->port == 0) {
      return Fail(fmt::format("the data dir {} is in use by another process (a running "
                              "`joule serve`?) and server.http_listen ({}) does not say where "
                              "it listens: pass --server http(s)://HOST:PORT --admin-token T, or "
                              "stop the server and run replay again",
                              config.data_dir, config.http_listen),
                  3);
    }
    const std::string url = fmt::format(
        "{}://{}:{}", TlsConfigured(config) ? "https" : "http",
        hp->host.find(':') != std::string::npos ? "[" + hp->host + "]" : hp->host, hp->port);
    fmt::print(stderr,
               "joule replay: the data dir is in use by a running server; asking it at {} "
               "(POST /v1/admin/replay)\n",
               url);
    return RunRemote(config, url, /*url_from_config=*/true, AdminTokenToSend(config, options),
                     options, from, to);
  }
  if (!config.archive_enabled) fmt::print(stderr, "joule replay: {}\n", kArchiveDisabledNote);
  if (!std::filesystem::is_directory(req.archive_dir)) {
    return Fail(fmt::format("no archive at {} (is storage.data_dir right?)", req.archive_dir));
  }
  uint64_t log_records = 0;
  if (config.archive_enabled) {
    fmt::print(stderr, "joule replay: sealing the archive (log tail)\n");
    Status sealed = SealLogTail(config, req.archive_dir, &log_records);
    if (!sealed.ok()) return Fail("archive: " + sealed.ToString());
  } else {
    // Not sealed: a log that exists may hold records a live engine state has; none at all is
    // a restore (found by a black-box test: with the archive disabled the restore wrote
    // neither the open windows nor their state, without a word).
    Result<uint32_t> existing =
        log::ExistingPartitions((std::filesystem::path(config.data_dir) / "log").string());
    log_records = existing.ok() && *existing == 0 ? 0 : 1;
  }
  // A data dir whose log never held a record and whose checkpoints hold no engine state (an
  // archive restored into a new data dir, docs/formats/archive.md "A data dir whose log never
  // held a record"): no engine holds the windows still open at the archive's end. The replay
  // writes the settled windows and seeds the processors' checkpoints with the engine state of
  // the archive's events (app/restore_seed.h), so that `joule serve` continues the open
  // windows. (Session 33 wrote every window instead, the open ones "final" with version 2^52,
  // so the server's later versions of the current hour and day were refused by history:
  // found by a black-box test.)
  const std::string checkpoints_dir =
      (std::filesystem::path(config.data_dir) / "checkpoints").string();
  const bool restoring =
      log_records == 0 && !CheckpointsHoldEngineState(checkpoints_dir, req.engine, nullptr);
  if (restoring && (!options.device_id.empty() || !options.owner_id.empty())) {
    return Fail(
        "the data dir holds no engine state (its log never held a record: an archive restored "
        "into a new data dir): its first replay seeds the engine state of every device, so it "
        "takes no --device or --owner (docs/OPERATIONS.md, \"Restore\")",
        2);
  }
  if (restoring) {
    fmt::print(stderr,
               "joule replay: the data dir holds no engine state (its log never held a record): "
               "the settled windows are written, and the processors' checkpoints are seeded "
               "with the state of the windows still open{}\n",
               req.dry_run ? " (not in a dry run)" : "");
  }

  Result<std::unique_ptr<store::MetadataStore>> metadata = OpenMetadataStore(config);
  if (!metadata.ok()) return Fail("metadata store: " + metadata.status().ToString());
  Result<std::set<std::string, std::less<>>> devices =
      ReplayDevices(metadata->get(), options.device_id, options.owner_id,
                    /*unregistered_ids_archived=*/config.auth_mode == "disabled");
  if (!devices.ok()) return Fail(devices.status().message());
  req.devices = std::move(*devices);
  MetadataTimezones timezones(metadata->get());

  std::unique_ptr<store::LatestStore> latest;
  if (config.latest_backend != "redis") {
    // Redis (if a later run uses it) misses the records rewritten here.
    Status renewed = RenewDataDirId(config.data_dir);
    if (!renewed.ok()) return Fail("data dir id: " + renewed.ToString());
  }
  if (config.latest_backend == "redis") {
    store::RedisLatestStoreOptions ro;
    if (!config.latest_url.empty()) ro.url = config.latest_url;
    ro.windows_per_device = config.latest_windows;
    // agg:instance is left alone: this process does not rewrite Redis from history, the
    // next server does when Redis is not its data dir's (src/store/README.md).
    ro.instance_id.clear();
    auto redis = store::RedisLatestStore::Open(ro);
    if (!redis.ok()) return Fail("latest store: " + redis.status().ToString());
    latest = std::move(*redis);
  }

  // A replay killed before it had corrected the checkpoints left its journal: finish it
  // first, or its difference would be lost (this run finds those minutes unchanged).
  const std::string journal_dir = ReplayJournalDir(config.data_dir);
  Result<std::vector<std::string>> pending = ListReplayJournals(journal_dir);
  if (!pending.ok()) return Fail(pending.status().ToString());
  std::optional<uint32_t> partitions;
  auto resolve_partitions = [&]() -> Status {
    if (partitions) return Status::Ok();
    JOULE_ASSIGN_OR_RETURN(uint32_t n, ResolveLogPartitions(config));
    partitions = n;
    return Status::Ok();
  };
  if (!pending->empty() && req.dry_run) {
    fmt::print(stderr,
               "joule replay: {} interrupted replay(s) not finished yet ({}): the next replay "
               "or server start finishes them; this dry run does not\n",
               pending->size(), journal_dir);
  } else if (!pending->empty()) {
    fmt::print(stderr, "joule replay: finishing {} interrupted replay(s) ({})\n", pending->size(),
               journal_dir);
    if (Status st = resolve_partitions(); !st.ok()) return Fail(st.ToString());
    Result<ReplayRecoveryStats> recovered = RecoverReplayJournals(
        config.data_dir, *partitions, req.engine, &timezones, history->get(), latest.get());
    if (!recovered.ok()) {
      return Fail(fmt::format(
          "an interrupted replay could not be finished; its journal stays in {} and is "
          "applied by the next replay or server start; until then the open 1h/1d rollups "
          "lack the differences it holds: {}",
          journal_dir, recovered.status().ToString()));
    }
    fmt::print(stderr,
               "joule replay: interrupted replay(s) finished: {} history record(s) rewritten, "
               "open 1h/1d rollups of {} rewritten minutes corrected in {} checkpoint(s)\n",
               recovered->records, recovered->checkpoints.corrections,
               recovered->checkpoints.checkpoints);
  }

  // The rollups above the rewritten minutes that are not settled are in the processors'
  // checkpoints: they get the difference there (app/checkpoint_correction.h), through the
  // journal (app/replay_journal.h), so that a kill at any moment loses nothing.
  CheckpointCorrectionStats corrected_total;
  bool handed_over = false;
  req.journal_dir = journal_dir;
  req.hand_over = [&](uint64_t seq,
                      const std::vector<BaseCorrection>& corrections) -> Result<bool> {
    handed_over = true;
    JOULE_RETURN_IF_ERROR(resolve_partitions());
    Result<CheckpointCorrectionStats> corrected = CorrectCheckpointedRollups(
        (std::filesystem::path(config.data_dir) / "checkpoints").string(), *partitions, req.engine,
        &timezones, history->get(), corrections, seq);
    if (!corrected.ok()) {
      return Status(corrected.status().code(),
                    fmt::format("the open 1h/1d rollups in the checkpoints were not corrected; "
                                "the replay journal in {} keeps the difference and the next "
                                "replay or server start applies it: {}",
                                journal_dir, corrected.status().ToString()));
    }
    corrected_total.checkpoints += corrected->checkpoints;
    corrected_total.corrections += corrected->corrections;
    corrected_total.records_written += corrected->records_written;
    return true;
  };
  std::optional<EngineSeed> seed;
  if (restoring) {
    // No engine holds a rollup to correct (no journal, no hand-over): the seed computes the
    // rollups from every event.
    req.journal_dir.clear();
    req.hand_over = nullptr;
    if (Status st = resolve_partitions(); !st.ok()) return Fail(st.ToString());
    if (!req.dry_run) {
      // The log gets the seed's partition count now (empty partitions), so that a server
      // started with another stream.processor_threads is refused by the checkpoints' layout
      // check rather than creating a log of its own count and ignoring seeded devices, whose
      // open hour and day the next events then replaced (found by a black-box test).
      for (uint32_t p = 0; p < *partitions; ++p) {
        std::error_code ec;
        std::filesystem::create_directories(
            std::filesystem::path(config.data_dir) / "log" / log::PartitionDirName(p), ec);
        if (ec) return Fail(fmt::format("cannot create the log: {}", ec.message()));
      }
    }
    seed.emplace(
        req.engine, *partitions,
        std::max(1, std::min<int>(config.processor_threads, static_cast<int>(*partitions))),
        &timezones);
    req.device_events = [&](std::string_view device_id, const std::vector<model::Event>& events,
                            int64_t settled_end_ns) {
      seed->AddDevice(device_id, events, settled_end_ns);
    };
  }
  Result<ReplayStats> stats =
      ReplayArchive(req, history->get(), latest.get(), &timezones,
                    [last = std::string()](const ReplayProgress& p) mutable {
                      // Each phase reports its end too: a line equal to the one before it
                      // (an empty archive's "0 events") is not printed twice.
                      std::string line = ReplayProgressLine(p);
                      if (line != last) fmt::print(stderr, "joule replay: {}\n", line);
                      last = std::move(line);
                    });
  if (!stats.ok()) return Fail(stats.status().ToString());
  if (seed && !req.dry_run) {
    Result<SeedStats> seeded = seed->Finish(checkpoints_dir, history->get(), latest.get());
    if (!seeded.ok()) {
      return Fail(fmt::format(
          "the processors' checkpoints could not be seeded ({}); the settled windows are "
          "written: run the replay again before `joule serve`: {}",
          checkpoints_dir, seeded.status().ToString()));
    }
    fmt::print(stderr,
               "joule replay: engine state of {} device(s) ({} events) seeded into {} "
               "checkpoint(s); {} record(s) of windows still open written (the server "
               "continues them)\n",
               seeded->devices, seeded->events, seeded->checkpoints, seeded->records_written);
  }
  if (handed_over) {
    fmt::print(stderr,
               "joule replay: open 1h/1d rollups of {} rewritten minutes corrected in {} "
               "checkpoint(s), {} final rollup record(s) written\n",
               corrected_total.corrections, corrected_total.checkpoints,
               corrected_total.records_written);
  }
  PrintSummary(req.from_ns, req.to_ns, req.dry_run, *stats, "");
  return 0;
}

}  // namespace joule::app

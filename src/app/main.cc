// joule: the single binary. Subcommands: serve, simulate, config, devices, replay, export.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <system_error>

#include "app/allocator_tuning.h"
#include "app/config.h"
#include "app/devices_cli.h"
#include "app/export_cli.h"
#include "app/replay_cli.h"
#include "app/server.h"
#include "app/simulator.h"
#include "common/clock.h"
#include "common/logging.h"
#include "common/time_format.h"

extern char** environ;

namespace {

// The argument where `app` (or a subcommand of it) expects a subcommand, when it names none
// (or is missing): CLI11 itself only says "A subcommand is required" (exit 106). Options
// are left to CLI11 (no command here takes an option before its subcommand).
std::string UnknownSubcommandMessage(CLI::App& app, int argc, char** argv) {
  CLI::App* at = &app;
  std::string path = "joule";
  for (int i = 1;; ++i) {
    auto all = at->get_subcommands([](CLI::App*) { return true; });
    if (all.empty()) return "";
    std::string names;
    for (CLI::App* sub : all) names += (names.empty() ? "" : ", ") + sub->get_name();
    if (i >= argc) {
      if (at->get_require_subcommand_min() == 0) return "";
      return fmt::format("{}: a subcommand is required: {} (see {} --help)", path, names, path);
    }
    const std::string arg = argv[i];
    if (arg.empty() || arg[0] == '-') return "";
    CLI::App* next = nullptr;
    for (CLI::App* sub : all) {
      if (sub->get_name() == arg) next = sub;
    }
    if (!next) {
      return fmt::format("{}: unknown subcommand '{}'; expected one of: {} (see {} --help)", path,
                         arg, names, path);
    }
    at = next;
    path += " " + arg;
  }
}

// What a subcommand wrote to stdout (an export, the config, a replay summary, devices as
// CSV) is its result: a write that failed (a full disk, /dev/full) fails the command, exit 1
// with a message, instead of exit 0 with a truncated or empty file (found by a black-box
// test). A command that failed already keeps its code and message.
int FinishStdout(int code) {
  errno = 0;
  const bool flushed = std::fflush(stdout) == 0;
  const int err = errno;
  if ((flushed && !std::ferror(stdout)) || code != 0) return code;
  fmt::print(stderr, "joule: writing to standard output failed: {}\n",
             !flushed && err != 0 ? std::strerror(err) : "a write failed");
  return 1;
}

// --from and --to of `replay` and `export`, both required.
void AddRangeOptions(CLI::App* cmd, std::string* from, std::string* to) {
  cmd->add_option("--from", *from,
                  "Range start: RFC 3339 or epoch ms (clamped to 1900..2170, as the API)")
      ->required();
  cmd->add_option("--to", *to,
                  "Range end (exclusive), as --from (9999-12-31T23:59:59Z: everything)")
      ->required();
}

}  // namespace

int main(int argc, char** argv) {
  // A stop signal sent while the server starts (reading its config, recovering its stores)
  // waits until it can stop gracefully (RunServer releases them); the other subcommands
  // take them at once (below).
  joule::app::HoldStopSignals();
  CLI::App app{"Joule: real-time analytics for smart-home energy telemetry"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("joule ") + JOULE_VERSION);

  std::string config_path;
  // `--config ""` started on the embedded defaults (found by a black-box test): a path given
  // must be one.
  const CLI::Validator kConfigPath(
      [](std::string& path) { return path.empty() ? std::string("empty path") : std::string(); },
      "PATH");
  auto* serve = app.add_subcommand("serve", "Run the server (embedded defaults; see CONTRACT §5)");
  serve->add_option("--config", config_path, "TOML config file")->check(kConfigPath);
  bool accept_partial_rebuild = false;
  serve->add_flag("--accept-partial-rebuild", accept_partial_rebuild,
                  "Without checkpoints, rebuild the state from a log that retention truncated "
                  "(history's windows before its first records get partial counts; see "
                  "docs/OPERATIONS.md, \"Checkpoints lost, log truncated\")");

  auto* show = app.add_subcommand("config", "Print the effective configuration as TOML");
  show->add_option("--config", config_path, "TOML config file")->check(kConfigPath);

  joule::app::SimulatorOptions sim;
  joule::app::SimulatorTextOptions sim_text;
  auto* simulate = app.add_subcommand("simulate", "Feed a server with simulated homes");
  simulate->add_option("--url", sim.url, "Server base URL (http:// or https://)")
      ->capture_default_str();
  simulate->add_option(
      "--cacert", sim.cacert,
      "With an https:// --url or mqtts:// --mqtt: PEM CAs to trust besides the system's");
  simulate->add_option("--token", sim.token, "Ingest with this token for every device");
  simulate->add_option("--admin-token", sim.admin_token,
                       "Register the devices and ingest with their own tokens (a device that "
                       "exists already gets a new token: its old one stops working)");
  simulate->add_option("--homes", sim.homes,
                       "Number of homes, 1..1000000 (default 0: --devices / --devices-per-home)");
  simulate->add_option("--devices-per-home", sim.devices_per_home, "Meter + appliances, 1..8")
      ->capture_default_str();
  simulate
      ->add_option("--devices", sim.devices,
                   "Total devices when --homes is not given, 1..8000000 (rounded up to whole "
                   "homes of --devices-per-home)")
      ->capture_default_str();
  simulate->add_option("--rate", sim.rate_hz, "Samples per device per second, 0.1..10")
      ->capture_default_str();
  simulate->add_option("--duration", sim_text.duration,
                       "Event-time span, e.g. 15m (0 = until stopped)");
  simulate->add_option("--start", sim_text.start,
                       "First event time, not in the future: RFC 3339, epoch ms, or -3h "
                       "(default: now)");
  simulate->add_option("--speed", sim.speed, "Event time per real time, >= 0 (0 = unthrottled)")
      ->capture_default_str();
  simulate->add_option("--seed", sim_text.seed, "Random seed, 0..18446744073709551615")
      ->capture_default_str();
  simulate->add_option("--prefix", sim.device_prefix, "Device id prefix")->capture_default_str();
  simulate
      ->add_option("--batch", sim.batch,
                   "Events per request, at most; 1..1000000 (a batch the server refuses as too "
                   "large, HTTP 413 or PUBACK 0x97 \"split it\", is halved and resent)")
      ->capture_default_str();
  simulate->add_option("--connections", sim.connections, "Sender threads, 1..1024")
      ->capture_default_str();
  simulate
      ->add_option("--flush-interval", sim_text.flush_interval,
                   "Longest (real) time an event waits before it is sent")
      ->capture_default_str();
  simulate->add_option("--jitter", sim_text.jitter, "Fault: send order shuffled within this");
  simulate->add_option("--outages", sim.outages_per_hour,
                       "Fault: outage starts per home per hour of event time, >= 0");
  simulate->add_option("--duplicates", sim.duplicates,
                       "Fault: fraction of events sent twice, 0..1");
  simulate->add_option("--clock-skew", sim_text.clock_skew, "Fault: per-device offset up to ±this");
  simulate->add_option("--counter-resets", sim.counter_resets_per_hour,
                       "Fault: meter counter resets per hour, >= 0");
  simulate->add_option("--malformed", sim.malformed, "Fault: malformed events per event, 0..1");
  simulate->add_option("--wrong-tokens", sim.wrong_tokens,
                       "Fault: fraction of requests first sent with a wrong token, 0..1 (needs "
                       "--token or --admin-token)");
  simulate->add_option("--ground-truth", sim.ground_truth_path,
                       "Write the expected 1m/1h/1d records here (JSON lines)");
  simulate->add_option("--max-gap", sim_text.max_gap, "The server's stream.max_gap")
      ->capture_default_str();
  simulate->add_flag("--quiet", sim.quiet, "Only the final summary");
  simulate->add_flag("--dry-run", sim.dry_run, "Generate and encode only; send nothing");
  simulate->add_option(
      "--mqtt", sim.mqtt_url,
      "Publish over MQTT (QoS 1) to mqtt://host[:port] (mqtts:// with TLS) instead of HTTP; "
      "devices are registered over --url");
  simulate
      ->add_option("--mqtt-connections", sim.mqtt_connections,
                   "MQTT: connections open at once, at most (one per device)")
      ->capture_default_str();
  simulate
      ->add_option("--give-up-after", sim_text.give_up_after,
                   "Stop (exit 1) when no request has reached the server for this long")
      ->capture_default_str();
  simulate
      ->add_option("--allowed-lateness", sim_text.allowed_lateness,
                   "The server's stream.allowed_lateness (--jitter may not exceed it with "
                   "--ground-truth)")
      ->capture_default_str();

  // joule devices import|export: device metadata as CSV, on the configured metadata store.
  auto* devices = app.add_subcommand("devices", "Import or export device metadata as CSV");
  devices->require_subcommand(1);
  joule::app::DevicesImportOptions import_options;
  auto* import_cmd = devices->add_subcommand("import", "Create or update devices from a CSV file");
  import_cmd->add_option("--config", config_path, "TOML config file")->check(kConfigPath);
  import_cmd
      ->add_option("file", import_options.csv_path,
                   "CSV: device_id,owner_id,name,model,location,timezone,installed_at,config")
      ->required();
  import_cmd->add_option(
      "--tokens-out", import_options.tokens_out,
      "Write the tokens of new devices here as CSV device_id,token (- = stdout)");
  import_cmd->add_flag("--dry-run", import_options.dry_run, "Validate and count; write nothing");
  std::string export_owner;
  auto* export_cmd = devices->add_subcommand("export", "Write devices as CSV to stdout");
  export_cmd->add_option("--config", config_path, "TOML config file")->check(kConfigPath);
  export_cmd->add_option("--owner", export_owner, "Only this owner's devices");

  // joule replay / joule export: the raw archive (docs/formats/archive.md).
  joule::app::ReplayCliOptions replay_options;
  auto* replay_cmd = app.add_subcommand(
      "replay",
      "Recompute 1m/1h/1d records of a range from the archive (in-process on a stopped "
      "server's data dir; a running server is asked to do it)");
  replay_cmd->add_option("--config", config_path, "TOML config file")->check(kConfigPath);
  AddRangeOptions(replay_cmd, &replay_options.from, &replay_options.to);
  auto* replay_device =
      replay_cmd->add_option("--device", replay_options.device_id, "Only this device");
  replay_cmd->add_option("--owner", replay_options.owner_id, "Only this owner's devices")
      ->excludes(replay_device);
  replay_cmd->add_flag("--dry-run", replay_options.dry_run,
                       "Compute and count; write no records (a stopped data dir's log tail is "
                       "still archived first)");
  replay_cmd->add_option("--server", replay_options.server,
                         "Ask this running server (http://host:port or https://host:port) "
                         "to replay");
  replay_cmd->add_option("--cacert", replay_options.cacert,
                         "https: PEM CA certificates to trust besides the system's (the "
                         "server's own server.tls_cert_file is trusted anyway)");
  replay_cmd->add_option("--admin-token", replay_options.admin_token,
                         "Admin token for --server (default: auth.admin_token or "
                         "{data_dir}/admin_token)");
  joule::app::ExportCliOptions export_options;
  auto* archive_export_cmd =
      app.add_subcommand("export", "Write raw events of a range from the archive to stdout");
  archive_export_cmd->add_option("--config", config_path, "TOML config file")->check(kConfigPath);
  AddRangeOptions(archive_export_cmd, &export_options.from, &export_options.to);
  auto* export_device =
      archive_export_cmd->add_option("--device", export_options.device_id, "Only this device");
  archive_export_cmd->add_option("--owner", export_options.owner_id, "Only this owner's devices")
      ->excludes(export_device);
  archive_export_cmd->add_option("--format", export_options.format, "ndjson or csv")
      ->check(CLI::IsMember({"ndjson", "csv"}))
      ->capture_default_str();

  // A bad command line exits 2, like a bad config value (CLI11's own codes are 100+).
  if (std::string unknown = UnknownSubcommandMessage(app, argc, argv); !unknown.empty()) {
    fmt::print(stderr, "{}\n", unknown);
    return 2;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return FinishStdout(app.exit(e) == 0 ? 0 : 2);  // --help: 0
  }

  // Only the server's log is JSON lines; the other subcommands write plain text, their
  // messages and the log lines of what they run alike (docs/OPERATIONS.md "Logs"; `joule
  // export` printed the archive's JSON lines: found by a black-box test).
  if (!*serve) {
    joule::logging::SetPlainText("joule");
    joule::app::ReleaseStopSignals();
  }
  auto run_subcommand = [&]() -> int {
    if (*devices) {
      std::vector<std::string> warnings;
      auto config = joule::app::LoadConfig(config_path, environ, &warnings);
      if (!config.ok()) {
        fmt::print(stderr, "joule: {}\n", config.status().message());
        return 2;
      }
      for (const std::string& w : warnings) fmt::print(stderr, "joule: warning: {}\n", w);
      if (*import_cmd) return joule::app::RunDevicesImport(*config, import_options);
      std::optional<std::string> owner;
      if (!export_owner.empty()) owner = export_owner;
      return joule::app::RunDevicesExport(*config, owner);
    }

    if (*replay_cmd || *archive_export_cmd) {
      auto config = joule::app::LoadConfig(config_path, environ);
      if (!config.ok()) {
        fmt::print(stderr, "joule: {}\n", config.status().message());
        return 2;
      }
      if (*replay_cmd) return joule::app::RunReplay(*config, replay_options);
      return joule::app::RunExport(*config, export_options);
    }

    if (*serve || *show) {
      std::vector<std::string> warnings;
      auto config = joule::app::LoadConfig(config_path, environ, &warnings);
      if (!config.ok()) {
        fmt::print(stderr, "joule: {}\n", config.status().message());
        return 2;
      }
      // A misspelled JOULE_* variable would otherwise be ignored without a word. `joule
      // config` says it in plain text; the server in its log, one JSON object per line like
      // every other line it writes (docs/OPERATIONS.md "Logs"; a plain-text line there broke
      // the documented jq filters: found by a black-box test).
      if (*show) {
        for (const std::string& w : warnings) fmt::print(stderr, "joule: warning: {}\n", w);
        fmt::print("{}", joule::app::ConfigToToml(*config));
        return 0;
      }
      joule::logging::Level level;
      if (joule::logging::ParseLevel(config->log_level, &level)) joule::logging::SetLevel(level);
      for (const std::string& w : warnings) joule::logging::Warn(w, {{"source", "config"}});
      joule::app::TuneAllocatorForServer();
      config->accept_partial_rebuild = accept_partial_rebuild;
      return joule::app::RunServer(*config);
    }
    if (*simulate) {
      std::string error = joule::app::ApplySimulatorTextOptions(
          sim_text, joule::SystemClock::Default()->NowNanos(), &sim);
      // The same prefix as every other line the simulator prints.
      if (!error.empty()) {
        fmt::print(stderr, "simulate: {}\n", error);
        return 2;
      }
      if (std::string invalid = joule::app::ValidateSimulatorOptions(sim); !invalid.empty()) {
        fmt::print(stderr, "simulate: {}\n", invalid);
        return 2;
      }
      return joule::app::RunSimulator(sim);
    }
    return 0;
  };
  int code;
  try {
    code = run_subcommand();
  } catch (const std::system_error& e) {  // fmt::print's failed write
    fmt::print(stderr, "joule: {}\n", e.what());
    code = 1;
  }
  return FinishStdout(code);
}

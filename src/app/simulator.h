// Simulator (`joule simulate`): N homes × M devices with realistic profiles
// (src/app/sim/home_profiles.h) sending telemetry to a Joule server over HTTP or MQTT, for the
// demo, for load, and — with --ground-truth — for an end-to-end correctness check.
//
// Time: event time starts at `start_ns` (default now) and runs at `speed`× real time
// (0 = as fast as the server takes it); it never runs ahead of the wall clock, so a past
// day is replayed fast and then the run continues live. Every device samples every
// 1/rate_hz s (with a fixed per-device phase) in its home's local time (RFC 3339 with the
// zone's offset).
//
// Transport: HTTP batches (POST /v1/telemetry), or with `mqtt_url` MQTT 5 QoS 1 publishes
// of each device's batch to devices/{id}/telemetry (docs/formats/mqtt.md).
//
// Auth: with `admin_token`, every device is registered (POST /v1/devices, its home's owner
// and timezone; an existing device gets a rotated token) and ingests with its own token,
// one device per request. With `token`, every request uses it and batches mix devices.
// With neither (auth disabled), nothing is registered.
//
// Determinism: the events (ids, times, values, faults) depend only on the options, not on
// timing or the server; with faults off except duplicates/jitter/skew/resets/outages the
// ground truth is exact. Worker threads own disjoint homes. Its 1d windows are in each
// home's zone with `admin_token` or `token` (registered devices: with `token`, as an
// `admin_token` run of the same seed/prefix/homes registered them), in UTC without either.
//
// Ground truth: an event enters it when the server accepted one of its copies (HTTP: the
// response's per-event errors name the rejected ones; MQTT: a PUBACK only counts them, so
// rejects other than the simulator's own malformed events are reported as unmatched).
#pragma once

#include <cstdint>
#include <string>

namespace joule::app {

struct SimulatorOptions {
  std::string url = "http://127.0.0.1:8080";  // or https://… (a server with TLS on)
  // https: PEM CAs trusted besides the system's, for a server whose certificate they sign
  // (e.g. a self-signed server.tls_cert_file); the host name is checked.
  std::string cacert;
  std::string token;         // ingest with this token for every device (mixed batches)
  std::string admin_token;   // register devices and ingest with their own tokens
  int homes = 0;             // 0 = ceil(devices / devices_per_home)
  int devices = 20;          // total, when homes = 0
  int devices_per_home = 5;  // 1 (meter only) .. 8
  double rate_hz = 1.0;      // samples per device per second of event time, 0.1–10
  int64_t duration_ns = 0;   // event-time span; 0 = until stopped
  int64_t start_ns = 0;      // event time of the first sample; 0 = now
  double speed = 1.0;        // event time per real time; 0 = unthrottled
  uint64_t seed = 42;
  std::string device_prefix = "sim";
  int batch = 500;                            // events per request, at most
  int connections = 2;                        // worker threads, one HTTP connection each
  int64_t flush_interval_ns = 1'000'000'000;  // real time a device's events may wait
  // Faults.
  int64_t jitter_ns = 0;               // send order shuffled within this event-time bound
  double outages_per_hour = 0;         // starts per home per hour of event time (a Poisson
                                       // process; one starting during another extends it):
                                       // the devices buffer, then upload in order
  double duplicates = 0;               // fraction of events sent twice (same event_id)
  int64_t clock_skew_ns = 0;           // per device constant offset in [−skew, +skew]
  double counter_resets_per_hour = 0;  // per meter
  double malformed = 0;                // extra malformed events per event (expect rejections)
  double wrong_tokens = 0;             // fraction of requests first sent with a wrong token
  // Ground truth.
  std::string ground_truth_path;  // write expected records here (JSON lines)
  int64_t max_gap_ns = 300'000'000'000;
  // The server's stream.allowed_lateness: with a ground truth, --jitter may not exceed it
  // (later events are dropped by the server, and the ground truth does not model that).
  int64_t allowed_lateness_ns = 3'600'000'000'000;
  // MQTT transport (empty = HTTP): "mqtt://host[:port]". Devices are still registered over
  // HTTP (--url); each device publishes on a connection of its own, at most
  // mqtt_connections open at once (the least recently used one is closed first).
  std::string mqtt_url;
  int mqtt_connections = 1000;
  // A run gives up (exit 1) once no request has reached the server for this long: every
  // attempt since the first failure could not connect (a server that went down for good).
  int64_t give_up_after_ns = 30'000'000'000;
  bool quiet = false;
  bool dry_run = false;  // generate and encode, send nothing (the generator's own rate)
};

// The options given as text on the command line: durations ("90s", "15m"), the start
// (RFC 3339, epoch milliseconds, or "-3h" for three hours before now) and the seed.
struct SimulatorTextOptions {
  std::string duration = "0s";
  std::string start;
  std::string flush_interval = "1s";
  std::string jitter = "0s";
  std::string clock_skew = "0s";
  std::string max_gap = "300s";
  std::string allowed_lateness = "1h";
  std::string give_up_after = "30s";
  std::string seed = "42";  // 0..2^64−1 (CLI11 took "-1" as 2^64−1 and wrapped larger ones)
};
// Fills the matching fields of `options`; returns an error message, empty when all parse.
std::string ApplySimulatorTextOptions(const SimulatorTextOptions& text, int64_t now_ns,
                                      SimulatorOptions* options);

// The server's host and port from `url` ("http://host[:port][/…]", "https://host[:port][/…]"
// or "host[:port]"; port 80, or 443 for https, by default) and whether it is https (`tls` may
// be null); returns an error message naming --url, empty when it is one.
std::string ParseSimulatorUrl(const std::string& url, std::string* host, std::string* port,
                              bool* tls = nullptr);

// Checks the URL and the numeric options against their ranges (as `joule simulate --help` gives
// them); returns an error message naming the flag, empty when all are valid.
std::string ValidateSimulatorOptions(const SimulatorOptions& options);

// Runs until the duration passes or SIGINT/SIGTERM. Returns the process exit code (2 for
// options ValidateSimulatorOptions refuses).
int RunSimulator(const SimulatorOptions& options);

}  // namespace joule::app

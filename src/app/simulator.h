// Simulator: a stream of synthetic devices posting telemetry to a Joule server over
// HTTP, for the demo and for load. Each device has a smooth power profile with noise,
// a mains voltage and a cumulative energy meter that integrates its power.
#pragma once

#include <cstdint>
#include <string>

namespace joule::app {

struct SimulatorOptions {
  std::string url = "http://127.0.0.1:8080";
  std::string token;           // Bearer token; empty = none
  int devices = 20;
  double rate_hz = 1.0;        // events per device per second
  int64_t duration_ns = 0;     // 0 = until stopped
  uint64_t seed = 42;
  std::string device_prefix = "sim";
  int batch = 500;             // events per request, at most
};

// Runs until duration passes or SIGINT/SIGTERM. Returns the process exit code.
int RunSimulator(const SimulatorOptions& options);

}  // namespace joule::app

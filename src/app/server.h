// Server: wires the subsystems of `joule serve` together — log, processors, latest
// store, HTTP API — and runs them until SIGTERM/SIGINT, then shuts down gracefully:
// stop accepting, finish in-flight requests (their events are fsynced), stop the
// processors, exit 0.
#pragma once

#include "app/config.h"
#include "common/status.h"

namespace joule::app {

// Blocks until a termination signal. Returns the process exit code.
int RunServer(const Config& config);

}  // namespace joule::app

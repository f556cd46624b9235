// Server: wires the subsystems of `joule serve` together — log, processors, latest
// store, HTTP API — and runs them until SIGTERM/SIGINT, then shuts down gracefully:
// stop accepting, finish in-flight requests (their events are fsynced), stop the
// processors, exit 0.
#pragma once

#include "app/config.h"
#include "common/status.h"

namespace joule::app {

// Blocks until a termination signal. Returns the process exit code. Releases the stop
// signals (below) once a stop is graceful.
int RunServer(const Config& config);

// SIGINT, SIGTERM and SIGHUP blocked in the calling thread and the threads it starts from
// then on: one that arrives stays pending until ReleaseStopSignals (RunServer's, once its
// handler is in place, which then stops the server gracefully).
void HoldStopSignals();
void ReleaseStopSignals();

}  // namespace joule::app

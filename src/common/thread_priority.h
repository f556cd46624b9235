// Thread priority: background threads (the partition processors' aggregation, the
// archiver's compression) run at a higher nice value than the threads that acknowledge
// ingest (HTTP and MQTT I/O, the log's writer and sync threads). On a busy machine an
// acknowledgement then does not wait behind a time slice of background work; the
// background threads read the durable log, so they only lag and catch up in the gaps.
// Measured in docs/benchmarks/HISTORY.md, "Session 13: background threads at a lower priority".
#pragma once

#include <string>

namespace joule {

// Sets the calling thread's nice value (Linux keeps one per thread). Raising it is always
// allowed; lowering it below the current value needs CAP_SYS_NICE. Returns 0 or the errno.
int SetThreadNice(int nice);

// The calling thread's nice value.
int ThreadNice();

// Names the calling thread (top -H, /proc/PID/task/*/comm, perf; at most 15 bytes) and
// raises its nice value by `nice_increment` (at most to 19; 0 = leave it). A refused nice
// value is logged, not fatal.
void SetUpThread(const std::string& name, int nice_increment);

}  // namespace joule

// The process's open-file limit (RLIMIT_NOFILE) against what the connection limits need.
// Every connection holds a descriptor, and so do the log segments, RocksDB's files and the
// metadata store; when they run out, accept() fails (the accept loop retries every 50 ms and
// sheds the clients waiting in the listen backlog with a 503), reading a log segment fails
// (the processors back off and retry: src/app/partition_processor.h), and so does creating
// the next log segment (the write round is refused, ingest answers 503: src/log/README.md).
#pragma once

#include <cstdint>

namespace joule::app {

// Descriptors kept free for everything but connections (log segments, RocksDB, SQLite,
// the audit log, MQTT bridge, outgoing webhooks).
inline constexpr uint64_t kFileLimitMargin = 1024;

struct FileLimit {
  uint64_t soft = 0;  // after raising
  uint64_t hard = 0;
  uint64_t needed = 0;  // connections * listeners + kFileLimitMargin
  bool raised = false;  // the soft limit was below the hard one and was raised
};

// Raises the soft RLIMIT_NOFILE to the hard limit (Linux's default soft limit, 1024, is
// far below server.max_connections), and logs a warning when it is still below
// `max_connections` × `listeners` + kFileLimitMargin. Call once at start.
FileLimit RaiseFileLimit(uint64_t max_connections, uint64_t listeners);

}  // namespace joule::app

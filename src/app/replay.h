// Replay: recomputes the 1m/1h/1d records of a time range from the raw archive with the
// window engine and writes those that differ from the stored ones with higher versions, so
// events that arrived later than stream.allowed_lateness are folded in
// (docs/formats/archive.md, "Replay").
//
// Versioning: for each recomputed final record, the stored record of the same key is read
// from the history store. Equal content (everything but the version) → nothing is written,
// so a second replay is a no-op. Different content → the record is written with
// version = stored version + 1 (1 when nothing is stored) to history and, when the latest
// backend is Redis, to the latest store.
//
// Safety rules (counted, never written):
//  * windows ending after now − allowed_lateness − out_of_orderness may still be updated
//    by the live engine, whose versions must keep winning: left alone ("recent");
//  * a recomputed record with fewer events than the stored one means the archive lacks
//    events the live engine saw (archive disabled or expired then): left alone
//    ("incomplete").
//
// `joule replay` works on a stopped server's data dir: RocksDB admits one process, and a
// running server holds the history store's LOCK; that case is detected and reported.
#pragma once

#include <cstdint>
#include <functional>
#include <set>
#include <string>

#include "app/config.h"
#include "common/status.h"
#include "store/history_store.h"
#include "store/latest_store.h"
#include "stream/window_engine.h"

namespace joule::app {

struct ReplayRequest {
  std::string archive_dir;
  int64_t from_ns = 0;  // records whose window overlaps [from_ns, to_ns)
  int64_t to_ns = 0;
  std::set<std::string, std::less<>> devices;  // empty = every device in the archive
  stream::EngineOptions engine;
  int64_t now_ns = 0;  // for the "recent" rule
  bool dry_run = false;
};

struct ReplayStats {
  uint64_t events_read = 0;  // archive rows in the padded range, selected devices
  uint64_t duplicates = 0;   // dropped by identity (first copy wins)
  uint64_t devices = 0;
  uint64_t records_computed = 0;  // final records overlapping the range
  uint64_t records_written = 0;   // new versions
  uint64_t records_unchanged = 0;
  uint64_t records_recent = 0;
  uint64_t records_incomplete = 0;
};

// `latest` and `timezones` may be null. `progress` (may be empty) gets human-readable
// lines for long runs.
Result<ReplayStats> ReplayArchive(const ReplayRequest& request, store::HistoryStore* history,
                                  store::LatestStore* latest, stream::TimezoneProvider* timezones,
                                  const std::function<void(const std::string&)>& progress);

struct ReplayCliOptions {
  std::string from, to;  // RFC 3339
  std::string device_id;
  std::string owner_id;
  bool dry_run = false;
};
// `joule replay`: returns the process exit code.
int RunReplay(const Config& config, const ReplayCliOptions& options);

}  // namespace joule::app

// ArchiveLayout: names and paths of the raw archive (docs/formats/archive.md):
//   {root}/dt=YYYY-MM-DD/hour=HH/part-{seq:010}.ndjson.zst   published files
//   {root}/.staging/                                         files being written
//   {root}/_archiver.ckpt                                    the archiver's checkpoint
// Plain functions, no state; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace joule::store {

inline constexpr char kArchiveStagingDir[] = ".staging";
inline constexpr char kArchiveCheckpointFile[] = "_archiver.ckpt";

// The UTC hour that holds `event_time_ns` (floor).
int64_t ArchiveHourOf(int64_t event_time_ns);
// "dt=2026-11-28/hour=19" for the hour starting at hour_start_ns.
std::string ArchiveHourDir(int64_t hour_start_ns);
// Parses "dt=YYYY-MM-DD" and "hour=HH" back to the hour's start; nullopt if malformed.
std::optional<int64_t> ParseArchiveHourDir(std::string_view dt, std::string_view hour);
// "part-0000000042.ndjson.zst".
std::string ArchiveFileName(uint64_t seq);
// The sequence number of a published file name; nullopt for anything else (temp files,
// foreign files).
std::optional<uint64_t> ParseArchiveFileName(std::string_view name);

struct ArchiveFile {
  int64_t hour_start_ns = 0;
  uint64_t seq = 0;
  std::string path;
};

// The published files of the hours in [from_hour_ns, to_ns) (to exclusive: hours starting
// before it), ordered by hour, then by sequence (commit order). Missing root = empty.
Result<std::vector<ArchiveFile>> ListArchiveFiles(const std::string& root, int64_t from_ns,
                                                  int64_t to_ns);

}  // namespace joule::store

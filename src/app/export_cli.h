// `joule export`: raw events of a time range from the archive to stdout, as the archive's
// own NDJSON rows or as CSV with one line per metric sample (docs/formats/archive.md,
// "Export"). Reads only published files, so it is safe while the server runs.
#pragma once

#include <string>

#include "app/config.h"

namespace joule::app {

struct ExportCliOptions {
  std::string from, to;  // RFC 3339; events with from <= timestamp < to
  std::string device_id;
  std::string owner_id;
  std::string format = "ndjson";  // or "csv"
};

// Returns the process exit code.
int RunExport(const Config& config, const ExportCliOptions& options);

}  // namespace joule::app

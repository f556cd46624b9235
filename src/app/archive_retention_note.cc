#include "app/archive_retention_note.h"

#include <fmt/format.h>

#include <limits>

#include "app/config.h"
#include "common/clock.h"
#include "common/time_format.h"

namespace joule::app {

int64_t ArchiveRetentionHorizon(const Config& config, int64_t now_ns) {
  if (config.archive_retention_ns <= 0) return std::numeric_limits<int64_t>::min();
  // Hour H is deleted once H + 1h <= now − retention: the oldest kept hour is the one
  // holding now − retention.
  const int64_t t = now_ns - config.archive_retention_ns;
  return t - (((t % kNanosPerHour) + kNanosPerHour) % kNanosPerHour);
}

std::string ArchiveRetentionNote(const Config& config, int64_t from_ns, int64_t now_ns) {
  const int64_t horizon = ArchiveRetentionHorizon(config, now_ns);
  if (from_ns >= horizon) return "";
  return fmt::format(
      "the archive keeps events from {} on (archive.retention {}): hours before it were "
      "deleted, so their events are not in it (history keeps its records per "
      "history.retention_*)",
      FormatRfc3339Millis(horizon), FormatDuration(config.archive_retention_ns));
}

}  // namespace joule::app

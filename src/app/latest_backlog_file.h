// The latest-store catch-up backlog of a processor (store/latest_catchup.h), persisted
// next to its checkpoint as `{checkpoint}.latest` so that a restart during (or right after)
// a Redis outage still brings Redis up to date: the checkpoint's offsets skip the records
// emitted before it, and this file says which devices those left behind.
//
// Written with every checkpoint while there is a backlog, before the checkpoint file (so
// that any checkpoint on disk is covered by a backlog file at least as new), removed when
// there is none. Format (docs/formats/processor_checkpoint.md), text, one line each:
//   joule-latest-backlog 1
//   <from_ns or -> <flags: - | r (reading) and/or n (newest windows)> <device_id>
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "store/latest_catchup.h"

namespace joule::app {

std::string EncodeLatestBacklog(const std::vector<store::LatestCatchUp::Marker>& markers);
Status DecodeLatestBacklog(std::string_view data, std::vector<store::LatestCatchUp::Marker>* out);

// Atomically replaces `path` (removes it when `markers` is empty).
Status WriteLatestBacklogFile(const std::string& path,
                              const std::vector<store::LatestCatchUp::Marker>& markers);
// Empty when the file does not exist; Corruption when it does not parse.
Result<std::vector<store::LatestCatchUp::Marker>> ReadLatestBacklogFile(const std::string& path);

}  // namespace joule::app

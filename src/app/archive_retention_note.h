// What `archive.retention` has removed, for the offline tools (joule export, joule replay):
// a range reaching before the oldest hour still kept would otherwise read as "no events"
// (found by a black-box soak: an expired hour exported 0 rows, exit 0, no word why, while
// history still held its records).
#pragma once

#include <cstdint>
#include <string>

namespace joule::app {

struct Config;

// The start of the oldest hour (event time) archive.retention keeps at `now_ns`: an hour
// directory goes once its hour ended longer ago than the retention (docs/formats/archive.md).
// INT64_MIN when the archive is kept forever (retention 0).
int64_t ArchiveRetentionHorizon(const Config& config, int64_t now_ns);

// A line for stderr when [from_ns, …) starts before that horizon, naming it; "" otherwise.
std::string ArchiveRetentionNote(const Config& config, int64_t from_ns, int64_t now_ns);

}  // namespace joule::app

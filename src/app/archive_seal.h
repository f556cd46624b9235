// SealLogTail: for the commands that read a stopped server's archive (`joule replay`,
// `joule export`), everything durable in the log goes into published archive files first
// (after a kill -9 the archiver may have left the log's tail unsealed), so the archive holds
// every acknowledged event. REQUIRES: the caller holds the data dir (DataDirLock).
#pragma once

#include <cstdint>
#include <string>

#include "app/config.h"
#include "common/status.h"

namespace joule::app {

// `log_records` (may be null): set to the log's end offsets summed over its partitions
// (0: the log never held a record, or there is no log).
Status SealLogTail(const Config& config, const std::string& archive_dir,
                   uint64_t* log_records = nullptr);

// What `joule export` and `joule replay` print on stderr when the config says
// archive.enabled = false: nothing is sealed then, and no event accepted while the archive
// was off will ever be in it (found by a black-box test: export said nothing, or spoke of
// events "not yet written to archive files").
inline constexpr char kArchiveDisabledNote[] =
    "the archive is disabled (archive.enabled = false): events accepted while it is off are "
    "not in it and never will be; only the archive files written while it was on are read";

}  // namespace joule::app

// SealLogTail: for the commands that read a stopped server's archive (`joule replay`,
// `joule export`), everything durable in the log goes into published archive files first
// (after a kill -9 the archiver may have left the log's tail unsealed), so the archive holds
// every acknowledged event. REQUIRES: the caller holds the data dir (DataDirLock).
#pragma once

#include <string>

#include "app/config.h"
#include "common/status.h"

namespace joule::app {

Status SealLogTail(const Config& config, const std::string& archive_dir);

}  // namespace joule::app

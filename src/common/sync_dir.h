// fsync of a directory: makes the creations, renames and unlinks in it durable.
#pragma once

#include <string>

#include "common/status.h"

namespace joule {

// IoError "open dir PATH: …" / "fsync dir PATH: …" on failure.
Status SyncDir(const std::string& path);

}  // namespace joule

// Creating a data dir: a path that exists and is not a directory is refused, and a dir
// created here is its owner's only (0700) — it holds the households' raw telemetry, and the
// files in it are created with the process's umask (found by a black-box test: from a
// shell, 0755 and 0644 let every local user read it). A dir that existed keeps its mode.
// Used by `joule serve` and by the SQLite metadata store's open (`joule devices import`
// creates the data dir in the first step of a restore).
#pragma once

#include <string>

#include "common/status.h"

namespace joule::app {

// InvalidArgument "… exists and is not a directory", or IoError when it cannot be made.
Status CreateDataDir(const std::string& dir);

// What a command that needs an existing data dir (export, replay, devices export) says when
// `dir` is none: "cannot use data dir …: it exists and is not a directory …" for a path that
// is something else, as `joule serve` says it (export said "no data dir" of a file: found
// by a black-box test), else "no data dir at … (is storage.data_dir right?)".
std::string NoDataDirMessage(const std::string& dir);

}  // namespace joule::app

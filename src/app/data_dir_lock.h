// DataDirLock: one Joule process at a time on a data dir. `joule serve` and the commands
// that write into a stopped server's data dir (`joule replay`, `joule export`, which seal
// the log tail into the archive) hold an exclusive flock(2) on {data_dir}/joule.lock for
// as long as they run. The kernel drops it when the process ends, kill -9 included, so a
// stale lock file never blocks a restart.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace joule::app {

class DataDirLock {
 public:
  // Locks `data_dir` (which must exist). Unavailable, naming the holder's pid, when
  // another process holds it; PermissionDenied when the lock file cannot be created or
  // opened for writing because the data dir is read-only (EROFS) or not writable (EACCES,
  // EPERM); IoError for other failures. Every message names the lock file and the reason.
  static Result<DataDirLock> Acquire(const std::string& data_dir);

  DataDirLock(DataDirLock&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  DataDirLock& operator=(DataDirLock&& o) noexcept;
  DataDirLock(const DataDirLock&) = delete;
  DataDirLock& operator=(const DataDirLock&) = delete;
  ~DataDirLock();  // unlocks

 private:
  explicit DataDirLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

// What a failed Acquire means, as a log message: "data dir in use" only when another
// process holds the lock (found by a black-box test: a read-only data dir was reported as
// "in use"), "data dir not writable" for PermissionDenied, else "cannot lock data dir".
std::string_view DataDirLockFailure(const Status& status);

}  // namespace joule::app

// DataDirLock: one Joule process at a time on a data dir. `joule serve` and the commands
// that write into a stopped server's data dir (`joule replay`, `joule export`, which seal
// the log tail into the archive) hold an exclusive flock(2) on {data_dir}/joule.lock for
// as long as they run. The kernel drops it when the process ends, kill -9 included, so a
// stale lock file never blocks a restart.
#pragma once

#include <string>

#include "common/status.h"

namespace joule::app {

class DataDirLock {
 public:
  // Locks `data_dir` (which must exist). Unavailable, naming the holder's pid, when
  // another process holds it; IoError when the lock file cannot be opened.
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

}  // namespace joule::app

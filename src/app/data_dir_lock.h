// DataDirLock: one Joule process at a time on a data dir. `joule serve` and the commands
// that write into a stopped server's data dir (`joule replay`, `joule export`, which seal
// the log tail into the archive) hold an exclusive flock(2) on {data_dir}/joule.lock for
// as long as they run. The kernel drops it when the process ends, kill -9 included, so a
// stale lock file never blocks a restart.
//
// The lock file holds the holder's pid and command ("1234\nexport\n"), so that a command
// finding the lock taken knows whether a server runs there or another offline command (an
// export, a replay) that will end: those wait for it (AcquireWaiting) instead of taking it
// for a running server (found by a black-box test: a second export left out the log tail
// "a running server had not written yet", exit 0, and replay asked a server that was not
// there).
#pragma once

#include <chrono>
#include <functional>
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
  // `command` is what the lock file names as the holder: "serve", "export", "replay".
  static Result<DataDirLock> Acquire(const std::string& data_dir,
                                     std::string_view command = "serve");
  // Acquire for an offline command: while another offline command (not "serve") holds the
  // lock, waits for it, up to `timeout`, calling `on_wait(message)` once when it starts to
  // wait ("waiting for joule process pid N (export) that holds the data dir …"). A server
  // (or a holder whose command the file does not name: a Joule from before the command was
  // written) is Unavailable at once, as Acquire; still held after `timeout` is
  // ResourceExhausted (the wait is over its limit), naming the holder.
  static Result<DataDirLock> AcquireWaiting(const std::string& data_dir, std::string_view command,
                                            std::chrono::milliseconds timeout,
                                            const std::function<void(const std::string&)>& on_wait);

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

// How long an offline command waits for another one that holds the data dir.
inline constexpr std::chrono::minutes kDataDirLockWait{10};

// The holder a lock file names ("" for what it does not say), read without locking.
struct DataDirLockHolder {
  std::string pid;
  std::string command;
};
DataDirLockHolder ReadDataDirLockHolder(const std::string& data_dir);

}  // namespace joule::app

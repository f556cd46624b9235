#include "app/data_dir_lock.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace joule::app {

Result<DataDirLock> DataDirLock::Acquire(const std::string& data_dir) {
  const std::string path = (std::filesystem::path(data_dir) / "joule.lock").string();
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    const int err = errno;
    if (err == EROFS || err == EACCES || err == EPERM) {
      return Status::PermissionDenied(
          fmt::format("cannot open {}: {} (the data dir is read-only or not writable by this user)",
                      path, std::strerror(err)));
    }
    return Status::IoError(fmt::format("cannot open {}: {}", path, std::strerror(err)));
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char buf[32] = {};
    const ssize_t n = ::pread(fd, buf, sizeof(buf) - 1, 0);
    ::close(fd);
    if (err != EWOULDBLOCK) {
      return Status::IoError(fmt::format("cannot lock {}: {}", path, std::strerror(err)));
    }
    std::string pid = n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
    while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
    return Status::Unavailable(fmt::format(
        "the data dir {} is in use by another joule process{} (a running `joule serve`?): "
        "one process per data dir",
        data_dir, pid.empty() ? "" : " (pid " + pid + ")"));
  }
  // The holder's pid, for the message above (informational: the lock is the flock).
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    // Not fatal: the flock is what excludes other processes.
  }
  return DataDirLock(fd);
}

std::string_view DataDirLockFailure(const Status& status) {
  switch (status.code()) {
    case StatusCode::kUnavailable:
      return "data dir in use";
    case StatusCode::kPermissionDenied:
      return "data dir not writable";
    default:
      return "cannot lock data dir";
  }
}

DataDirLock& DataDirLock::operator=(DataDirLock&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

DataDirLock::~DataDirLock() {
  if (fd_ >= 0) ::close(fd_);  // closing the last descriptor drops the flock
}

}  // namespace joule::app

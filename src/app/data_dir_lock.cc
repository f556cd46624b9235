#include "app/data_dir_lock.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <thread>

namespace joule::app {

namespace {

DataDirLockHolder ParseHolder(std::string_view text) {
  DataDirLockHolder h;
  const size_t nl = text.find('\n');
  h.pid = std::string(text.substr(0, nl));
  if (nl != std::string_view::npos) {
    std::string_view rest = text.substr(nl + 1);
    h.command = std::string(rest.substr(0, rest.find('\n')));
  }
  auto trim = [](std::string* s) {
    while (!s->empty() && (s->back() == ' ' || s->back() == '\r')) s->pop_back();
  };
  trim(&h.pid);
  trim(&h.command);
  return h;
}

std::string HolderText(const DataDirLockHolder& h) {
  if (h.pid.empty()) return "";
  if (h.command.empty()) return " (pid " + h.pid + ")";
  return fmt::format(" (pid {}, `joule {}`)", h.pid, h.command);
}

}  // namespace

DataDirLockHolder ReadDataDirLockHolder(const std::string& data_dir) {
  const std::string path = (std::filesystem::path(data_dir) / "joule.lock").string();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return {};
  char buf[128] = {};
  const ssize_t n = ::pread(fd, buf, sizeof(buf) - 1, 0);
  ::close(fd);
  return ParseHolder(n > 0 ? std::string_view(buf, static_cast<size_t>(n)) : "");
}

Result<DataDirLock> DataDirLock::Acquire(const std::string& data_dir, std::string_view command) {
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
    char buf[128] = {};
    const ssize_t n = ::pread(fd, buf, sizeof(buf) - 1, 0);
    ::close(fd);
    if (err != EWOULDBLOCK) {
      return Status::IoError(fmt::format("cannot lock {}: {}", path, std::strerror(err)));
    }
    const DataDirLockHolder holder =
        ParseHolder(n > 0 ? std::string_view(buf, static_cast<size_t>(n)) : "");
    const bool server = holder.command.empty() || holder.command == "serve";
    return Status::Unavailable(fmt::format(
        "the data dir {} is in use by another joule process{}{}: one process per data dir",
        data_dir, HolderText(holder), server ? " (a running `joule serve`?)" : ""));
  }
  // The holder's pid and command, for the messages above (informational: the lock is the
  // flock).
  const std::string pid = fmt::format("{}\n{}\n", ::getpid(), command);
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    // Not fatal: the flock is what excludes other processes.
  }
  return DataDirLock(fd);
}

Result<DataDirLock> DataDirLock::AcquireWaiting(
    const std::string& data_dir, std::string_view command, std::chrono::milliseconds timeout,
    const std::function<void(const std::string&)>& on_wait) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  // A holder that has its flock but has not yet written its pid and command: asked again
  // for up to a second before it is taken for a server from before the command was written.
  const auto unnamed_until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  bool waiting = false;
  while (true) {
    Result<DataDirLock> locked = Acquire(data_dir, command);
    if (locked.ok() || locked.status().code() != StatusCode::kUnavailable) return locked;
    const DataDirLockHolder holder = ReadDataDirLockHolder(data_dir);
    const auto now = std::chrono::steady_clock::now();
    if (holder.command.empty() && now < unnamed_until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    if (holder.command.empty() || holder.command == "serve") return locked;
    if (now >= deadline) {
      return Status::ResourceExhausted(fmt::format(
          "the data dir {} is still held by joule process{} after waiting {} s: run this "
          "again when it has ended",
          data_dir, HolderText(holder),
          std::chrono::duration_cast<std::chrono::seconds>(timeout).count()));
    }
    if (!waiting) {
      waiting = true;
      if (on_wait) {
        on_wait(fmt::format(
            "waiting for joule process pid {} ({}) that holds the data dir {} (up to {} s)",
            holder.pid, holder.command, data_dir,
            std::chrono::duration_cast<std::chrono::seconds>(timeout).count()));
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
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

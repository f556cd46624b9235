#include "log/tests/fault_file_layer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string>

namespace joule::log::testing {
namespace {

std::string DirOf(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

}  // namespace

int FaultFileLayer::OpenForAppend(const std::string& path, bool create, int* fd) {
  std::lock_guard<std::mutex> l(mu_);
  if (dead_) return EIO;
  if (create && disk_full_) {
    ++failed_writes_;
    return ENOSPC;
  }
  int err = PosixFileLayer()->OpenForAppend(path, create, fd);
  if (err != 0) return err;
  File f;
  f.path = path;
  off_t end = ::lseek(*fd, 0, SEEK_END);
  f.size = end < 0 ? 0 : static_cast<uint64_t>(end);
  // An existing file is durable as found (it was recovered); a new one is empty.
  f.synced = f.size;
  files_[*fd] = f;
  synced_[path] = f.synced;
  if (create) unsynced_creations_.insert(path);
  return 0;
}

int FaultFileLayer::WriteAll(int fd, const char* data, size_t n) {
  std::lock_guard<std::mutex> l(mu_);
  if (dead_) return EIO;
  File& f = files_.at(fd);
  if (disk_full_) {
    ++failed_writes_;
    size_t part = std::min(partial_, n);
    if (part > 0 && PosixFileLayer()->WriteAll(fd, data, part) == 0) f.size += part;
    if (no_space_hook_ != nullptr) no_space_hook_(no_space_arg_);
    return ENOSPC;
  }
  int err = PosixFileLayer()->WriteAll(fd, data, n);
  if (err == 0) f.size += n;
  return err;
}

int FaultFileLayer::DataSync(int fd) {
  std::lock_guard<std::mutex> l(mu_);
  if (dead_) return EIO;
  ++syncs_;
  if (fail_sync_in_ > 0 && --fail_sync_in_ == 0) {
    if (sync_failure_hook_ != nullptr) sync_failure_hook_(sync_failure_arg_);
    return EIO;
  }
  int err = PosixFileLayer()->DataSync(fd);
  if (err != 0) return err;
  File& f = files_.at(fd);
  f.synced = f.size;
  synced_[f.path] = f.synced;
  return 0;
}

void FaultFileLayer::StartWriteback(int fd) {
  std::lock_guard<std::mutex> l(mu_);
  if (!dead_) PosixFileLayer()->StartWriteback(fd);
}

int FaultFileLayer::Truncate(int fd, uint64_t size) {
  std::lock_guard<std::mutex> l(mu_);
  if (dead_) return EIO;
  int err = PosixFileLayer()->Truncate(fd, size);
  if (err != 0) return err;
  File& f = files_.at(fd);
  f.size = size;
  // Shrinking below the synced size is durable only after a sync; the log only ever cuts
  // unsynced bytes, so `synced` stays an upper bound of what a power loss keeps.
  f.synced = std::min(f.synced, size);
  synced_[f.path] = f.synced;
  return 0;
}

int FaultFileLayer::SyncDir(const std::string& path) {
  std::lock_guard<std::mutex> l(mu_);
  if (dead_) return EIO;
  int err = PosixFileLayer()->SyncDir(path);
  if (err != 0) return err;
  for (auto it = unsynced_creations_.begin(); it != unsynced_creations_.end();) {
    it = DirOf(*it) == path ? unsynced_creations_.erase(it) : std::next(it);
  }
  return 0;
}

void FaultFileLayer::Close(int fd) {
  std::lock_guard<std::mutex> l(mu_);
  files_.erase(fd);
  PosixFileLayer()->Close(fd);
}

void FaultFileLayer::FailSyncAfter(uint64_t n) {
  std::lock_guard<std::mutex> l(mu_);
  fail_sync_in_ = n;
}

void FaultFileLayer::SetDiskFull(bool full, size_t partial) {
  std::lock_guard<std::mutex> l(mu_);
  disk_full_ = full;
  partial_ = partial;
}

void FaultFileLayer::OnSyncFailure(void (*hook)(void*), void* arg) {
  std::lock_guard<std::mutex> l(mu_);
  sync_failure_hook_ = hook;
  sync_failure_arg_ = arg;
}

void FaultFileLayer::OnNoSpace(void (*hook)(void*), void* arg) {
  std::lock_guard<std::mutex> l(mu_);
  no_space_hook_ = hook;
  no_space_arg_ = arg;
}

void FaultFileLayer::PowerLoss(size_t torn_garbage) {
  std::lock_guard<std::mutex> l(mu_);
  CutToSynced(torn_garbage);
}

void FaultFileLayer::PowerLossAndExit(size_t torn_garbage) {
  mu_.lock();  // never released: the process ends here
  CutToSynced(torn_garbage);
  ::_exit(0);
}

void FaultFileLayer::CutToSynced(size_t torn_garbage) {
  dead_ = true;
  for (const auto& [path, synced] : synced_) {
    if (unsynced_creations_.count(path) > 0) {
      ::unlink(path.c_str());
      continue;
    }
    int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) continue;
    off_t size = ::lseek(fd, 0, SEEK_END);
    uint64_t unsynced =
        size > 0 && static_cast<uint64_t>(size) > synced ? static_cast<uint64_t>(size) - synced : 0;
    (void)::ftruncate(fd, static_cast<off_t>(synced));
    size_t garbage = std::min<uint64_t>(torn_garbage, unsynced);
    if (garbage > 0) {
      std::string junk(garbage, '\0');
      for (size_t i = 0; i < garbage; ++i) junk[i] = static_cast<char>((i * 131 + 7) & 0xff);
      (void)::pwrite(fd, junk.data(), junk.size(), static_cast<off_t>(synced));
    }
    ::close(fd);
  }
}

uint64_t FaultFileLayer::syncs() const {
  std::lock_guard<std::mutex> l(mu_);
  return syncs_;
}

uint64_t FaultFileLayer::failed_writes() const {
  std::lock_guard<std::mutex> l(mu_);
  return failed_writes_;
}

}  // namespace joule::log::testing

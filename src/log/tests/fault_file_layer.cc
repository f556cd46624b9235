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

int FaultFileLayer::OpenForWrite(const std::string& path, bool create, int* fd) {
  std::lock_guard<std::mutex> l(mu_);
  if (dead_) return EIO;
  if (create && disk_full_) {
    ++failed_writes_;
    return ENOSPC;
  }
  if (create && create_error_ != 0) return create_error_;
  int err = PosixFileLayer()->OpenForWrite(path, create, fd);
  if (err != 0) return err;
  const bool already_open =
      std::any_of(files_.begin(), files_.end(), [&](const auto& f) { return f.second == path; });
  files_[*fd] = path;
  if (already_open) return 0;  // a second description (the log's pre-write): same file
  off_t end = ::lseek(*fd, 0, SEEK_END);
  Durable d;
  d.size = end < 0 ? 0 : static_cast<uint64_t>(end);
  // An existing file is durable as found (it was recovered); a new one is empty.
  d.synced = d.size;
  durable_[path] = d;
  if (create) unsynced_creations_.insert(path);
  return 0;
}

void FaultFileLayer::Wrote(const std::string& path, uint64_t offset, uint64_t n) {
  if (n == 0) return;
  Durable& d = durable_[path];
  d.size = std::max(d.size, offset + n);
  d.unsynced.emplace_back(offset, offset + n);
}

int FaultFileLayer::Write(int fd, uint64_t offset, const char* data, size_t n) {
  if (dead_) return EIO;
  const std::string& path = files_.at(fd);
  if (disk_full_) {
    ++failed_writes_;
    size_t part = std::min(partial_, n);
    if (part > 0 && PosixFileLayer()->WriteAt(fd, offset, data, part) == 0) {
      Wrote(path, offset, part);
    }
    if (no_space_hook_ != nullptr) no_space_hook_(no_space_arg_);
    return ENOSPC;
  }
  int err = PosixFileLayer()->WriteAt(fd, offset, data, n);
  if (err == 0) Wrote(path, offset, n);
  return err;
}

int FaultFileLayer::WriteAt(int fd, uint64_t offset, const char* data, size_t n) {
  std::lock_guard<std::mutex> l(mu_);
  return Write(fd, offset, data, n);
}

int FaultFileLayer::WriteZeros(int fd, uint64_t offset, uint64_t n) {
  std::lock_guard<std::mutex> l(mu_);
  const std::string zeros(64 * 1024, '\0');
  while (n > 0) {
    const size_t piece = static_cast<size_t>(std::min<uint64_t>(n, zeros.size()));
    if (int err = Write(fd, offset, zeros.data(), piece); err != 0) return err;
    offset += piece;
    n -= piece;
  }
  return 0;
}

int FaultFileLayer::DataSync(int fd) {
  std::lock_guard<std::mutex> l(mu_);
  if (dead_) return EIO;
  ++syncs_;
  if (fail_sync_in_ > 0 && --fail_sync_in_ == 0) {
    if (sync_failure_hook_ != nullptr) sync_failure_hook_(sync_failure_arg_);
    return EIO;
  }
  return SyncLocked(fd);
}

int FaultFileLayer::SyncZeros(int fd) {
  std::lock_guard<std::mutex> l(mu_);
  if (dead_) return EIO;
  return SyncLocked(fd);
}

int FaultFileLayer::SyncLocked(int fd) {
  int err = PosixFileLayer()->DataSync(fd);
  if (err != 0) return err;
  Durable& d = durable_[files_.at(fd)];  // the file's, whichever description synced it
  d.synced = d.size;
  d.unsynced.clear();
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
  Durable& d = durable_[files_.at(fd)];
  d.size = size;
  // Shrinking below the synced size is durable only after a sync; the log only ever cuts
  // unsynced bytes or a zero tail, so `synced` stays an upper bound of what a power loss
  // keeps.
  d.synced = std::min(d.synced, size);
  for (auto& [b, e] : d.unsynced) e = std::min(e, size);
  return 0;
}

int FaultFileLayer::SyncDir(const std::string& path) {
  std::lock_guard<std::mutex> l(mu_);
  if (dead_) return EIO;
  if (sync_dir_error_ != 0) return sync_dir_error_;
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

void FaultFileLayer::SetCreateError(int err) {
  std::lock_guard<std::mutex> l(mu_);
  create_error_ = err;
}

void FaultFileLayer::SetSyncDirError(int err) {
  std::lock_guard<std::mutex> l(mu_);
  sync_dir_error_ = err;
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
  for (const auto& [path, d] : durable_) {
    if (unsynced_creations_.count(path) > 0) {
      ::unlink(path.c_str());
      continue;
    }
    int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) continue;
    (void)::ftruncate(fd, static_cast<off_t>(d.synced));
    // Writes since the last sync never arrived: inside the synced size, the pre-written
    // zeros they overwrote are back.
    uint64_t unsynced = 0;
    uint64_t first = ~0ull;
    for (const auto& [b, e] : d.unsynced) {
      if (e <= b) continue;
      unsynced += e - b;
      first = std::min(first, b);
      if (b >= d.synced) continue;
      const std::string zeros(std::min(e, d.synced) - b, '\0');
      (void)::pwrite(fd, zeros.data(), zeros.size(), static_cast<off_t>(b));
    }
    size_t garbage = std::min<uint64_t>(torn_garbage, unsynced);
    if (garbage > 0) {
      std::string junk(garbage, '\0');
      for (size_t i = 0; i < garbage; ++i) junk[i] = static_cast<char>((i * 131 + 7) & 0xff);
      // A torn page where the first lost write went, inside the file or just past its end.
      (void)::pwrite(fd, junk.data(), junk.size(), static_cast<off_t>(std::min(first, d.synced)));
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

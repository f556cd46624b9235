// FaultFileLayer: a FileLayer for tests that wraps the POSIX one and injects the faults of
// the crash tests (tests/crash/log_faults_test.cc):
//  * fail the Nth fdatasync (or every one) with EIO;
//  * fail writes (and segment creation) with ENOSPC while "the disk is full";
//  * fail segment creation, or the directory fsync after it, with another errno (EMFILE:
//    out of file descriptors);
//  * a power loss: PowerLoss() cuts every file written through it back to the size that
//    was fdatasynced, puts zeros back where bytes were written inside it since (they
//    overwrote the pre-written zero tail, docs/formats/log.md), deletes files whose creation
//    no directory fsync made durable, and optionally leaves garbage where the first
//    unsynced write went (a torn page), then freezes the layer so that nothing more
//    reaches the disk.
// Thread-safe (one mutex; the log calls it from its writer thread).
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "log/file_layer.h"

namespace joule::log::testing {

class FaultFileLayer final : public FileLayer {
 public:
  int OpenForWrite(const std::string& path, bool create, int* fd) override;
  int WriteAt(int fd, uint64_t offset, const char* data, size_t n) override;
  int WriteZeros(int fd, uint64_t offset, uint64_t n) override;
  int DataSync(int fd) override;
  // A real fdatasync, never failed by FailSyncAfter (which counts the rounds' syncs).
  int SyncZeros(int fd) override;
  void StartWriteback(int fd) override;
  int Truncate(int fd, uint64_t size) override;
  int SyncDir(const std::string& path) override;
  void Close(int fd) override;

  // The `n`th DataSync from now (1 = the next) fails with EIO; 0 = none.
  void FailSyncAfter(uint64_t n);
  // While set, writes and creations fail with ENOSPC (after writing `partial` bytes of the
  // write, as a filling disk does).
  void SetDiskFull(bool full, size_t partial = 0);
  // While non-zero, creating a file fails with this errno (e.g. EMFILE: out of file
  // descriptors); 0 = creations succeed again.
  void SetCreateError(int err);
  // While non-zero, a directory fsync fails with this errno before it opens the directory
  // (EMFILE: no descriptor to open it with); 0 = they succeed again.
  void SetSyncDirError(int err);
  // See the header comment. `torn_garbage` bytes of garbage go where the first unsynced
  // write went (at most as many as were written unsynced). Afterwards every call fails
  // with EIO.
  void PowerLoss(size_t torn_garbage = 0);
  // PowerLoss, then _exit(0) with the layer's lock held, so no other thread's I/O gets
  // through in between (for a forked child that plays the crashed machine).
  [[noreturn]] void PowerLossAndExit(size_t torn_garbage = 0);
  // Called (under the layer's lock) just before an injected fsync failure is returned.
  void OnSyncFailure(void (*hook)(void*), void* arg);
  // Called (under the layer's lock) after the partial bytes of a failing write are written,
  // just before ENOSPC is returned.
  void OnNoSpace(void (*hook)(void*), void* arg);

  uint64_t syncs() const;
  uint64_t failed_writes() const;

 private:
  // What a power loss keeps of a file (by path, closed files too): the size at its last
  // DataSync, minus the byte ranges written since (they read as zeros, or garbage).
  struct Durable {
    uint64_t size = 0;    // bytes in the file (as written)
    uint64_t synced = 0;  // the size at the last DataSync (or truncation below it)
    std::vector<std::pair<uint64_t, uint64_t>> unsynced;  // [begin, end) written since
  };
  int Write(int fd, uint64_t offset, const char* data, size_t n);    // REQUIRES: mu_ held
  void Wrote(const std::string& path, uint64_t offset, uint64_t n);  // REQUIRES: mu_ held
  mutable std::mutex mu_;
  // A real fdatasync, then the file's durable state follows it. REQUIRES: mu_ held.
  int SyncLocked(int fd);
  std::map<int, std::string> files_;  // open fds → path
  std::map<std::string, Durable> durable_;
  std::set<std::string> unsynced_creations_;  // created, no directory fsync since
  void CutToSynced(size_t torn_garbage);      // REQUIRES: mu_ held
  uint64_t fail_sync_in_ = 0;
  void (*sync_failure_hook_)(void*) = nullptr;
  void* sync_failure_arg_ = nullptr;
  void (*no_space_hook_)(void*) = nullptr;
  void* no_space_arg_ = nullptr;
  bool disk_full_ = false;
  size_t partial_ = 0;
  int create_error_ = 0;
  int sync_dir_error_ = 0;
  bool dead_ = false;
  uint64_t syncs_ = 0;
  uint64_t failed_writes_ = 0;
};

}  // namespace joule::log::testing

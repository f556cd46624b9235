// FileLayer: the seam through which the log's writer path does its file I/O — opening
// segments for writing, writing, pre-writing zeros, syncing, truncating, syncing directories.
// Production uses PosixFileLayer(); tests substitute a fault-injecting layer (src/log/tests/
// fault_file_layer.h) that fails an fsync with EIO, a write with ENOSPC, or drops what was
// never synced (a power loss). The writer calls it once per partition per group-commit
// round (one write of the round's buffer, one fdatasync), never per record.
// Recovery and readers read through plain POSIX (file_io.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace joule::log {

class FileLayer {
 public:
  virtual ~FileLayer() = default;
  // Every int-returning call returns 0 on success or an errno value.
  // Opens `path` for positional writes (created exclusively when `create`); sets *fd.
  virtual int OpenForWrite(const std::string& path, bool create, int* fd) = 0;
  // Writes all n bytes at `offset` (retrying short writes and EINTR). On an error some
  // prefix of the bytes may have been written.
  virtual int WriteAt(int fd, uint64_t offset, const char* data, size_t n) = 0;
  // Writes n zero bytes at `offset` (the pre-written tail, docs/formats/log.md), like
  // WriteAt. Called from the log's pre-write thread while the writer thread writes and
  // syncs bytes below `offset` of the same file.
  virtual int WriteZeros(int fd, uint64_t offset, uint64_t n) = 0;
  virtual int DataSync(int fd) = 0;
  // fdatasync of a pre-write's zeros (through the pre-write's own file description; docs/
  // formats/log.md "Pre-written tail"). Apart from DataSync, the rounds' syncs, so that a
  // test layer injects sync failures into the rounds alone: a failure here is fatal too,
  // but no acknowledgement waits on this sync, so the failure a test injects and the acks
  // it then must not see belong to the rounds.
  virtual int SyncZeros(int fd) = 0;
  // Starts writeback of the file's dirty pages without waiting. A hint only.
  virtual void StartWriteback(int fd) = 0;
  // ftruncate to `size` bytes (no sync).
  virtual int Truncate(int fd, uint64_t size) = 0;
  // fsync of a directory.
  virtual int SyncDir(const std::string& path) = 0;
  virtual void Close(int fd) = 0;
};

// The real thing: open(2), pwrite(2), fdatasync(2), sync_file_range(2), ftruncate(2).
// Stateless; shared by every log.
FileLayer* PosixFileLayer();

}  // namespace joule::log

// Thin POSIX file helpers for the log's recovery and read paths: errno → Status, directory
// syncs, truncation, positional reads. The writer path goes through FileLayer
// (file_layer.h) instead, so that tests can inject faults into it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/sync_dir.h"  // SyncDir, used with these helpers

namespace joule::log {

// An IoError status "what path: strerror(errno)" built from the current errno.
Status ErrnoStatus(const std::string& what, const std::string& path);

// Logs an error and aborts. Never returns.
[[noreturn]] void FatalIo(const std::string& what, const std::string& path, int err);

// mkdir -p. Sets *created (optional) when the last component did not exist before.
Status CreateDirs(const std::string& path, bool* created = nullptr);
// Names of the entries of a directory (no "." / "..").
Result<std::vector<std::string>> ListDir(const std::string& path);
Result<uint64_t> FileSize(const std::string& path);
// Truncates a file to `size` bytes and fsyncs it.
Status TruncateAndSync(const std::string& path, uint64_t size);

// One past the last non-zero byte of the file in [from, to), or `from` when they are all
// zero (a pre-written tail, docs/formats/log.md).
Result<uint64_t> NonZeroEnd(const std::string& path, uint64_t from, uint64_t to);

Result<int> OpenForRead(const std::string& path);
void CloseFd(int fd);

// pread that retries EINTR and short reads; returns the bytes read (< n only at EOF).
Result<size_t> ReadAt(int fd, uint64_t offset, char* buf, size_t n, const std::string& path);

}  // namespace joule::log

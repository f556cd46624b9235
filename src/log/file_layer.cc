#include "log/file_layer.h"

#include <fcntl.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace joule::log {
namespace {

class Posix final : public FileLayer {
 public:
  int OpenForWrite(const std::string& path, bool create, int* fd) override {
    int flags = O_WRONLY | O_CLOEXEC;
    if (create) flags |= O_CREAT | O_EXCL;
    int r = ::open(path.c_str(), flags, 0644);
    if (r < 0) return errno;
    *fd = r;
    return 0;
  }

  int WriteAt(int fd, uint64_t offset, const char* data, size_t n) override {
    while (n > 0) {
      ssize_t w = ::pwrite(fd, data, n, static_cast<off_t>(offset));
      if (w < 0) {
        if (errno == EINTR) continue;
        return errno;
      }
      data += w;
      offset += static_cast<uint64_t>(w);
      n -= static_cast<size_t>(w);
    }
    return 0;
  }

  int WriteZeros(int fd, uint64_t offset, uint64_t n) override {
    // In pieces of 256 KiB: each pwrite holds the inode's lock while it copies, and the
    // writer thread's writes to the same file wait for it.
    static const char kZeros[256 * 1024] = {};
    while (n > 0) {
      const size_t piece = static_cast<size_t>(std::min<uint64_t>(n, sizeof(kZeros)));
      if (int err = WriteAt(fd, offset, kZeros, piece); err != 0) return err;
      offset += piece;
      n -= piece;
    }
    return 0;
  }

  int DataSync(int fd) override { return ::fdatasync(fd) == 0 ? 0 : errno; }
  int SyncZeros(int fd) override { return DataSync(fd); }

  void StartWriteback(int fd) override { (void)::sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE); }

  int Truncate(int fd, uint64_t size) override {
    return ::ftruncate(fd, static_cast<off_t>(size)) == 0 ? 0 : errno;
  }

  int SyncDir(const std::string& path) override {
    int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return errno;
    int err = ::fsync(fd) == 0 ? 0 : errno;
    ::close(fd);
    return err;
  }

  void Close(int fd) override {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

FileLayer* PosixFileLayer() {
  static Posix posix;
  return &posix;
}

}  // namespace joule::log

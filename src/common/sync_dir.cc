#include "common/sync_dir.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace joule {

Status SyncDir(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::IoError("open dir " + path + ": " + std::strerror(errno));
  Status st = Status::Ok();
  if (::fsync(fd) != 0) st = Status::IoError("fsync dir " + path + ": " + std::strerror(errno));
  ::close(fd);
  return st;
}

}  // namespace joule

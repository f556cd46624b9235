#include "log/file_io.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/logging.h"

namespace joule::log {

Status ErrnoStatus(const std::string& what, const std::string& path) {
  int err = errno;
  return Status::IoError(what + " " + path + ": " + std::strerror(err));
}

void FatalIo(const std::string& what, const std::string& path, int err) {
  logging::Error("log: fatal I/O error, aborting (fail-stop)",
                 {{"op", what}, {"path", path}, {"error", std::strerror(err)}});
  std::abort();
}

Status CreateDirs(const std::string& path, bool* created) {
  if (created != nullptr) *created = false;
  if (path.empty()) return Status::InvalidArgument("empty directory path");
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) return Status::IoError(path + " exists and is not a directory");
    return Status::Ok();
  }
  size_t slash = path.find_last_of('/');
  if (slash != std::string::npos && slash > 0) {
    JOULE_RETURN_IF_ERROR(CreateDirs(path.substr(0, slash)));
  }
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) return ErrnoStatus("mkdir", path);
  if (created != nullptr) *created = true;
  return Status::Ok();
}

Result<std::vector<std::string>> ListDir(const std::string& path) {
  DIR* d = ::opendir(path.c_str());
  if (d == nullptr) return ErrnoStatus("opendir", path);
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(std::move(name));
  }
  ::closedir(d);
  return names;
}

Result<uint64_t> FileSize(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return ErrnoStatus("stat", path);
  return static_cast<uint64_t>(st.st_size);
}

Status TruncateAndSync(const std::string& path, uint64_t size) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("open", path);
  Status st;
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    st = ErrnoStatus("ftruncate", path);
  } else if (::fsync(fd) != 0) {
    st = ErrnoStatus("fsync", path);
  }
  ::close(fd);
  return st;
}

Result<int> OpenForRead(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return Status::NotFound("segment " + path + " no longer exists");
    return ErrnoStatus("open", path);
  }
  return fd;
}

void CloseFd(int fd) {
  if (fd >= 0) ::close(fd);
}

Result<size_t> ReadAt(int fd, uint64_t offset, char* buf, size_t n, const std::string& path) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::pread(fd, buf + done, n - done, static_cast<off_t>(offset + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("pread", path);
    }
    if (r == 0) break;
    done += static_cast<size_t>(r);
  }
  return done;
}

Result<uint64_t> NonZeroEnd(const std::string& path, uint64_t from, uint64_t to) {
  JOULE_ASSIGN_OR_RETURN(int fd, OpenForRead(path));
  std::string buf(1 << 20, '\0');
  uint64_t end = from;
  Status st;
  for (uint64_t pos = from; pos < to;) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), to - pos));
    auto r = ReadAt(fd, pos, buf.data(), want, path);
    if (!r.ok()) {
      st = r.status();
      break;
    }
    for (size_t i = *r; i > 0; --i) {
      if (buf[i - 1] != 0) {
        end = pos + i;
        break;
      }
    }
    if (*r < want) break;  // the file ended early
    pos += *r;
  }
  CloseFd(fd);
  if (!st.ok()) return st;
  return end;
}

}  // namespace joule::log

#include "app/processor_checkpoint.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "common/byte_cursor.h"
#include "common/crash_point.h"
#include "common/crc32c.h"
#include "common/logging.h"

namespace joule::app {
namespace {

constexpr char kMagic[8] = {'J', 'O', 'U', 'L', 'E', 'C', 'K', 'P'};
// Version 2 adds the replay journal sequence number after the readings; a checkpoint that
// has applied no replay journal is still written as version 1 (readable by older builds).
constexpr uint32_t kVersion = 1;
constexpr uint32_t kVersionReplay = 2;

void PutBytes(std::string* out, std::string_view s) {
  PutU64(out, s.size());
  out->append(s);
}

// A u64 length and the bytes.
bool GetBytes(ByteCursor& c, std::string* s) {
  uint64_t n;
  std::string_view v;
  if (!c.U64(&n) || !c.Take(n, &v)) return false;
  s->assign(v);
  return true;
}

// Opens `path` read-only and tells its size: the descriptor, or the error as ReadWholeFile
// and MapCheckpointFile report it (NotFound for a missing file, else IoError).
Result<int> OpenWithSize(const std::string& path, uint64_t* size) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    const std::string text = fmt::format("cannot read {}: {}", path, std::strerror(err));
    return err == ENOENT ? Status::NotFound(text) : Status::IoError(text);
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return Status::IoError(fmt::format("cannot read {}: {}", path, std::strerror(err)));
  }
  *size = static_cast<uint64_t>(st.st_size);
  return fd;
}

Status SyncPath(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) return Status::IoError(fmt::format("open {}: {}", path, std::strerror(errno)));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) {
    // A failed fsync is fatal: the kernel may have dropped the dirty pages.
    logging::Error("checkpoint: fatal I/O error, aborting (fail-stop)",
                   {{"op", "fsync"}, {"path", path}, {"error", std::strerror(err)}});
    std::abort();
  }
  return Status::Ok();
}

}  // namespace

std::string EncodeCheckpoint(const ProcessorCheckpoint& c) {
  std::vector<std::string> events(c.readings.size());
  std::vector<std::string_view> views;
  views.reserve(c.readings.size());
  for (size_t i = 0; i < c.readings.size(); ++i) {
    model::EncodeEvent(c.readings[i], &events[i]);
    views.push_back(events[i]);
  }
  std::string out;
  EncodeCheckpointTo(c.offsets, c.engine_state, views, &out, c.replay_applied);
  return out;
}

namespace {

constexpr size_t kHeader = sizeof kMagic + 16;  // magic, version, body size, CRC

// A checkpoint file is `out[0, head)`, the engine state (`state_size` bytes),
// `out[head, end)`: the header, the offsets and the state's length, then the readings.
// Encodes both parts into `out` (replaced), the CRC left 0, and returns `head`.
size_t EncodeCheckpointFrame(const std::vector<std::pair<uint32_t, uint64_t>>& offsets,
                             uint64_t state_size, const std::vector<std::string_view>& readings,
                             std::string* out, uint64_t replay_applied) {
  size_t tail_size = 4 + (replay_applied > 0 ? 8 : 0);
  for (std::string_view r : readings) tail_size += 8 + r.size();
  const size_t head = kHeader + 4 + offsets.size() * 12 + 8;
  out->clear();
  out->reserve(head + tail_size);
  out->append(kMagic, sizeof kMagic);
  PutU32(out, replay_applied > 0 ? kVersionReplay : kVersion);
  PutU64(out, head - kHeader + state_size + tail_size);  // body size
  PutU32(out, 0);                                        // CRC, patched in by the caller
  PutU32(out, static_cast<uint32_t>(offsets.size()));
  for (const auto& [p, off] : offsets) {
    PutU32(out, p);
    PutU64(out, off);
  }
  PutU64(out, state_size);
  PutU32(out, static_cast<uint32_t>(readings.size()));
  for (std::string_view r : readings) PutBytes(out, r);
  if (replay_applied > 0) PutU64(out, replay_applied);
  return head;
}

constexpr size_t kCrcAt = sizeof kMagic + 12;

// The CRC covers the body: the frame's head after the header, the state, the readings.
uint32_t HeadCrc(const std::string& frame, size_t head) {
  return crc32c::Value(frame.data() + kHeader, head - kHeader);
}

size_t EncodeCheckpointParts(const std::vector<std::pair<uint32_t, uint64_t>>& offsets,
                             std::string_view engine_state,
                             const std::vector<std::string_view>& readings, std::string* out,
                             uint64_t replay_applied) {
  const size_t head =
      EncodeCheckpointFrame(offsets, engine_state.size(), readings, out, replay_applied);
  uint32_t crc = HeadCrc(*out, head);
  crc = crc32c::Extend(crc, engine_state.data(), engine_state.size());
  crc = crc32c::Extend(crc, out->data() + head, out->size() - head);
  crc = crc32c::Mask(crc);
  std::memcpy(out->data() + kCrcAt, &crc, 4);
  return head;
}

Status WriteAll(int fd, std::string_view data, const std::string& name) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t w = ::write(fd, data.data() + off, data.size() - off);
    if (w < 0) {
      if (errno == EINTR) continue;
      return Status::IoError(fmt::format("write {}: {}", name, std::strerror(errno)));
    }
    off += static_cast<size_t>(w);
  }
  return Status::Ok();
}

// Writes a checkpoint file's bytes as the engine state streams in: the frame's head at
// Begin, each piece as it comes, then the readings and the CRC (at its place in the header).
class CheckpointFileSink : public stream::StateSink {
 public:
  CheckpointFileSink(int fd, const std::string& name,
                     const std::vector<std::pair<uint32_t, uint64_t>>& offsets,
                     const std::vector<std::string_view>& readings, std::string* frame,
                     uint64_t replay_applied)
      : fd_(fd),
        name_(name),
        offsets_(offsets),
        readings_(readings),
        frame_(frame),
        replay_applied_(replay_applied) {}

  Status Begin(uint64_t total_bytes) override {
    if (begun_) return Status::Internal("checkpoint: the engine state began twice");
    begun_ = true;
    state_size_ = total_bytes;
    head_ = EncodeCheckpointFrame(offsets_, total_bytes, readings_, frame_, replay_applied_);
    crc_ = HeadCrc(*frame_, head_);
    return WriteAll(fd_, std::string_view(*frame_).substr(0, head_), name_);
  }
  Status Write(std::string_view piece) override {
    if (!begun_ || state_written_ + piece.size() > state_size_) {
      return Status::Internal("checkpoint: more engine state than announced");
    }
    crc_ = crc32c::Extend(crc_, piece.data(), piece.size());
    state_written_ += piece.size();
    return WriteAll(fd_, piece, name_);
  }
  // After the state: the readings, then the CRC over everything. Returns the file's size.
  Result<uint64_t> Finish() {
    if (!begun_ || state_written_ != state_size_) {
      return Status::Internal("checkpoint: less engine state than announced");
    }
    const std::string_view tail = std::string_view(*frame_).substr(head_);
    crc_ = crc32c::Mask(crc32c::Extend(crc_, tail.data(), tail.size()));
    JOULE_RETURN_IF_ERROR(WriteAll(fd_, tail, name_));
    char crc[4];
    std::memcpy(crc, &crc_, 4);
    if (::pwrite(fd_, crc, 4, kCrcAt) != 4) {
      return Status::IoError(fmt::format("write {}: {}", name_, std::strerror(errno)));
    }
    return static_cast<uint64_t>(frame_->size() + state_size_);
  }

 private:
  int fd_;
  const std::string& name_;
  const std::vector<std::pair<uint32_t, uint64_t>>& offsets_;
  const std::vector<std::string_view>& readings_;
  std::string* frame_;
  uint64_t replay_applied_;
  bool begun_ = false;
  uint64_t state_size_ = 0;
  uint64_t state_written_ = 0;
  size_t head_ = 0;
  uint32_t crc_ = 0;
};

}  // namespace

void EncodeCheckpointTo(const std::vector<std::pair<uint32_t, uint64_t>>& offsets,
                        std::string_view engine_state,
                        const std::vector<std::string_view>& readings, std::string* out,
                        uint64_t replay_applied) {
  const size_t head = EncodeCheckpointParts(offsets, engine_state, readings, out, replay_applied);
  out->insert(head, engine_state);
}

Result<uint64_t> WriteCheckpointParts(const std::string& path,
                                      const std::vector<std::pair<uint32_t, uint64_t>>& offsets,
                                      std::string_view engine_state,
                                      const std::vector<std::string_view>& readings,
                                      std::string* scratch, uint64_t replay_applied) {
  const size_t head =
      EncodeCheckpointParts(offsets, engine_state, readings, scratch, replay_applied);
  const std::string_view parts(*scratch);
  const std::string_view pieces[] = {parts.substr(0, head), engine_state, parts.substr(head)};
  JOULE_RETURN_IF_ERROR(WriteFileAtomically(path, pieces, /*crash_points=*/true));
  return static_cast<uint64_t>(parts.size() + engine_state.size());
}

Result<uint64_t> WriteCheckpointStreamed(
    const std::string& path, const std::vector<std::pair<uint32_t, uint64_t>>& offsets,
    const std::vector<std::string_view>& readings, std::string* scratch, uint64_t replay_applied,
    const std::function<Status(stream::StateSink&)>& save_state) {
  uint64_t size = 0;
  JOULE_RETURN_IF_ERROR(WriteFileAtomically(
      path,
      [&](int fd, const std::string& name) -> Status {
        CheckpointFileSink sink(fd, name, offsets, readings, scratch, replay_applied);
        JOULE_RETURN_IF_ERROR(save_state(sink));
        JOULE_ASSIGN_OR_RETURN(size, sink.Finish());
        return Status::Ok();
      },
      /*crash_points=*/true));
  return size;
}

Status DecodeCheckpoint(std::string_view data, ProcessorCheckpoint* out,
                        std::string_view* engine_state_view) {
  uint32_t version;
  std::string_view body;
  JOULE_RETURN_IF_ERROR(OpenFramed(data, std::string_view(kMagic, sizeof kMagic),
                                   "processor checkpoint", &version, &body));
  if (version != kVersion && version != kVersionReplay) {
    return Status::Corruption(fmt::format("checkpoint version {}", version));
  }
  ByteCursor c(body);
  uint32_t n;
  if (!c.U32(&n) || !c.CanHold(n, 12)) return Status::Corruption("truncated checkpoint");
  out->offsets.resize(n);
  for (auto& [p, off] : out->offsets) {
    if (!c.U32(&p) || !c.U64(&off)) return Status::Corruption("truncated checkpoint offsets");
  }
  bool state_read;
  if (engine_state_view != nullptr) {
    uint64_t len;
    state_read = c.U64(&len) && c.Take(len, engine_state_view);
    out->engine_state.clear();
  } else {
    state_read = GetBytes(c, &out->engine_state);
  }
  if (!state_read || !c.U32(&n) || !c.CanHold(n, 8)) {
    return Status::Corruption("truncated checkpoint");
  }
  out->readings.resize(n);
  std::string event;
  for (auto& e : out->readings) {
    if (!GetBytes(c, &event)) return Status::Corruption("truncated checkpoint readings");
    JOULE_RETURN_IF_ERROR(model::DecodeEvent(event, &e));
  }
  out->replay_applied = 0;
  if (version == kVersionReplay && (!c.U64(&out->replay_applied) || out->replay_applied == 0)) {
    return Status::Corruption("truncated checkpoint replay sequence");
  }
  if (!c.AtEnd()) return Status::Corruption("trailing bytes in checkpoint");
  return Status::Ok();
}

Result<uint64_t> WriteCheckpointFile(const std::string& path, const ProcessorCheckpoint& c) {
  return WriteCheckpointBytes(path, EncodeCheckpoint(c));
}

Result<uint64_t> WriteCheckpointBytes(const std::string& path, std::string_view data) {
  JOULE_RETURN_IF_ERROR(WriteFileAtomically(path, data, /*crash_points=*/true));
  return static_cast<uint64_t>(data.size());
}

Status WriteFileAtomically(const std::string& path, std::string_view data, bool crash_points) {
  const std::string_view pieces[] = {data};
  return WriteFileAtomically(path, pieces, crash_points);
}

Status WriteFileAtomically(const std::string& path, std::span<const std::string_view> pieces,
                           bool crash_points) {
  return WriteFileAtomically(
      path,
      [pieces](int fd, const std::string& name) -> Status {
        for (std::string_view data : pieces) JOULE_RETURN_IF_ERROR(WriteAll(fd, data, name));
        return Status::Ok();
      },
      crash_points);
}

Status WriteFileAtomically(const std::string& path,
                           const std::function<Status(int fd, const std::string& name)>& fill,
                           bool crash_points) {
  auto crash = [crash_points](std::string_view name) {
    if (crash_points) CrashPoint(name);
  };
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::IoError(fmt::format("open {}: {}", tmp, std::strerror(errno)));
  Status filled = fill(fd, tmp);
  if (!filled.ok()) {
    ::close(fd);
    ::unlink(tmp.c_str());  // a full disk: give the partial file's space back
    return filled;
  }
  crash("checkpoint.after_tmp_write");  // temp file written, not yet fsynced
  if (::fsync(fd) != 0) {
    logging::Error("checkpoint: fatal I/O error, aborting (fail-stop)",
                   {{"op", "fsync"}, {"path", tmp}, {"error", std::strerror(errno)}});
    std::abort();
  }
  ::close(fd);
  crash("checkpoint.after_tmp_fsync");  // temp file durable, not yet renamed
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return Status::IoError(fmt::format("rename {}: {}", tmp, std::strerror(errno)));
  }
  crash("checkpoint.after_rename");  // renamed, directory not yet fsynced
  JOULE_RETURN_IF_ERROR(SyncDirectory(std::filesystem::path(path).parent_path().string()));
  crash("checkpoint.after_dir_fsync");  // durable; consumer offsets not yet updated
  return Status::Ok();
}

Status SyncDirectory(const std::string& dir) {
  return SyncPath(dir.empty() ? "." : dir, O_RDONLY | O_DIRECTORY);
}

Result<std::string> ReadWholeFile(const std::string& path) {
  // Into a string of the file's size (a stringstream grew by doubling and then copied:
  // up to 2.5 times a checkpoint of hundreds of MB, briefly).
  uint64_t size = 0;
  JOULE_ASSIGN_OR_RETURN(const int fd, OpenWithSize(path, &size));
  std::string out(static_cast<size_t>(size), '\0');
  size_t got = 0;
  while (true) {
    if (got == out.size()) out.resize(got + 64 * 1024);  // grown since the fstat
    const ssize_t n = ::read(fd, out.data() + got, out.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      return Status::IoError(fmt::format("cannot read {}: {}", path, std::strerror(err)));
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  out.resize(got);
  return out;
}

Result<std::optional<ProcessorCheckpoint>> ReadCheckpointFile(const std::string& path) {
  if (!std::filesystem::exists(path)) return std::optional<ProcessorCheckpoint>();
  JOULE_ASSIGN_OR_RETURN(std::string data, ReadWholeFile(path));
  ProcessorCheckpoint c;
  Status st = DecodeCheckpoint(data, &c);
  if (!st.ok()) return Status::Corruption(fmt::format("{}: {}", path, st.message()));
  return std::optional<ProcessorCheckpoint>(std::move(c));
}

std::vector<std::pair<uint32_t, uint64_t>> PeekCheckpointOffsets(const std::string& path) {
  std::vector<std::pair<uint32_t, uint64_t>> out;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return out;
  char head[kFramedHeaderBytes + 4 + 12 * 256];  // the framing, the count, 256 partitions
  ssize_t n;
  do {
    n = ::pread(fd, head, sizeof head, 0);
  } while (n < 0 && errno == EINTR);
  ::close(fd);
  if (n < static_cast<ssize_t>(kFramedHeaderBytes) ||
      std::string_view(head, 8) != std::string_view(kMagic, sizeof kMagic)) {
    return out;
  }
  ByteCursor c(
      std::string_view(head + kFramedHeaderBytes, static_cast<size_t>(n) - kFramedHeaderBytes));
  uint32_t count;
  if (!c.U32(&count) || !c.CanHold(count, 12)) return out;
  out.resize(count);
  for (auto& [p, off] : out) {
    if (!c.U32(&p) || !c.U64(&off)) return {};
  }
  return out;
}

MappedCheckpoint::~MappedCheckpoint() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapped_bytes_);
}

Result<std::unique_ptr<MappedCheckpoint>> MapCheckpointFile(const std::string& path) {
  uint64_t size = 0;
  Result<int> opened = OpenWithSize(path, &size);
  if (!opened.ok()) {
    if (opened.status().code() == StatusCode::kNotFound) return std::unique_ptr<MappedCheckpoint>();
    return opened.status();
  }
  const int fd = *opened;
  auto out = std::unique_ptr<MappedCheckpoint>(new MappedCheckpoint());
  std::string_view data;
  if (size > 0) {
    void* p = ::mmap(nullptr, static_cast<size_t>(size), PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return Status::IoError(fmt::format("cannot map {}: {}", path, std::strerror(err)));
    }
    ::madvise(p, static_cast<size_t>(size), MADV_SEQUENTIAL);
    out->mapping_ = p;
    out->mapped_bytes_ = static_cast<size_t>(size);
    data = std::string_view(static_cast<const char*>(p), out->mapped_bytes_);
  }
  ::close(fd);  // the mapping stays
  Status decoded = DecodeCheckpoint(data, &out->checkpoint, &out->engine_state);
  if (!decoded.ok()) return Status::Corruption(fmt::format("{}: {}", path, decoded.message()));
  return out;
}

}  // namespace joule::app

#include "store/archive/archive_writer.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <stdio.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "common/crash_point.h"
#include "common/crc32c.h"
#include "common/logging.h"
#include "store/archive/archive_layout.h"
#include "store/archive/archive_row.h"

namespace joule::store {
namespace {

namespace fs = std::filesystem;

constexpr char kMagic[8] = {'J', 'O', 'U', 'L', 'E', 'A', 'R', 'C'};
constexpr uint32_t kCheckpointVersion = 1;
constexpr size_t kWriteChunk = 64 << 10;
constexpr uint64_t kInputChunk = 32 << 10;
// What an open hour costs besides its rows (map node, OpenFile, allocator), counted against
// max_buffered_bytes so that many tiny hours are bounded too.
constexpr uint64_t kHourOverhead = sizeof(void*) * 8 + 256;

[[noreturn]] void FatalFsync(const std::string& path) {
  // A failed fsync is fatal: the kernel may have dropped the dirty pages.
  logging::Error("archive: fatal I/O error, aborting (fail-stop)",
                 {{"op", "fsync"}, {"path", path}, {"error", std::strerror(errno)}});
  std::abort();
}

void SyncFd(int fd, const std::string& path) {
  if (::fsync(fd) != 0) FatalFsync(path);
}

Status SyncDir(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::IoError(fmt::format("open {}: {}", path, std::strerror(errno)));
  SyncFd(fd, path);
  ::close(fd);
  return Status::Ok();
}

Status WriteAll(int fd, const char* data, size_t n, const std::string& path) {
  while (n > 0) {
    ssize_t w = ::write(fd, data, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return Status::IoError(fmt::format("write {}: {}", path, std::strerror(errno)));
    }
    data += w;
    n -= static_cast<size_t>(w);
  }
  return Status::Ok();
}

// Creates `dir` (and missing parents below root) and adds the parent of each directory it
// created to `parents`: fsynced by the caller, so that a published file's path survives a
// power loss.
Status MakeDir(const fs::path& root, const fs::path& dir, std::set<std::string>* parents) {
  std::vector<fs::path> missing;
  for (fs::path p = dir; p != root && !p.empty() && !fs::exists(p); p = p.parent_path()) {
    missing.push_back(p);
  }
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    std::error_code ec;
    fs::create_directory(*it, ec);
    if (ec) return Status::IoError(fmt::format("mkdir {}: {}", it->string(), ec.message()));
    parents->insert(it->parent_path().string());
  }
  return Status::Ok();
}

void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}
void PutU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}
uint64_t GetLe(std::string_view s, size_t pos, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i)
    v |= static_cast<uint64_t>(static_cast<uint8_t>(s[pos + i])) << (8 * i);
  return v;
}

}  // namespace

// An open hour: buffered (rows in `in`, no context, no file) or a stream (`cctx` and `fd`).
struct ArchiveWriter::OpenFile {
  int64_t hour_start_ns = 0;
  std::string staging_path;
  int fd = -1;
  ZSTD_CCtx* cctx = nullptr;
  std::string out;  // compressed bytes not yet written
  // Buffered: every row of the hour. Stream: rows not yet given to zstd (fewer, larger
  // compress calls).
  std::string in;
  uint64_t compressed_bytes = 0;
  uint64_t rows = 0;  // events added to this hour (joule_archive_events_total at publish)

  ~OpenFile() {
    if (cctx) ZSTD_freeCCtx(cctx);
    if (fd >= 0) ::close(fd);
  }

  bool stream() const { return cctx != nullptr; }

  // Compresses `in` (mode ZSTD_e_continue or ZSTD_e_end) into `out`, writing full chunks.
  Status Compress(std::string_view in, ZSTD_EndDirective mode) {
    ZSTD_inBuffer input{in.data(), in.size(), 0};
    char buf[ZSTD_BLOCKSIZE_MAX];
    while (true) {
      ZSTD_outBuffer output{buf, sizeof buf, 0};
      size_t remaining = ZSTD_compressStream2(cctx, &output, &input, mode);
      if (ZSTD_isError(remaining)) {
        return Status::Internal(fmt::format("zstd: {}", ZSTD_getErrorName(remaining)));
      }
      out.append(buf, output.pos);
      compressed_bytes += output.pos;
      if (out.size() >= kWriteChunk) {
        JOULE_RETURN_IF_ERROR(WriteAll(fd, out.data(), out.size(), staging_path));
        out.clear();
      }
      const bool done = mode == ZSTD_e_end ? remaining == 0 : input.pos == input.size;
      if (done) return Status::Ok();
    }
  }
};

ArchiveWriter::ArchiveWriter(ArchiveWriterOptions options)
    : options_(std::move(options)),
      clock_(options_.clock ? options_.clock : SystemClock::Default()),
      age_clock_(options_.age_clock ? options_.age_clock : MonotonicClock::Default()),
      committed_(options_.partitions, 0),
      next_(options_.partitions, 0),
      promote_at_(std::min(options_.stream_threshold_bytes, options_.max_file_bytes)) {}

ArchiveWriter::~ArchiveWriter() {
  if (oneshot_) ZSTD_freeCCtx(oneshot_);
}

Result<std::unique_ptr<ArchiveWriter>> ArchiveWriter::Open(ArchiveWriterOptions options) {
  if (options.partitions == 0) return Status::InvalidArgument("archive: partitions must be >= 1");
  std::unique_ptr<ArchiveWriter> w(new ArchiveWriter(std::move(options)));
  JOULE_RETURN_IF_ERROR(w->Recover());
  return w;
}

Result<std::optional<ArchiveCheckpoint>> ReadArchiveCheckpoint(const std::string& root) {
  const fs::path path = fs::path(root) / kArchiveCheckpointFile;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (!fs::exists(path)) return std::optional<ArchiveCheckpoint>();
    return Status::IoError(fmt::format("cannot read {}", path.string()));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string data = ss.str();
  auto bad = [&](std::string_view why) {
    return Status::Corruption(fmt::format("{}: {}", path.string(), why));
  };
  if (data.size() < 20 || std::memcmp(data.data(), kMagic, 8) != 0)
    return bad("not an archive checkpoint");
  if (GetLe(data, 8, 4) != kCheckpointVersion) return bad("unknown version");
  const uint64_t len = GetLe(data, 12, 4);
  const uint32_t crc = static_cast<uint32_t>(GetLe(data, 16, 4));
  std::string_view body = std::string_view(data).substr(20);
  if (body.size() != len || len < 12) return bad("wrong length");
  if (crc32c::Unmask(crc) != crc32c::Value(body)) return bad("CRC mismatch");
  ArchiveCheckpoint c;
  c.next_seq = GetLe(body, 0, 8);
  const uint64_t n = GetLe(body, 8, 4);
  if (body.size() != 12 + 8 * n) return bad("wrong partition count");
  for (uint64_t i = 0; i < n; ++i) c.offsets.push_back(GetLe(body, 12 + 8 * i, 8));
  return std::optional<ArchiveCheckpoint>(std::move(c));
}

Status ArchiveWriter::Recover() {
  const fs::path root(options_.root);
  std::error_code ec;
  fs::create_directories(root / kArchiveStagingDir, ec);
  if (ec) return Status::IoError(fmt::format("mkdir {}: {}", root.string(), ec.message()));

  JOULE_ASSIGN_OR_RETURN(std::optional<ArchiveCheckpoint> ckpt, ReadArchiveCheckpoint(root));
  if (ckpt) {
    if (ckpt->offsets.size() != options_.partitions) {
      return Status::InvalidArgument(
          fmt::format("archive checkpoint has {} partitions, the log {}; the log layout changed",
                      ckpt->offsets.size(), options_.partitions));
    }
    recovery_.had_checkpoint = true;
    checkpoint_written_ = true;
    committed_ = ckpt->offsets;
    next_ = ckpt->offsets;
    next_seq_ = ckpt->next_seq;
  }

  // Never published: whatever is in the staging directory.
  for (const auto& entry : fs::directory_iterator(root / kArchiveStagingDir, ec)) {
    std::error_code rm;
    fs::remove_all(entry.path(), rm);
    if (rm)
      return Status::IoError(fmt::format("remove {}: {}", entry.path().string(), rm.message()));
    ++recovery_.temp_files_removed;
  }
  if (ec) return Status::IoError(fmt::format("list staging: {}", ec.message()));

  JOULE_ASSIGN_OR_RETURN(std::vector<ArchiveFile> files,
                         ListArchiveFiles(options_.root, 0, std::numeric_limits<int64_t>::max()));
  if (!ckpt) {
    // No checkpoint but published files. Seal() writes a checkpoint before a round's
    // first rename, so no crash of this build leaves files without one: it was removed by
    // hand (or a build before 2026-11-30 crashed in the archive's first round). Their
    // events cannot be told from the log's; keep them and never reuse their sequence
    // numbers (docs/formats/archive.md, "Checkpoint").
    for (const auto& f : files) next_seq_ = std::max(next_seq_, f.seq + 1);
    return Status::Ok();
  }
  std::set<std::string> dirs;
  for (const auto& f : files) {
    if (f.seq < next_seq_) continue;
    // Published by a round whose checkpoint was never written: its events will be read
    // from the log again.
    if (::unlink(f.path.c_str()) != 0) {
      return Status::IoError(fmt::format("unlink {}: {}", f.path, std::strerror(errno)));
    }
    dirs.insert(fs::path(f.path).parent_path().string());
    ++recovery_.files_rolled_back;
  }
  for (const auto& d : dirs) JOULE_RETURN_IF_ERROR(SyncDir(d));
  return Status::Ok();
}

void ArchiveWriter::SetStart(uint32_t partition, uint64_t offset) {
  committed_[partition] = offset;
  next_[partition] = offset;
}

Status ArchiveWriter::Add(uint32_t partition, uint64_t offset, const model::Event& event) {
  return AddImpl(partition, offset, event);
}

Status ArchiveWriter::Add(uint32_t partition, uint64_t offset, const EventView& event) {
  return AddImpl(partition, offset, event);
}

Result<ZSTD_CCtx*> ArchiveWriter::NewContext() const {
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  if (!cctx) return Status::Internal("zstd: cannot create a context");
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, options_.compression_level);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
  if (options_.hash_log > 0) {
    const size_t r = ZSTD_CCtx_setParameter(cctx, ZSTD_c_hashLog, options_.hash_log);
    if (ZSTD_isError(r)) {
      ZSTD_freeCCtx(cctx);
      return Status::InvalidArgument(
          fmt::format("archive: zstd hash log {}: {}", options_.hash_log, ZSTD_getErrorName(r)));
    }
  }
  if (options_.window_log > 0) {
    const size_t r = ZSTD_CCtx_setParameter(cctx, ZSTD_c_windowLog, options_.window_log);
    if (ZSTD_isError(r)) {
      ZSTD_freeCCtx(cctx);
      return Status::InvalidArgument(fmt::format("archive: zstd window log {}: {}",
                                                 options_.window_log, ZSTD_getErrorName(r)));
    }
  }
  return cctx;
}

Status ArchiveWriter::StartStream(OpenFile* f) {
  f->staging_path = (fs::path(options_.root) / kArchiveStagingDir /
                     fmt::format("{}-{}.ndjson.zst.tmp", next_seq_, staging_counter_++))
                        .string();
  f->fd = ::open(f->staging_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (f->fd < 0) {
    return Status::IoError(fmt::format("open {}: {}", f->staging_path, std::strerror(errno)));
  }
  JOULE_ASSIGN_OR_RETURN(f->cctx, NewContext());
  ++streams_;
  stats_.open_streams.store(streams_, std::memory_order_relaxed);
  buffered_bytes_ -= f->in.capacity();
  JOULE_RETURN_IF_ERROR(f->Compress(f->in, ZSTD_e_continue));
  std::string().swap(f->in);  // a stream's input is a chunk: give the buffer back
  if (f->compressed_bytes >= options_.max_file_bytes) file_full_ = true;
  return Status::Ok();
}

template <typename E>
Status ArchiveWriter::AddImpl(uint32_t partition, uint64_t offset, const E& event) {
  if (partition >= options_.partitions) return Status::InvalidArgument("archive: bad partition");
  const int64_t hour = ArchiveHourOf(event.timestamp_ns);
  auto it = open_.find(hour);
  if (it == open_.end()) {
    // The one-shot context is made with the first hour, so bad parameters are reported by
    // the first Add, as when every hour had its own.
    if (!oneshot_) {
      JOULE_ASSIGN_OR_RETURN(oneshot_, NewContext());
    }
    if (open_.empty()) round_opened_at_ns_ = age_clock_->NowNanos();
    auto f = std::make_unique<OpenFile>();
    f->hour_start_ns = hour;
    it = open_.emplace(hour, std::move(f)).first;
    buffered_bytes_ += kHourOverhead;
    stats_.open_files.store(open_.size(), std::memory_order_relaxed);
  }
  OpenFile* f = it->second.get();
  ++f->rows;
  if (!f->stream()) {
    const uint64_t capacity = f->in.capacity();
    encoder_.Append(event, &f->in);
    buffered_bytes_ += f->in.capacity() - capacity;
    if (f->in.size() >= promote_at_) {
      if (streams_ < options_.max_streams) {
        JOULE_RETURN_IF_ERROR(StartStream(f));
      } else {
        must_seal_ = true;  // stays buffered; RoundFull() asks for the seal
      }
    }
  } else {
    encoder_.Append(event, &f->in);
    // zstd buffers a block internally anyway; batching rows only saves per-call overhead.
    if (f->in.size() >= std::min<uint64_t>(kInputChunk, options_.max_file_bytes / 2)) {
      JOULE_RETURN_IF_ERROR(f->Compress(f->in, ZSTD_e_continue));
      f->in.clear();
      if (f->compressed_bytes >= options_.max_file_bytes) file_full_ = true;
    }
  }
  next_[partition] = offset + 1;
  stats_.events.fetch_add(1, std::memory_order_relaxed);
  return Status::Ok();
}

void ArchiveWriter::Skip(uint32_t partition, uint64_t offset) {
  if (partition < options_.partitions) next_[partition] = offset + 1;
}

bool ArchiveWriter::SealDue() const {
  if (open_.empty()) return next_ != committed_;  // only skipped records: checkpoint soon
  if (file_full_ || RoundFull()) return true;
  // The round's first hour is its oldest open file.
  return age_clock_->NowNanos() - round_opened_at_ns_ >= options_.max_file_age_ns;
}

Status ArchiveWriter::WriteFile(OpenFile* f) {
  if (f->stream()) {
    JOULE_RETURN_IF_ERROR(f->Compress(f->in, ZSTD_e_end));
    f->in.clear();
  } else {
    // The whole hour in one call: one frame with content checksum, the parameters of a
    // stream (zstd may lower the window to the content size, which the frame then states).
    f->staging_path = (fs::path(options_.root) / kArchiveStagingDir /
                       fmt::format("{}-{}.ndjson.zst.tmp", next_seq_, staging_counter_++))
                          .string();
    f->fd = ::open(f->staging_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (f->fd < 0) {
      return Status::IoError(fmt::format("open {}: {}", f->staging_path, std::strerror(errno)));
    }
    frame_.resize(ZSTD_compressBound(f->in.size()));
    const size_t n =
        ZSTD_compress2(oneshot_, frame_.data(), frame_.size(), f->in.data(), f->in.size());
    if (ZSTD_isError(n)) return Status::Internal(fmt::format("zstd: {}", ZSTD_getErrorName(n)));
    f->out.assign(frame_.data(), n);
    f->compressed_bytes = n;
    buffered_bytes_ -= f->in.capacity();
    std::string().swap(f->in);
  }
  JOULE_RETURN_IF_ERROR(WriteAll(f->fd, f->out.data(), f->out.size(), f->staging_path));
  std::string().swap(f->out);
  // Starts the writeback now, so that the batch's fsyncs find it under way.
  ::sync_file_range(f->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
  return Status::Ok();
}

Result<size_t> ArchiveWriter::Seal() {
  last_sealed_events_ = 0;
  if (open_.empty() && next_ == committed_) return size_t{0};
  const fs::path root(options_.root);
  if (!checkpoint_written_ && !open_.empty()) {
    // The archive's first round (or the first after the checkpoint was removed): a crash
    // between its renames and its checkpoint must find a checkpoint naming where the round
    // began, or recovery could not tell the round's files from files to keep, and the log
    // would be archived from its start once more (found by a black-box test: every event
    // twice after a kill -9 in the first seal).
    JOULE_RETURN_IF_ERROR(WriteCheckpoint(committed_));
  }
  // 1. Every file complete and fsynced in `.staging/`, kSealBatch at a time: the writes of
  //    a batch are under way together and one journal commit covers most of its fsyncs
  //    (one write + fsync per file took a commit each), and descriptors stay bounded.
  std::vector<OpenFile*> batch;
  auto sync_batch = [&batch] {
    for (OpenFile* f : batch) {
      SyncFd(f->fd, f->staging_path);
      ::close(f->fd);
      f->fd = -1;
    }
    batch.clear();
  };
  for (auto& [hour, f] : open_) {
    JOULE_RETURN_IF_ERROR(WriteFile(f.get()));
    batch.push_back(f.get());
    if (batch.size() == kSealBatch) sync_batch();
  }
  sync_batch();
  if (frame_.capacity() > (4u << 20)) std::string().swap(frame_);
  // 2. The hour directories, each new one's parent fsynced once.
  std::set<std::string> dirs;
  std::set<std::string> parents;
  for (auto& [hour, f] : open_) {
    const fs::path dir = root / ArchiveHourDir(hour);
    if (!dirs.insert(dir.string()).second) continue;
    JOULE_RETURN_IF_ERROR(MakeDir(root, dir, &parents));
  }
  for (const auto& p : parents) JOULE_RETURN_IF_ERROR(SyncDir(p));
  // 3. Publish, in hour order.
  size_t published = 0;
  uint64_t bytes = 0;
  uint64_t events = 0;
  for (auto& [hour, f] : open_) {
    const fs::path final_path = root / ArchiveHourDir(hour) / ArchiveFileName(next_seq_);
    // Sequence numbers are never reused; refuse to replace a file all the same.
    if (::renameat2(AT_FDCWD, f->staging_path.c_str(), AT_FDCWD, final_path.c_str(),
                    RENAME_NOREPLACE) != 0) {
      return Status::IoError(
          fmt::format("publish {}: {}", final_path.string(), std::strerror(errno)));
    }
    ++next_seq_;
    ++published;
    bytes += f->compressed_bytes;
    events += f->rows;
  }
  for (const auto& d : dirs) JOULE_RETURN_IF_ERROR(SyncDir(d));
  open_.clear();
  streams_ = 0;
  buffered_bytes_ = 0;
  must_seal_ = false;
  file_full_ = false;
  stats_.open_files.store(0, std::memory_order_relaxed);
  stats_.open_streams.store(0, std::memory_order_relaxed);
  if (published > 0) CrashPoint("archive.after_publish");  // renamed, not checkpointed
  if (options_.before_checkpoint) JOULE_RETURN_IF_ERROR(options_.before_checkpoint());
  JOULE_RETURN_IF_ERROR(WriteCheckpoint(next_));
  committed_ = next_;
  last_sealed_events_ = events;
  stats_.events_published.fetch_add(events, std::memory_order_relaxed);
  stats_.files_published.fetch_add(published, std::memory_order_relaxed);
  stats_.bytes_published.fetch_add(bytes, std::memory_order_relaxed);
  return published;
}

Status ArchiveWriter::WriteCheckpoint(const std::vector<uint64_t>& offsets) {
  std::string body;
  PutU64(&body, next_seq_);
  PutU32(&body, static_cast<uint32_t>(offsets.size()));
  for (uint64_t off : offsets) PutU64(&body, off);
  std::string data(kMagic, sizeof kMagic);
  PutU32(&data, kCheckpointVersion);
  PutU32(&data, static_cast<uint32_t>(body.size()));
  PutU32(&data, crc32c::Mask(crc32c::Value(body)));
  data += body;
  const std::string path = (fs::path(options_.root) / kArchiveCheckpointFile).string();
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::IoError(fmt::format("open {}: {}", tmp, std::strerror(errno)));
  Status st = WriteAll(fd, data.data(), data.size(), tmp);
  if (!st.ok()) {
    ::close(fd);
    ::unlink(tmp.c_str());  // a full disk: give the partial file's space back
    return st;
  }
  SyncFd(fd, tmp);
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return Status::IoError(fmt::format("rename {}: {}", tmp, std::strerror(errno)));
  }
  JOULE_RETURN_IF_ERROR(SyncDir(options_.root));
  checkpoint_written_ = true;
  return Status::Ok();
}

Result<size_t> ArchiveWriter::EnforceRetention() {
  if (options_.retention_ns <= 0) return size_t{0};
  const int64_t horizon = clock_->NowNanos() - options_.retention_ns;
  const fs::path root(options_.root);
  size_t removed = 0;
  std::error_code ec;
  for (const auto& dt : fs::directory_iterator(root, ec)) {
    const std::string dt_name = dt.path().filename().string();
    if (dt_name.rfind("dt=", 0) != 0 || !dt.is_directory()) continue;
    std::error_code ec2;
    bool any_left = false;
    for (const auto& hour : fs::directory_iterator(dt.path(), ec2)) {
      std::optional<int64_t> start = ParseArchiveHourDir(dt_name, hour.path().filename().string());
      // An hour is kept until all of it is older than the horizon.
      if (!start || *start + kNanosPerHour > horizon || open_.count(*start)) {
        any_left = true;
        continue;
      }
      std::error_code rm;
      fs::remove_all(hour.path(), rm);
      if (rm)
        return Status::IoError(fmt::format("remove {}: {}", hour.path().string(), rm.message()));
      ++removed;
    }
    if (!any_left && !ec2) {
      std::error_code rm;
      fs::remove(dt.path(), rm);
    }
  }
  if (removed > 0) JOULE_RETURN_IF_ERROR(SyncDir(options_.root));
  return removed;
}

}  // namespace joule::store

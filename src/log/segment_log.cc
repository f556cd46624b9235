#include "log/segment_log.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <utility>

#include "common/json_writer.h"
#include "common/logging.h"
#include "common/test_hold.h"
#include "common/thread_priority.h"
#include "log/file_io.h"
#include "log/file_layer.h"
#include "log/segment_format.h"
#include "log/segment_reader.h"
#include "log/segment_scanner.h"

namespace joule::log {
namespace {

double SecondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// A full disk (or quota) on write or create is survivable: nothing of the round was
// acknowledged, so it is cut off and refused. Every other write error is fatal.
bool IsNoSpace(int err) { return err == ENOSPC || err == EDQUOT; }
// So is running out of file descriptors when the next segment is created (the process's
// connections may hold them all for a while): the old segment stays active, and the round
// is refused like one on a full disk.
bool IsOutOfDescriptors(int err) { return err == EMFILE || err == ENFILE; }

}  // namespace

Result<std::unique_ptr<Log>> Log::Open(const LogOptions& options, MetricsRegistry* metrics) {
  JOULE_ASSIGN_OR_RETURN(std::unique_ptr<SegmentLog> log, SegmentLog::Open(options, metrics));
  return std::unique_ptr<Log>(std::move(log));
}

Result<uint32_t> ExistingPartitions(const std::string& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) return 0u;
  JOULE_ASSIGN_OR_RETURN(std::vector<std::string> names, ListDir(dir));
  uint32_t count = 0;
  for (const std::string& name : names) {
    if (auto id = ParsePartitionDirName(name)) count = std::max(count, *id + 1);
  }
  return count;
}

Result<std::unique_ptr<SegmentLog>> SegmentLog::Open(const LogOptions& options,
                                                     MetricsRegistry* metrics) {
  if (options.dir.empty()) return Status::InvalidArgument("log dir is empty");
  if (options.partitions == 0 || options.partitions > 100000) {
    return Status::InvalidArgument("log partitions must be in [1, 100000]");
  }
  if (options.segment_bytes == 0) return Status::InvalidArgument("segment_bytes must be > 0");
  if (options.max_pending_bytes == 0) {
    return Status::InvalidArgument("max_pending_bytes must be > 0");
  }
  std::unique_ptr<SegmentLog> log(new SegmentLog(options, metrics));
  JOULE_RETURN_IF_ERROR(log->Recover());
  if (options.fsync) {
    // Enough threads for every file of every round in flight to sync at once.
    const size_t rounds = std::max<uint32_t>(options.max_rounds_in_flight, 1);
    log->sync_pool_ = std::make_unique<SyncPool>(std::min<size_t>(options.partitions * rounds, 32),
                                                 "joule-sync-");
    if (options.prewrite_bytes > 0) {
      log->prewrite_pool_ = std::make_unique<SyncPool>(1, "joule-log-pre");
    }
  }
  log->writer_ = std::thread([raw = log.get()] { raw->WriterLoop(); });
  return log;
}

SegmentLog::SegmentLog(const LogOptions& options, MetricsRegistry* metrics)
    : options_(options),
      clock_(options.clock != nullptr ? options.clock : SystemClock::Default()),
      fs_(options.file_layer != nullptr ? options.file_layer : PosixFileLayer()) {
  if (metrics == nullptr) {
    own_metrics_ = std::make_unique<MetricsRegistry>();
    metrics = own_metrics_.get();
  }
  metrics_ = metrics;
  append_latency_ = metrics_->GetHistogram("joule_log_append_latency_seconds",
                                           "Time from Log::Append to the batch being durable",
                                           Histogram::LatencyBuckets());
  fsync_latency_ = metrics_->GetHistogram("joule_log_fsync_latency_seconds",
                                          "Duration of one fdatasync of a segment file",
                                          Histogram::LatencyBuckets());
  records_per_fsync_ =
      metrics_->GetHistogram("joule_log_records_per_fsync", "Records made durable by one fdatasync",
                             Histogram::SizeBuckets());
  bytes_per_fsync_ = metrics_->GetHistogram(
      "joule_log_bytes_per_fsync", "Bytes made durable by one fdatasync", Histogram::SizeBuckets());
  auto phase = [this](const char* name) {
    return metrics_->GetHistogram("joule_log_commit_phase_seconds",
                                  "Time spent in each phase of a group-commit round",
                                  Histogram::LatencyBuckets(), {{"phase", name}});
  };
  phase_queue_ = phase("queue");
  phase_window_ = phase("window");
  phase_write_ = phase("write");
  phase_sync_ = phase("sync");
  phase_callbacks_ = phase("callbacks");
  appended_records_ =
      metrics_->GetCounter("joule_log_appended_records_total", "Records written to the log");
  appended_bytes_ = metrics_->GetCounter("joule_log_appended_bytes_total",
                                         "Bytes (framed records) written to the log");
  rejected_appends_ = metrics_->GetCounter("joule_log_rejected_appends_total",
                                           "Appends refused because too many bytes were pending");
  pending_bytes_gauge_ =
      metrics_->GetGauge("joule_log_pending_bytes", "Bytes appended but not yet durable");
  truncated_bytes_ = metrics_->GetCounter("joule_log_recovery_truncated_bytes_total",
                                          "Bytes cut from torn or corrupt segment tails on open");
  segments_deleted_ =
      metrics_->GetCounter("joule_log_segments_deleted_total", "Segments deleted by retention");
  disk_full_rounds_ = metrics_->GetCounter(
      "joule_log_disk_full_total",
      "Group-commit rounds refused (cut off, not acknowledged) because the disk was full");
  no_descriptor_rounds_ = metrics_->GetCounter(
      "joule_log_no_descriptors_total",
      "Group-commit rounds refused (cut off, not acknowledged) because the next segment could "
      "not be created: the process was out of file descriptors");
  prewritten_bytes_ = metrics_->GetCounter(
      "joule_log_prewritten_bytes_total",
      "Zero bytes pre-written (and synced) ahead of the active segments' last records");
  quarantine_ = std::make_unique<Quarantine>(options_.quarantine_dir, clock_, metrics_);
}

SegmentLog::~SegmentLog() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  writer_cv_.notify_all();
  if (writer_.joinable()) writer_.join();
  // A log closed cleanly leaves no pre-written tail behind (one killed does, and Open
  // takes it over).
  for (auto& p : parts_) {
    ReapPrewrite(p.get(), /*wait=*/true);
    if (p->fd < 0 || p->file_bytes <= p->active_bytes) continue;
    int err = fs_->Truncate(p->fd, p->active_bytes);
    if (err == 0 && options_.fsync) err = fs_->DataSync(p->fd);
    if (err != 0) {
      // Not fatal: every record was synced by its round, and a zero tail left behind is
      // read as the end of the data.
      logging::Warn("log: cutting the pre-written tail on close failed",
                    {{"segment", p->active_path}, {"error", std::strerror(err)}});
    }
  }
  prewrite_pool_.reset();
  for (auto& p : parts_) fs_->Close(p->fd);
}

bool SegmentLog::CutTail(Partition* p) {
  if (p->file_bytes <= p->active_bytes) return false;
  if (int err = fs_->Truncate(p->fd, p->active_bytes); err != 0) {
    FatalIo("ftruncate", p->active_path, err);
  }
  p->file_bytes = p->active_bytes;
  return true;
}

std::string SegmentLog::SegmentPath(const Partition& p, uint64_t base) const {
  return p.dir + "/" + SegmentFileName(base);
}

// ---------------------------------------------------------------------------------------
// Recovery

Status SegmentLog::Recover() {
  bool created = false;
  JOULE_RETURN_IF_ERROR(CreateDirs(options_.dir, &created));
  if (created) {
    size_t slash = options_.dir.find_last_of('/');
    std::string parent = slash == std::string::npos ? "." : options_.dir.substr(0, slash + 1);
    JOULE_RETURN_IF_ERROR(SyncDir(parent));
  }
  JOULE_ASSIGN_OR_RETURN(std::vector<std::string> names, ListDir(options_.dir));
  for (const std::string& name : names) {
    auto id = ParsePartitionDirName(name);
    if (id && *id >= options_.partitions) {
      return Status::InvalidArgument("log " + options_.dir + " has partition directory " + name +
                                     " but is opened with " + std::to_string(options_.partitions) +
                                     " partitions");
    }
  }
  for (uint32_t i = 0; i < options_.partitions; ++i) {
    auto p = std::make_unique<Partition>();
    p->id = i;
    p->dir = options_.dir + "/" + PartitionDirName(i);
    JOULE_RETURN_IF_ERROR(RecoverPartition(p.get()));
    report_.records_recovered += p->written_end - p->segments.front().base;
    parts_.push_back(std::move(p));
  }
  return Status::Ok();
}

Status SegmentLog::RecoverPartition(Partition* p) {
  bool created = false;
  JOULE_RETURN_IF_ERROR(CreateDirs(p->dir, &created));
  if (created) JOULE_RETURN_IF_ERROR(SyncDir(options_.dir));
  JOULE_ASSIGN_OR_RETURN(std::vector<std::string> names, ListDir(p->dir));
  std::vector<uint64_t> bases;
  for (const std::string& name : names) {
    if (auto base = ParseSegmentFileName(name)) bases.push_back(*base);
  }
  std::sort(bases.begin(), bases.end());

  if (bases.empty()) {
    int fd = -1;
    std::string path = SegmentPath(*p, 0);
    if (int err = fs_->OpenForWrite(path, /*create=*/true, &fd); err != 0) {
      return Status::IoError("create " + path + ": " + std::strerror(err));
    }
    fs_->Close(fd);
    if (int err = fs_->SyncDir(p->dir); err != 0) {
      return Status::IoError("fsync dir " + p->dir + ": " + std::strerror(err));
    }
    bases.push_back(0);
  }

  // Tail recovery: validate the last segment, cut what follows the last valid record.
  uint64_t valid_bytes = 0;
  uint64_t file_bytes = 0;
  uint64_t records = 0;
  int64_t newest = kUnknownTime;
  for (;;) {
    uint64_t base = bases.back();
    std::string path = SegmentPath(*p, base);
    JOULE_ASSIGN_OR_RETURN(uint64_t file_size, FileSize(path));
    JOULE_ASSIGN_OR_RETURN(int fd, OpenForRead(path));
    SegmentScanner scanner(fd, base, path);
    DecodedRecord rec;
    SegmentScanner::Step step;
    records = 0;
    newest = kUnknownTime;
    while ((step = scanner.Next(&rec)) == SegmentScanner::Step::kRecord) {
      ++records;
      newest = std::max(newest, rec.append_time_ns);
    }
    if (step == SegmentScanner::Step::kIoError) return scanner.io_status();
    valid_bytes = scanner.valid_bytes();
    file_bytes = file_size;
    if (valid_bytes < file_size) {
      // Zeros only after the last record: a pre-written tail, kept (appends overwrite it).
      // Anything else is a torn or corrupt tail, cut off with the zeros after it; what is
      // reported is the bytes up to the last non-zero one (docs/formats/log.md).
      JOULE_ASSIGN_OR_RETURN(uint64_t nonzero_end, NonZeroEnd(path, valid_bytes, file_size));
      if (nonzero_end > valid_bytes) {
        const uint64_t cut = nonzero_end - valid_bytes;
        const std::string reason = step == SegmentScanner::Step::kEnd
                                       ? "non-zero bytes after a zero header"
                                       : DecodeResultName(scanner.reason());
        // A torn tail holds only unacknowledged records; anything else is damage to
        // acknowledged ones, which is not cut unless an operator said so.
        const uint64_t cut_offset = base + records;
        uint64_t fill_to = cut_offset;
        JOULE_ASSIGN_OR_RETURN(std::string damage,
                               TailDamage(*p, path, valid_bytes, file_size, cut_offset, &fill_to));
        if (!damage.empty() && options_.tail_damage == LogOptions::TailDamage::kRefuse) {
          return Status::Corruption(
              "log segment " + path + ": acknowledged records are damaged at byte " +
              std::to_string(valid_bytes) + " (offset " + std::to_string(cut_offset) + ", " +
              reason + "; " + std::to_string(cut) +
              " bytes from there to the end of the data): " + damage +
              ". Nothing was changed. Restore the segment from a backup, or cut the damaged "
              "records explicitly (they are copied to the quarantine directory first): "
              "docs/OPERATIONS.md, \"A damaged log segment\"");
        }
        // Never delete: the bytes cut go to the quarantine directory first (fsynced), so
        // that a cut that was wrong can be undone by hand (docs/OPERATIONS.md).
        JsonWriter w;
        w.BeginObject();
        w.Key("partition");
        w.Uint(p->id);
        w.Key("segment");
        w.String(path);
        w.Key("byte");
        w.Uint(valid_bytes);
        w.Key("offset");
        w.Uint(base + records);
        w.Key("bytes_cut");
        w.Uint(cut);
        w.Key("reason");
        w.String(reason);
        w.Key("damage");
        w.String(damage);
        w.EndObject();
        Result<std::string> saved = quarantine_->SaveCut(path, valid_bytes, nonzero_end, w.Take());
        if (!saved.ok()) {
          return Status::IoError("log segment " + path + ": cannot copy the " +
                                 std::to_string(cut) + " bytes to cut at byte " +
                                 std::to_string(valid_bytes) +
                                 " to the quarantine directory first, so nothing was cut: " +
                                 saved.status().ToString());
        }
        JOULE_RETURN_IF_ERROR(TruncateAndSync(path, valid_bytes));
        const uint64_t cut_byte = valid_bytes;
        file_bytes = valid_bytes;
        uint64_t fillers = 0;
        if (fill_to > cut_offset) {
          // Offsets a consumer's checkpoint already passed are not handed out again: they
          // get empty records, so that the consumer resumes where it was.
          JOULE_ASSIGN_OR_RETURN(uint64_t filled,
                                 WriteFillers(path, valid_bytes, cut_offset, fill_to));
          fillers = fill_to - cut_offset;
          records += fillers;
          valid_bytes += filled;
          file_bytes = valid_bytes;
          newest = std::max(newest, clock_->NowNanos());
        }
        report_.cuts.push_back({p->id, path, cut, *saved, damage, fillers});
        truncated_bytes_->Inc(cut);
        if (damage.empty()) {
          logging::Warn("log: cut torn or corrupt segment tail",
                        {{"partition", std::to_string(p->id)},
                         {"segment", path},
                         {"byte", std::to_string(cut_byte)},
                         {"offset", std::to_string(cut_offset)},
                         {"bytes_cut", std::to_string(cut)},
                         {"records_kept", std::to_string(cut_offset - base)},
                         {"quarantined", *saved},
                         {"reason", reason}});
        } else {
          logging::Error(
              "log: cut damaged acknowledged records, as configured (their copy is in "
              "quarantine)",
              {{"partition", std::to_string(p->id)},
               {"segment", path},
               {"byte", std::to_string(cut_byte)},
               {"offset", std::to_string(cut_offset)},
               {"bytes_cut", std::to_string(cut)},
               {"records_kept", std::to_string(cut_offset - base)},
               {"quarantined", *saved},
               {"reason", reason},
               {"damage", damage},
               {"filler_records", std::to_string(fillers)}});
        }
      }
    }
    if (records == 0 && bases.size() > 1) {
      // A crash right after a roll: the new segment never got a durable record.
      if (::unlink(path.c_str()) != 0) return ErrnoStatus("unlink", path);
      JOULE_RETURN_IF_ERROR(SyncDir(p->dir));
      logging::Info("log: removed empty last segment",
                    {{"partition", std::to_string(p->id)}, {"segment", path}});
      bases.pop_back();
      continue;
    }
    break;
  }

  if (options_.verify_on_open) {
    for (size_t i = 0; i + 1 < bases.size(); ++i) {
      JOULE_RETURN_IF_ERROR(VerifySealed(p, bases[i], bases[i + 1]));
    }
  }

  for (size_t i = 0; i + 1 < bases.size(); ++i) {
    JOULE_ASSIGN_OR_RETURN(uint64_t size, FileSize(SegmentPath(*p, bases[i])));
    p->segments.push_back(Segment{bases[i], size, kUnknownTime});
  }
  p->segments.push_back(Segment{bases.back(), valid_bytes, newest});
  p->active_path = SegmentPath(*p, bases.back());
  if (int err = fs_->OpenForWrite(p->active_path, /*create=*/false, &p->fd); err != 0) {
    return Status::IoError("open " + p->active_path + ": " + std::strerror(err));
  }
  p->active_bytes = valid_bytes;
  p->file_bytes = file_bytes;
  p->synced_bytes = valid_bytes;
  p->active_newest_ns = newest;
  p->written_end = bases.back() + records;
  p->next_offset = p->written_end;
  p->synced_end = p->written_end;
  p->durable_end.store(p->written_end, std::memory_order_release);
  p->start_offset.store(bases.front(), std::memory_order_release);
  return Status::Ok();
}

Result<std::string> SegmentLog::TailDamage(const Partition& p, const std::string& path,
                                           uint64_t cut_byte, uint64_t file_size,
                                           uint64_t cut_offset, uint64_t* fill_to) const {
  // What follows the invalid record: the valid records with later offsets, found by trying
  // every byte position (the invalid record's own length field may be what is damaged).
  JOULE_ASSIGN_OR_RETURN(int fd, OpenForRead(path));
  std::string tail(file_size - cut_byte, '\0');
  Result<size_t> read = ReadAt(fd, cut_byte, tail.data(), tail.size(), path);
  CloseFd(fd);
  if (!read.ok()) return read.status();
  tail.resize(*read);
  const std::string_view view(tail);
  uint64_t found = 0, first_at = 0, end_at = 0, first_offset = 0, last_offset = 0;
  for (size_t pos = 1; pos + kRecordHeaderBytes <= view.size();) {
    const uint64_t offset = RecordHeaderOffset(view.substr(pos));
    DecodedRecord rec;
    if (offset >= cut_offset && offset - cut_offset <= view.size() / kRecordHeaderBytes &&
        DecodeRecord(view.substr(pos), offset, &rec) == DecodeResult::kOk) {
      if (found == 0) {
        first_at = pos;
        first_offset = offset;
      }
      ++found;
      last_offset = offset;
      end_at = pos + rec.size;
      pos += rec.size;
      continue;
    }
    ++pos;
  }
  const std::string following = found == 0 ? std::string()
                                           : std::to_string(found) + " valid records (offsets " +
                                                 std::to_string(first_offset) + " to " +
                                                 std::to_string(last_offset) + ", to byte " +
                                                 std::to_string(cut_byte + end_at) + ") follow it";

  // 1. A durable checkpoint past the cut: the records it passed were acknowledged
  // (consumers read only durable records), so they cannot be a torn tail.
  std::string passed_by;
  uint64_t passed = cut_offset;
  for (const LogOptions::ConsumerCheckpoint& c : options_.checkpoints) {
    if (p.id < c.offsets.size() && c.offsets[p.id] > passed) {
      passed = c.offsets[p.id];
      passed_by = c.name;
    }
  }
  if (passed > cut_offset) {
    *fill_to = passed;
    return (following.empty() ? std::string() : following + "; ") + "the checkpoint " + passed_by +
           " already passed offset " + std::to_string(passed) + ", so the " +
           std::to_string(passed - cut_offset) + " records from offset " +
           std::to_string(cut_offset) + " to it were acknowledged";
  }
  if (found == 0) return std::string();  // nothing valid after it: a torn tail
  // 2. A torn tail is what the log had written but not yet fdatasynced: the rounds in
  // flight, whose bytes plus those queued never exceed max_pending_bytes (Admit; a lone
  // larger batch errs on the side of refusing). Valid records ending farther than that
  // past the cut were written after bytes that had been synced.
  if (end_at > options_.max_pending_bytes) {
    return following + ", " + std::to_string(end_at) +
           " bytes past the damage: more than the log ever has written but not synced "
           "(max_pending_bytes " +
           std::to_string(options_.max_pending_bytes) + "), so they were acknowledged";
  }
  // 3. A torn write leaves unwritten sectors: the bytes a round wrote over (the pre-written
  // zeros, or past the file's end) read back as zeros, whole 512-byte sectors at a time
  // (the sector of the first valid record after it was written). An invalid record with a
  // non-zero byte in every sector it shares with no valid record was written whole, and
  // then damaged.
  constexpr uint64_t kSector = 512;
  const uint64_t gap_begin = cut_byte;
  const uint64_t gap_end = cut_byte + first_at;
  const uint64_t checked_end = gap_end / kSector * kSector;
  for (uint64_t s = gap_begin / kSector * kSector; s < checked_end; s += kSector) {
    const uint64_t b = std::max(s, gap_begin);
    const uint64_t e = std::min(s + kSector, gap_end);
    const std::string_view bytes = view.substr(b - cut_byte, e - b);
    if (bytes.find_first_not_of('\0') == std::string_view::npos) return std::string();
  }
  return following + ", and the " + std::to_string(first_at) +
         " bytes before them hold no unwritten (zero) sector, so no torn write explains them: "
         "they were acknowledged";
}

Result<uint64_t> SegmentLog::WriteFillers(const std::string& path, uint64_t at, uint64_t from,
                                          uint64_t to) {
  std::string bytes;
  const int64_t now = clock_->NowNanos();
  for (uint64_t o = from; o < to; ++o) EncodeRecord(o, now, std::string_view(), &bytes);
  int fd = -1;
  if (int err = fs_->OpenForWrite(path, /*create=*/false, &fd); err != 0) {
    return Status::IoError("open " + path + ": " + std::strerror(err));
  }
  int err = fs_->WriteAt(fd, at, bytes.data(), bytes.size());
  if (err == 0) err = fs_->DataSync(fd);
  fs_->Close(fd);
  if (err != 0) return Status::IoError("write " + path + ": " + std::strerror(err));
  return static_cast<uint64_t>(bytes.size());
}

Status SegmentLog::VerifySealed(Partition* p, uint64_t base, uint64_t end) {
  std::string path = SegmentPath(*p, base);
  JOULE_ASSIGN_OR_RETURN(int fd, OpenForRead(path));
  SegmentScanner scanner(fd, base, path);
  DecodedRecord rec;
  SegmentScanner::Step step;
  while ((step = scanner.Next(&rec)) == SegmentScanner::Step::kRecord) {
  }
  if (step == SegmentScanner::Step::kIoError) return scanner.io_status();
  if (step == SegmentScanner::Step::kInvalid) {
    return Status::Corruption("log segment " + path + ": " + DecodeResultName(scanner.reason()) +
                              " at byte " + std::to_string(scanner.valid_bytes()) + " (offset " +
                              std::to_string(scanner.next_offset()) + ")");
  }
  if (scanner.next_offset() != end) {
    return Status::Corruption("log segment " + path + " ends at offset " +
                              std::to_string(scanner.next_offset()) +
                              " but the next segment starts at " + std::to_string(end));
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------
// Appends and the writer thread

Status SegmentLog::Append(uint32_t partition, std::vector<std::string> records,
                          DurableCallback cb) {
  RecordBatch batch;
  for (const std::string& r : records) batch.Add(r);
  return AppendBatch(partition, std::move(batch), std::move(cb));
}

Status SegmentLog::CheckBatch(uint32_t partition, const RecordBatch& records,
                              uint64_t* bytes) const {
  if (partition >= options_.partitions) {
    return Status::InvalidArgument("log partition " + std::to_string(partition) + " out of range");
  }
  if (records.empty()) return Status::InvalidArgument("empty log append");
  *bytes = 0;
  for (size_t i = 0; i < records.size(); ++i) {
    const size_t size = records[i].size();
    if (size > kMaxPayloadBytes) {
      return Status::InvalidArgument("log record of " + std::to_string(size) +
                                     " bytes is over the limit");
    }
    *bytes += kRecordHeaderBytes + size;
  }
  return Status::Ok();
}

Status SegmentLog::Admit(uint64_t bytes) {
  if (stop_) return Status::Unavailable("log is closing");
  if (pending_bytes_ > 0 && pending_bytes_ + bytes > options_.max_pending_bytes) {
    rejected_appends_->Inc();
    return Status::Unavailable("log has " + std::to_string(pending_bytes_) +
                               " bytes pending, over its limit");
  }
  return Status::Ok();
}

Status SegmentLog::AppendBatch(uint32_t partition, RecordBatch records, DurableCallback cb) {
  uint64_t bytes = 0;
  JOULE_RETURN_IF_ERROR(CheckBatch(partition, records, &bytes));
  return Enqueue(Request{partition, 0, clock_->NowNanos(), bytes, std::move(records), std::move(cb),
                         std::chrono::steady_clock::now(), nullptr});
}

Status SegmentLog::Enqueue(Request req) {
  bool wake;
  {
    std::lock_guard<std::mutex> l(mu_);
    JOULE_RETURN_IF_ERROR(Admit(req.bytes));
    Partition& p = *parts_[req.partition];
    req.first = p.next_offset;
    p.next_offset += req.records.size();
    pending_bytes_ += req.bytes;
    pending_bytes_gauge_->Set(static_cast<double>(pending_bytes_));
    ++appended_seq_;
    wake = queue_.empty();
    queue_.push_back(std::move(req));
  }
  if (wake) writer_cv_.notify_one();
  return Status::Ok();
}

Status SegmentLog::AppendGroup(std::vector<PartitionBatch> batches, GroupCallback cb) {
  if (batches.empty()) return Status::InvalidArgument("empty log append group");
  if (batches.size() == 1) {
    // One partition (an MQTT message, a device's own batch): a plain request with the
    // callback as given (no shared group state, no wrapper: this runs per MQTT message).
    PartitionBatch& b = batches.front();
    uint64_t bytes = 0;
    JOULE_RETURN_IF_ERROR(CheckBatch(b.partition, b.records, &bytes));
    return Enqueue(Request{b.partition, 0, clock_->NowNanos(), bytes, std::move(b.records), nullptr,
                           std::chrono::steady_clock::now(), std::move(cb)});
  }
  std::vector<uint64_t> sizes(batches.size());
  std::vector<bool> seen(options_.partitions, false);
  uint64_t total = 0;
  for (size_t i = 0; i < batches.size(); ++i) {
    JOULE_RETURN_IF_ERROR(CheckBatch(batches[i].partition, batches[i].records, &sizes[i]));
    if (seen[batches[i].partition]) {
      return Status::InvalidArgument("log append group has partition " +
                                     std::to_string(batches[i].partition) + " twice");
    }
    seen[batches[i].partition] = true;
    total += sizes[i];
  }
  // The group's requests are queued together, so they are in the same round: all of them
  // complete, or all are refused (FailRound). Callbacks run on the writer thread only.
  struct Group {
    size_t remaining = 0;
    Status status;
    GroupCallback cb;
  };
  auto group = std::make_shared<Group>();
  group->remaining = batches.size();
  group->cb = std::move(cb);
  auto done = [group](Status s, model::LogOffset) {
    if (!s.ok() && group->status.ok()) group->status = std::move(s);
    if (--group->remaining == 0 && group->cb) group->cb(group->status);
  };
  const int64_t now_ns = clock_->NowNanos();
  const auto enqueued = std::chrono::steady_clock::now();
  bool wake;
  {
    std::lock_guard<std::mutex> l(mu_);
    JOULE_RETURN_IF_ERROR(Admit(total));
    wake = queue_.empty();
    for (size_t i = 0; i < batches.size(); ++i) {
      Partition& p = *parts_[batches[i].partition];
      Request req{p.id, p.next_offset, now_ns, sizes[i], std::move(batches[i].records),
                  done, enqueued,      nullptr};
      p.next_offset += req.records.size();
      queue_.push_back(std::move(req));
    }
    pending_bytes_ += total;
    pending_bytes_gauge_->Set(static_cast<double>(pending_bytes_));
    appended_seq_ += batches.size();
  }
  if (wake) writer_cv_.notify_one();
  return Status::Ok();
}

namespace {
// Below this many pending bytes the writer waits the group-commit window before a round.
constexpr uint64_t kGroupCommitWindowBytes = 1 << 20;
}  // namespace

void SegmentLog::WriterLoop() {
  SetUpThread("joule-log-write", 0);
  using SteadyClock = std::chrono::steady_clock;
  const bool periodic = options_.retention_interval_ns > 0;
  const auto interval = std::chrono::nanoseconds(options_.retention_interval_ns);
  const size_t max_inflight = std::max<uint32_t>(options_.max_rounds_in_flight, 1);
  auto next_retention = SteadyClock::now() + interval;
  std::vector<Request> round;
  for (;;) {
    {
      std::unique_lock<std::mutex> l(mu_);
      // Wake for: the oldest round's syncs done (complete it), queued work while fewer
      // than max_inflight rounds are in flight, stop, or retention.
      bool retention_due = false;
      for (;;) {
        if (OldestRoundSynced()) break;
        if (!queue_.empty() && inflight_.size() < max_inflight) break;
        if (stop_ && queue_.empty() && inflight_.empty()) break;
        if (periodic && queue_.empty() && inflight_.empty()) {
          if (writer_cv_.wait_until(l, next_retention) == std::cv_status::timeout) {
            retention_due = true;
            break;
          }
        } else {
          writer_cv_.wait(l);
        }
      }
      if (OldestRoundSynced()) {
        std::unique_ptr<Round> done = std::move(inflight_.front());
        inflight_.pop_front();
        l.unlock();
        CompleteRound(done.get());
        continue;
      }
      if (!retention_due) {
        if (queue_.empty()) break;  // stop_, and nothing queued or in flight
        // Group-commit window (LogOptions::group_commit_window_ns). Appends to a non-empty
        // queue do not notify, so this waits the whole window unless the log stops, a
        // Flush() waits or the window is ended (shutdown); a round whose syncs finish
        // meanwhile is completed at once.
        auto window_over = [this] { return stop_ || window_ended_ || flushes_waiting_ > 0; };
        if (options_.fsync && options_.group_commit_window_ns > 0 && !window_over() &&
            pending_bytes_ < kGroupCommitWindowBytes) {
          const auto w0 = SteadyClock::now();
          const auto deadline = w0 + std::chrono::nanoseconds(options_.group_commit_window_ns);
          while (!window_over()) {
            if (OldestRoundSynced()) {
              std::unique_ptr<Round> done = std::move(inflight_.front());
              inflight_.pop_front();
              l.unlock();
              CompleteRound(done.get());
              l.lock();
              continue;
            }
            if (!writer_cv_.wait_until(l, deadline,
                                       [&] { return window_over() || OldestRoundSynced(); })) {
              break;
            }
          }
          phase_window_->Observe(SecondsSince(w0));
        }
        round.swap(queue_);
      }
    }
    if (!round.empty()) {
      CommitRound(&round, SteadyClock::now());
      round.clear();
    }
    if (periodic && SteadyClock::now() >= next_retention) {
      Status st = EnforceRetention();
      if (!st.ok()) logging::Error("log: retention failed", {{"error", st.ToString()}});
      next_retention = SteadyClock::now() + interval;
    }
  }
}

int SegmentLog::WriteBuffer(Partition* p) {
  if (p->buffer.empty()) return 0;
  const uint64_t end = p->active_bytes;
  const uint64_t pos = end - p->buffer.size();
  // Never into bytes a pre-write is zero-filling (it is far ahead; this rarely waits).
  if (end > p->file_bytes) ReapPrewrite(p, /*wait=*/true);
  if (int err = fs_->WriteAt(p->fd, pos, p->buffer.data(), p->buffer.size()); err != 0) {
    if (!IsNoSpace(err)) FatalIo("write", p->active_path, err);
    return err;
  }
  p->buffer.clear();
  p->file_bytes = std::max(p->file_bytes, end);
  return 0;
}

void SegmentLog::MaybePrewrite(Partition* p) {
  if (prewrite_pool_ == nullptr) return;
  ReapPrewrite(p, /*wait=*/false);
  if (p->prewrite_busy || p->prewrite_off) return;
  // As far ahead as the segment already holds records, between 64 KiB and prewrite_bytes:
  // a log that writes little (a test, a quiet server, a reopened log) pre-writes little,
  // a busy one reaches the full window after that many bytes of records.
  constexpr uint64_t kMinWindow = 64 * 1024;
  const uint64_t window = std::min(options_.prewrite_bytes, std::max(kMinWindow, p->active_bytes));
  const uint64_t cap = options_.segment_bytes;  // a roll comes before the data passes it
  if (p->file_bytes >= cap || p->file_bytes - p->active_bytes >= window / 2) return;
  constexpr uint64_t kPage = 4096;
  const uint64_t to = std::min(cap, (p->active_bytes + window + kPage - 1) / kPage * kPage);
  if (to <= p->file_bytes) return;
  {
    std::lock_guard<std::mutex> l(mu_);
    p->prewrite_busy = true;
    p->prewrite_done = false;
    p->prewrite_error = 0;
    p->prewrite_to = to;
  }
  prewrite_pool_->Submit([this, p, from = p->file_bytes, to, path = p->active_path] {
    PrewriteJob(p, from, to, path);
  });
}

void SegmentLog::PrewriteJob(Partition* p, uint64_t from, uint64_t to, const std::string& path) {
  // Through a file description of its own: Linux reports a writeback error to each open
  // description once. Had this fdatasync shared the rounds' description, it could take the
  // error of a round's pages, and that round's fdatasync would then return 0 and be
  // acknowledged. The rounds' description was opened before any of their pages were
  // written, so it reports every such error whatever this one saw.
  int fd = -1;
  int err = fs_->OpenForWrite(path, /*create=*/false, &fd);
  if (err == 0) {
    err = fs_->WriteZeros(fd, from, to - from);
    if (err != 0) {
      if (!IsNoSpace(err)) FatalIo("write", path, err);
      // The writer writes nothing at or past `from` until this is reaped.
      if (int e = fs_->Truncate(fd, from); e != 0) FatalIo("ftruncate", path, e);
    } else if (int e = fs_->SyncZeros(fd); e != 0) {
      FatalIo("fdatasync", path, e);  // never retried, fatal like a round's
    } else {
      prewritten_bytes_->Inc(to - from);
    }
    fs_->Close(fd);
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    p->prewrite_done = true;
    p->prewrite_error = err;
  }
  prewrite_cv_.notify_all();
}

void SegmentLog::ReapPrewrite(Partition* p, bool wait) {
  int err;
  uint64_t to;
  {
    std::unique_lock<std::mutex> l(mu_);
    if (!p->prewrite_busy) return;
    if (wait) {
      prewrite_cv_.wait(l, [p] { return p->prewrite_done; });
    } else if (!p->prewrite_done) {
      return;
    }
    p->prewrite_busy = false;
    err = p->prewrite_error;
    to = p->prewrite_to;
  }
  if (err != 0) {
    p->prewrite_off = true;  // a full disk: try again in the next segment
    logging::Warn("log: pre-writing the segment's tail failed; the file grows instead",
                  {{"segment", p->active_path}, {"error", std::strerror(err)}});
    return;
  }
  p->file_bytes = to;
}

void SegmentLog::SealSync(Partition* p, uint64_t end, bool force) {
  if (options_.fsync && (p->unsynced_records > 0 || force)) {
    auto t0 = std::chrono::steady_clock::now();
    // Never retried: after a failed fsync the kernel may have dropped the dirty pages.
    if (int err = fs_->DataSync(p->fd); err != 0) FatalIo("fdatasync", p->active_path, err);
    fsync_latency_->Observe(SecondsSince(t0));
    if (p->unsynced_records > 0) {
      records_per_fsync_->Observe(static_cast<double>(p->unsynced_records));
      bytes_per_fsync_->Observe(static_cast<double>(p->unsynced_bytes));
    }
  }
  p->unsynced_records = 0;
  p->unsynced_bytes = 0;
  p->synced_bytes = p->active_bytes;
  p->synced_end = end;
}

void SegmentLog::SyncRoundFile(Round* r, size_t i) {
  Round::File& f = r->files[i];
  // A slow disk, for tests of what waits for durability (src/common/README.md).
  while (TestHeld("log.sync")) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  auto t0 = std::chrono::steady_clock::now();
  // Never retried: after a failed fsync the kernel may have dropped the dirty pages.
  if (int err = fs_->DataSync(f.fd); err != 0) FatalIo("fdatasync", f.p->active_path, err);
  const auto t1 = std::chrono::steady_clock::now();
  f.sync_seconds = std::chrono::duration<double>(t1 - t0).count();
  bool last;
  {
    std::lock_guard<std::mutex> l(mu_);
    last = --r->syncs_pending == 0;
    if (last) r->synced = t1;
  }
  if (last) writer_cv_.notify_all();
}

void SegmentLog::DrainRounds() {
  std::unique_lock<std::mutex> l(mu_);
  while (!inflight_.empty()) {
    writer_cv_.wait(l, [this] { return OldestRoundSynced(); });
    std::unique_ptr<Round> done = std::move(inflight_.front());
    inflight_.pop_front();
    l.unlock();
    CompleteRound(done.get());
    l.lock();
  }
}

int SegmentLog::Roll(Partition* p, uint64_t new_base) {
  // Seal: the old segment is complete and durable before its successor exists, so a crash
  // can only tear the active segment (docs/formats/log.md, "Write protocol"). Rounds in
  // flight complete first: their syncs use the old segment's descriptor.
  DrainRounds();
  if (int err = WriteBuffer(p); err != 0) return err;
  // A sealed segment ends at its last record: its pre-written tail is cut before the sync.
  ReapPrewrite(p, /*wait=*/true);
  SealSync(p, new_base, /*force=*/CutTail(p));
  std::string path = SegmentPath(*p, new_base);
  int fd = -1;
  if (int err = fs_->OpenForWrite(path, /*create=*/true, &fd); err != 0) {
    if (!IsNoSpace(err) && !IsOutOfDescriptors(err)) FatalIo("create", path, err);
    return err;  // the old segment stays active; the next round rolls again
  }
  if (options_.fsync) {
    if (int err = fs_->SyncDir(p->dir); err != 0) {
      // No descriptor to open the directory with (an fsync itself never fails so): the
      // creation is undone — the file is empty, and no directory fsync made it durable —
      // and the round refused like one that could not create the file.
      if (!IsOutOfDescriptors(err)) FatalIo("fsync dir", p->dir, err);
      fs_->Close(fd);
      if (::unlink(path.c_str()) != 0) FatalIo("unlink", path, errno);
      return err;
    }
  }
  fs_->Close(p->fd);
  {
    std::lock_guard<std::mutex> l(mu_);
    Segment& sealed = p->segments.back();
    sealed.bytes = p->active_bytes;
    sealed.newest_time_ns = p->active_newest_ns;
    p->segments.push_back(Segment{new_base, 0, kUnknownTime});
  }
  p->fd = fd;
  p->active_path = std::move(path);
  p->active_bytes = 0;
  p->file_bytes = 0;
  p->prewrite_off = false;
  p->synced_bytes = 0;
  p->active_newest_ns = kUnknownTime;
  return 0;
}

void SegmentLog::CommitRound(std::vector<Request>* round,
                             std::chrono::steady_clock::time_point started) {
  constexpr size_t kMaxBuffer = 1 << 20;
  for (const Request& req : *round) {
    phase_queue_->Observe(std::chrono::duration<double>(started - req.enqueued).count());
  }
  uint64_t round_bytes = 0;
  uint64_t round_records = 0;
  std::vector<Partition*> touched;
  for (const Request& req : *round) {
    Partition* p = parts_[req.partition].get();
    if (!p->touched) {
      p->touched = true;
      p->round_bytes = 0;
      touched.push_back(p);
    }
    p->round_bytes += req.bytes;
  }
  int err = 0;
  // Rolls come before anything of the round is written: a segment the round would take
  // past segment_bytes is sealed with the records of earlier rounds only. So a refused
  // round has nothing in a sealed (synced) segment, and is cut off whole. A round bigger
  // than a segment goes into one segment of its own (docs/formats/log.md).
  for (Partition* p : touched) {
    if (p->active_bytes > 0 && p->active_bytes + p->round_bytes > options_.segment_bytes) {
      if ((err = Roll(p, p->written_end)) != 0) break;
    }
  }
  for (Request& req : *round) {
    if (err != 0) break;
    Partition* p = parts_[req.partition].get();
    uint64_t offset = req.first;
    for (size_t i = 0; i < req.records.size(); ++i) {
      const std::string_view payload = req.records[i];
      uint64_t size = kRecordHeaderBytes + payload.size();
      EncodeRecord(offset, req.append_time_ns, payload, &p->buffer);
      p->active_bytes += size;
      p->active_newest_ns = std::max(p->active_newest_ns, req.append_time_ns);
      p->unsynced_records += 1;
      p->unsynced_bytes += size;
      ++offset;
      if (p->buffer.size() >= kMaxBuffer && (err = WriteBuffer(p)) != 0) break;
    }
    if (err != 0) break;
    p->written_end = offset;
    round_bytes += req.bytes;
    round_records += req.records.size();
  }
  if (err == 0) {
    for (Partition* p : touched) {
      if ((err = WriteBuffer(p)) != 0) break;
    }
  }
  if (err == 0) {
    for (Partition* p : touched) MaybePrewrite(p);
  }
  if (err != 0) {
    // Rounds written before this one are complete and durable once their syncs return;
    // only then is everything past the last synced byte this round's, and cut.
    DrainRounds();
    FailRound(round, touched, err);
    return;
  }
  auto r = std::make_unique<Round>();
  r->written = std::chrono::steady_clock::now();
  phase_write_->Observe(std::chrono::duration<double>(r->written - started).count());
  r->requests = std::move(*round);
  round->clear();
  r->bytes = round_bytes;
  r->records = round_records;
  r->files.reserve(touched.size());
  for (Partition* p : touched) {
    p->touched = false;
    r->files.push_back(Round::File{p, p->fd, p->written_end, p->active_bytes, p->unsynced_records,
                                   p->unsynced_bytes});
    p->unsynced_records = 0;
    p->unsynced_bytes = 0;
  }
  size_t syncs = 0;
  if (options_.fsync) {
    for (const Round::File& f : r->files) syncs += f.records > 0 ? 1 : 0;
  }
  if (syncs == 0) {
    r->synced = r->written;
    if (inflight_.empty()) {  // only the writer thread adds rounds: no lock needed to look
      CompleteRound(r.get());
      return;
    }
  } else if (syncs > 1) {
    // Start writeback of every touched file before the fdatasyncs, so the data writes
    // overlap and the syncs after the first mostly find their work done.
    for (const Round::File& f : r->files) {
      if (f.records > 0) fs_->StartWriteback(f.fd);
    }
  }
  Round* raw = r.get();
  {
    std::lock_guard<std::mutex> l(mu_);
    raw->syncs_pending = syncs;
    inflight_.push_back(std::move(r));
  }
  if (syncs == 0) {
    writer_cv_.notify_all();
    return;
  }
  // Every file's fdatasync at once, on the pool; the last to return wakes the writer, which
  // completes the rounds in order. Meanwhile it writes the next round.
  for (size_t i = 0; i < raw->files.size(); ++i) {
    if (raw->files[i].records > 0) sync_pool_->Submit([this, raw, i] { SyncRoundFile(raw, i); });
  }
}

void SegmentLog::CompleteRound(Round* r) {
  for (Round::File& f : r->files) {
    Partition* p = f.p;
    if (options_.fsync && f.records > 0) {
      fsync_latency_->Observe(f.sync_seconds);
      records_per_fsync_->Observe(static_cast<double>(f.records));
      bytes_per_fsync_->Observe(static_cast<double>(f.record_bytes));
    }
    p->synced_bytes = f.bytes;
    p->synced_end = f.end;
  }
  if (options_.fsync) {
    phase_sync_->Observe(std::chrono::duration<double>(r->synced - r->written).count());
  }
  const auto completing = std::chrono::steady_clock::now();
  appended_records_->Inc(r->records);
  appended_bytes_->Inc(r->bytes);

  int recovered;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (const Round::File& f : r->files) {
      Partition* p = f.p;
      Segment& active = p->segments.back();
      active.bytes = f.bytes;
      active.newest_time_ns = p->active_newest_ns;
      p->durable_end.store(f.end, std::memory_order_release);
    }
    pending_bytes_ -= r->bytes;
    pending_bytes_gauge_->Set(static_cast<double>(pending_bytes_));
    recovered = std::exchange(refusing_err_, 0);
  }
  if (recovered != 0) {
    logging::Info("log: writes succeed again", {{"after", std::strerror(recovered)}});
  }

  for (Request& req : r->requests) {
    append_latency_->Observe(SecondsSince(req.enqueued));
    req.Fire(Status::Ok());
  }
  phase_callbacks_->Observe(SecondsSince(completing));
  // The readers (processors, archiver) are woken after the acknowledgements: on a busy
  // machine a woken reader can take the core from this thread before it has issued them.
  data_cv_.notify_all();
  {
    std::lock_guard<std::mutex> l(mu_);
    done_seq_ += r->requests.size();
  }
  flush_cv_.notify_all();
}

void SegmentLog::FailRound(std::vector<Request>* round, const std::vector<Partition*>& touched,
                           int err) {
  // Cut every touched segment back to its last synced byte: what this round wrote was never
  // acknowledged. (Nothing of it is in a sealed segment: rolls come before its writes.)
  for (Partition* p : touched) {
    p->buffer.clear();
    // The pre-written tail goes too (it is made again when there is space).
    ReapPrewrite(p, /*wait=*/true);
    if (p->active_bytes != p->synced_bytes || p->file_bytes != p->synced_bytes) {
      if (int e = fs_->Truncate(p->fd, p->synced_bytes); e != 0) {
        FatalIo("ftruncate", p->active_path, e);
      }
      // The cut must be durable before the refusals go out: the refused bytes may already
      // be on the disk (background writeback, a pre-write's or an earlier round's
      // fdatasync), and the file's size covering them is (the pre-written tail). Without
      // this, a power loss could bring back records whose requests were answered 503.
      if (options_.fsync) {
        if (int e = fs_->DataSync(p->fd); e != 0) FatalIo("fdatasync", p->active_path, e);
      }
    }
    p->file_bytes = p->synced_bytes;
    p->active_bytes = p->synced_bytes;
    p->written_end = p->synced_end;
    p->unsynced_records = 0;
    p->unsynced_bytes = 0;
  }
  // Requests queued meanwhile hold offsets past the cut (those of the touched partitions),
  // or belong to a group (AppendGroup) that may have a request behind the cut: refuse them
  // all, and hand out the offsets past the last written record again. Every round before
  // this one was completed, so that is each partition's durable end.
  std::vector<Request> refused;
  bool first_failure;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (Partition* p : touched) {
      p->touched = false;
      Segment& active = p->segments.back();
      active.bytes = p->active_bytes;
      active.newest_time_ns = p->active_newest_ns;
      p->cut_epoch.fetch_add(1, std::memory_order_release);
      p->durable_end.store(p->written_end, std::memory_order_release);
    }
    for (auto& p : parts_) p->next_offset = p->written_end;
    for (const Request& req : *round) pending_bytes_ -= req.bytes;
    for (const Request& req : queue_) pending_bytes_ -= req.bytes;
    refused.swap(queue_);
    pending_bytes_gauge_->Set(static_cast<double>(pending_bytes_));
    const int before = std::exchange(refusing_err_, err);
    first_failure = before != err;
    if (before == 0) refusing_since_ns_ = clock_->NowNanos();
  }
  data_cv_.notify_all();
  const bool no_descriptors = IsOutOfDescriptors(err);
  (no_descriptors ? no_descriptor_rounds_ : disk_full_rounds_)->Inc();
  if (first_failure) {
    logging::Error(no_descriptors
                       ? "log: out of file descriptors, refusing appends until a segment opens"
                       : "log: disk full, refusing appends until writes succeed again",
                   {{"error", std::strerror(err)}});
  }
  const Status st = Status::Unavailable(
      std::string(no_descriptors ? "log: out of file descriptors (" : "log: disk full (") +
      std::strerror(err) + "); nothing was stored; retry");
  for (std::vector<Request>* list : {round, &refused}) {
    for (Request& req : *list) {
      req.Fire(st);
    }
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    done_seq_ += round->size() + refused.size();
  }
  flush_cv_.notify_all();
}

Status SegmentLog::Flush() {
  std::unique_lock<std::mutex> l(mu_);
  uint64_t target = appended_seq_;
  ++flushes_waiting_;  // the writer commits without waiting out the window
  writer_cv_.notify_all();
  flush_cv_.wait(l, [&] { return done_seq_ >= target; });
  --flushes_waiting_;
  return Status::Ok();
}

void SegmentLog::EndGroupCommitWindow() {
  {
    std::lock_guard<std::mutex> l(mu_);
    window_ended_ = true;
  }
  writer_cv_.notify_all();
}

// ---------------------------------------------------------------------------------------
// Offsets and readers

model::LogOffset SegmentLog::DurableEnd(uint32_t partition) const {
  if (partition >= parts_.size()) return model::LogOffset{0};
  return model::LogOffset{parts_[partition]->durable_end.load(std::memory_order_acquire)};
}

model::LogOffset SegmentLog::StartOffset(uint32_t partition) const {
  if (partition >= parts_.size()) return model::LogOffset{0};
  return model::LogOffset{parts_[partition]->start_offset.load(std::memory_order_acquire)};
}

bool SegmentLog::WaitForData(uint32_t partition, model::LogOffset offset, int64_t timeout_ns) {
  if (partition >= parts_.size()) return false;
  const Partition& p = *parts_[partition];
  auto ready = [&] { return p.durable_end.load(std::memory_order_acquire) > offset.value; };
  if (ready()) return true;
  if (timeout_ns <= 0) return false;
  std::unique_lock<std::mutex> l(mu_);
  return data_cv_.wait_for(l, std::chrono::nanoseconds(timeout_ns), ready);
}

Result<SegmentLog::SegmentRef> SegmentLog::FindSegment(uint32_t partition, uint64_t offset) const {
  const Partition& p = *parts_[partition];
  std::lock_guard<std::mutex> l(mu_);
  const auto& segs = p.segments;
  if (offset < segs.front().base) {
    return Status::NotFound("log partition " + std::to_string(partition) + " offset " +
                            std::to_string(offset) + " was deleted by retention (start " +
                            std::to_string(segs.front().base) + ")");
  }
  auto it = std::upper_bound(segs.begin(), segs.end(), offset,
                             [](uint64_t o, const Segment& s) { return o < s.base; });
  --it;
  SegmentRef ref;
  ref.base = it->base;
  ref.end = std::next(it) == segs.end() ? kOpenEnd : std::next(it)->base;
  ref.path = SegmentPath(p, it->base);
  return ref;
}

Result<std::unique_ptr<LogReader>> SegmentLog::NewReader(uint32_t partition,
                                                         model::LogOffset from) {
  if (partition >= options_.partitions) {
    return Status::InvalidArgument("log partition " + std::to_string(partition) + " out of range");
  }
  uint64_t end;
  {
    std::lock_guard<std::mutex> l(mu_);
    end = parts_[partition]->next_offset;
  }
  if (from.value > end) {
    return Status::InvalidArgument("log partition " + std::to_string(partition) +
                                   " has no offset " + std::to_string(from.value) + " (end " +
                                   std::to_string(end) + ")");
  }
  uint64_t start = StartOffset(partition).value;
  if (from.value < start) {
    return Status::NotFound("log partition " + std::to_string(partition) + " offset " +
                            std::to_string(from.value) + " was deleted by retention (start " +
                            std::to_string(start) + ")");
  }
  return std::unique_ptr<LogReader>(std::make_unique<SegmentReader>(this, partition, from));
}

// ---------------------------------------------------------------------------------------
// Consumers and retention

void SegmentLog::RegisterConsumer(const std::string& name,
                                  const std::vector<uint32_t>& partitions) {
  std::lock_guard<std::mutex> l(consumers_mu_);
  auto [it, inserted] = consumers_.try_emplace(name, options_.partitions, std::nullopt);
  if (!inserted || partitions.empty()) return;
  for (auto& o : it->second) o = std::numeric_limits<uint64_t>::max();  // not read: no hold
  for (uint32_t p : partitions) {
    if (p < options_.partitions) it->second[p] = std::nullopt;
  }
}

void SegmentLog::SetConsumerOffset(const std::string& name, uint32_t partition,
                                   model::LogOffset committed) {
  if (partition >= options_.partitions) return;
  std::lock_guard<std::mutex> l(consumers_mu_);
  auto it = consumers_.try_emplace(name, options_.partitions, std::nullopt).first;
  it->second[partition] = committed.value;
}

uint64_t SegmentLog::MinCommitted(uint32_t partition) const {
  std::lock_guard<std::mutex> l(consumers_mu_);
  uint64_t min = std::numeric_limits<uint64_t>::max();
  for (const auto& [name, offsets] : consumers_) {
    min = std::min(min, offsets[partition].value_or(0));
  }
  return min;
}

Status SegmentLog::EnforceRetention() {
  if (options_.retention_bytes == 0 && options_.retention_age_ns <= 0) return Status::Ok();
  std::lock_guard<std::mutex> rl(retention_mu_);
  int64_t now = clock_->NowNanos();
  for (auto& p : parts_) JOULE_RETURN_IF_ERROR(EnforcePartitionRetention(p.get(), now));
  return Status::Ok();
}

Result<int64_t> SegmentLog::ScanNewestTime(const std::string& path, uint64_t base) const {
  JOULE_ASSIGN_OR_RETURN(int fd, OpenForRead(path));
  SegmentScanner scanner(fd, base, path);
  DecodedRecord rec;
  SegmentScanner::Step step;
  int64_t newest = kUnknownTime;
  while ((step = scanner.Next(&rec)) == SegmentScanner::Step::kRecord) {
    newest = std::max(newest, rec.append_time_ns);
  }
  if (step == SegmentScanner::Step::kIoError) return scanner.io_status();
  if (step == SegmentScanner::Step::kInvalid) {
    return Status::Corruption("log segment " + path + ": " + DecodeResultName(scanner.reason()) +
                              " at byte " + std::to_string(scanner.valid_bytes()));
  }
  return newest;
}

Status SegmentLog::EnforcePartitionRetention(Partition* p, int64_t now_ns) {
  const uint64_t min_committed = MinCommitted(p->id);
  uint64_t deleted = 0;
  Status result;
  for (;;) {
    Segment front;
    uint64_t next_base;
    uint64_t total = 0;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (p->segments.size() < 2) break;  // never the active segment
      front = p->segments[0];
      next_base = p->segments[1].base;
      for (const Segment& s : p->segments) total += s.bytes;
    }
    // Every record of the segment must be below every consumer's committed offset.
    if (next_base > min_committed) break;
    std::string path = SegmentPath(*p, front.base);
    bool expired = options_.retention_bytes > 0 && total > options_.retention_bytes;
    if (!expired && options_.retention_age_ns > 0) {
      int64_t newest = front.newest_time_ns;
      if (newest == kUnknownTime) {
        auto scanned = ScanNewestTime(path, front.base);
        if (!scanned.ok()) {
          result = scanned.status();
          break;
        }
        newest = *scanned;
        std::lock_guard<std::mutex> l(mu_);
        if (p->segments.front().base == front.base) p->segments.front().newest_time_ns = newest;
      }
      expired = newest < now_ns - options_.retention_age_ns;
    }
    if (!expired) break;
    {
      std::lock_guard<std::mutex> l(mu_);
      p->segments.pop_front();
      p->start_offset.store(p->segments.front().base, std::memory_order_release);
    }
    if (::unlink(path.c_str()) != 0) {
      result = ErrnoStatus("unlink", path);
      break;
    }
    ++deleted;
    segments_deleted_->Inc();
    logging::Info("log: retention deleted segment",
                  {{"partition", std::to_string(p->id)}, {"segment", path}});
  }
  if (deleted > 0 && options_.fsync) {
    Status st = SyncDir(p->dir);
    if (result.ok()) result = st;
  }
  return result;
}

Log::WriteFault SegmentLog::write_fault() const {
  std::lock_guard<std::mutex> l(mu_);
  WriteFault f;
  if (refusing_err_ == 0) return f;
  f.refusing = true;
  f.since_ns = refusing_since_ns_;
  f.error = std::strerror(refusing_err_);
  return f;
}

}  // namespace joule::log

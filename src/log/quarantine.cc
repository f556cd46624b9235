#include "log/quarantine.h"

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <string_view>

#include "common/clock.h"
#include "common/json_writer.h"
#include "common/logging.h"
#include "common/metrics.h"
#include "common/time_format.h"
#include "log/file_io.h"

namespace joule::log {
namespace {

// Writes `data` to a new file and fsyncs it.
Status WriteNewFile(const std::string& path, std::string_view data) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus("create", path);
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      Status st = ErrnoStatus("write", path);
      ::close(fd);
      return st;
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    Status st = ErrnoStatus("fsync", path);
    ::close(fd);
    return st;
  }
  ::close(fd);
  return Status::Ok();
}

// The whole file (a sealed segment: at most segment_bytes plus one record).
Result<std::string> ReadWholeFile(const std::string& path) {
  JOULE_ASSIGN_OR_RETURN(int fd, OpenForRead(path));
  std::string out;
  char buf[1 << 16];
  uint64_t at = 0;
  while (true) {
    Result<size_t> n = ReadAt(fd, at, buf, sizeof buf, path);
    if (!n.ok()) {
      CloseFd(fd);
      return n.status();
    }
    if (*n == 0) break;
    out.append(buf, *n);
    at += *n;
  }
  CloseFd(fd);
  return out;
}

// Bytes [from, to) of a file.
Result<std::string> ReadRange(const std::string& path, uint64_t from, uint64_t to) {
  JOULE_ASSIGN_OR_RETURN(int fd, OpenForRead(path));
  std::string out(to - from, '\0');
  Result<size_t> n = ReadAt(fd, from, out.data(), out.size(), path);
  CloseFd(fd);
  if (!n.ok()) return n.status();
  out.resize(*n);
  return out;
}

}  // namespace

std::string CorruptionReportJson(const CorruptionReport& r) {
  JsonWriter w;
  w.BeginObject();
  w.Key("partition");
  w.Uint(r.partition);
  w.Key("offset");
  w.Uint(r.offset);
  w.Key("records_unreadable");
  w.Uint(r.records_unreadable);
  w.Key("segment");
  w.String(r.segment);
  w.Key("quarantined");
  w.String(r.quarantined);
  w.Key("byte");
  w.Uint(r.byte);
  w.Key("detected");
  w.String(FormatRfc3339Millis(r.detected_ns));
  w.Key("error");
  w.String(r.error);
  w.EndObject();
  return w.Take();
}

Quarantine::Quarantine(std::string dir, const Clock* clock, MetricsRegistry* metrics)
    : dir_(std::move(dir)),
      clock_(clock),
      corrupt_records_(metrics->GetCounter(
          "joule_log_corrupt_records_total",
          "Damaged log records met by a reader at run time (once per record); the reader's "
          "partition stops there")),
      quarantined_segments_(metrics->GetCounter(
          "joule_quarantined_segments_total",
          "Damaged log segments copied to {data_dir}/quarantine at run time")) {}

void Quarantine::Report(CorruptionReport report) {
  {
    std::lock_guard lock(mu_);
    if (!seen_.emplace(report.partition, report.offset).second) return;
  }
  report.detected_ns = clock_->NowNanos();
  corrupt_records_->Inc();
  if (!dir_.empty()) report.quarantined = CopyOut(report);
  if (!report.quarantined.empty()) quarantined_segments_->Inc();
  logging::Error(
      "log corruption: acknowledged records cannot be read; the partition's "
      "consumers stop here (data damaged on disk; see docs/RELIABILITY.md)",
      {{"partition", std::to_string(report.partition)},
       {"segment", report.segment},
       {"offset", std::to_string(report.offset)},
       {"byte", std::to_string(report.byte)},
       {"records_unreadable", std::to_string(report.records_unreadable)},
       {"quarantined", report.quarantined},
       {"error", report.error}});
  std::lock_guard lock(mu_);
  reports_.push_back(std::move(report));
}

std::vector<CorruptionReport> Quarantine::reports() const {
  std::lock_guard lock(mu_);
  return reports_;
}

Result<std::string> Quarantine::SaveCut(const std::string& segment, uint64_t from_byte,
                                        uint64_t to_byte, const std::string& report_json) {
  if (dir_.empty()) return std::string();
  namespace fs = std::filesystem;
  const fs::path seg(segment);
  const std::string name = seg.parent_path().filename().string() + "-" + seg.stem().string() +
                           ".cut-at-" + std::to_string(from_byte) + "." +
                           std::to_string(clock_->NowNanos() / 1'000'000);
  const std::string copy = (fs::path(dir_) / (name + ".bin")).string();
  JOULE_RETURN_IF_ERROR(CreateDirs(dir_));
  JOULE_ASSIGN_OR_RETURN(std::string bytes, ReadRange(segment, from_byte, to_byte));
  JOULE_RETURN_IF_ERROR(WriteNewFile(copy, bytes));
  JOULE_RETURN_IF_ERROR(
      WriteNewFile((fs::path(dir_) / (name + ".json")).string(), report_json + "\n"));
  JOULE_RETURN_IF_ERROR(SyncDir(dir_));
  return copy;
}

std::string Quarantine::CopyOut(const CorruptionReport& report) {
  namespace fs = std::filesystem;
  const fs::path seg(report.segment);
  const std::string name = seg.parent_path().filename().string() + "-" + seg.stem().string() + "." +
                           std::to_string(report.detected_ns / 1'000'000);
  const std::string copy = (fs::path(dir_) / (name + seg.extension().string())).string();
  Status st = CreateDirs(dir_);
  Result<std::string> bytes = st.ok() ? ReadWholeFile(report.segment) : Result<std::string>(st);
  if (bytes.ok()) st = WriteNewFile(copy, *bytes);
  if (bytes.ok() && st.ok()) {
    CorruptionReport with_copy = report;
    with_copy.quarantined = copy;
    st = WriteNewFile((fs::path(dir_) / (name + ".json")).string(),
                      CorruptionReportJson(with_copy) + "\n");
  }
  if (bytes.ok() && st.ok()) st = SyncDir(dir_);
  if (!bytes.ok() || !st.ok()) {
    logging::Error(
        "log corruption: cannot quarantine the damaged segment",
        {{"segment", report.segment}, {"error", (bytes.ok() ? st : bytes.status()).ToString()}});
    return "";
  }
  return copy;
}

}  // namespace joule::log

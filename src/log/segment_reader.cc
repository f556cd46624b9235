#include "log/segment_reader.h"

#include <string>
#include <utility>

#include "log/file_io.h"
#include "log/segment_log.h"

namespace joule::log {

SegmentReader::SegmentReader(SegmentLog* log, uint32_t partition, model::LogOffset from)
    : log_(log), partition_(partition), position_(from.value) {}

Status SegmentReader::CorruptionAt(const char* what) {
  failed_ =
      Status::Corruption("log partition " + std::to_string(partition_) + " segment " +
                         scanner_->path() + " byte " + std::to_string(scanner_->valid_bytes()) +
                         " (offset " + std::to_string(position_) + "): " + what);
  CorruptionReport report;
  report.partition = partition_;
  report.segment = scanner_->path();
  report.offset = position_;
  report.byte = scanner_->valid_bytes();
  // Acknowledged records that cannot be read: the rest of this segment (up to the durable
  // end while it is the active one).
  const uint64_t end =
      segment_end_ != SegmentLog::kOpenEnd ? segment_end_ : log_->DurableEnd(partition_).value;
  report.records_unreadable = end > position_ ? end - position_ : 0;
  report.error = what;
  log_->ReportCorruption(std::move(report));
  return failed_;
}

Status SegmentReader::OpenSegment() {
  scanner_.reset();
  cut_epoch_ = log_->CutEpoch(partition_);
  JOULE_ASSIGN_OR_RETURN(SegmentLog::SegmentRef ref, log_->FindSegment(partition_, position_));
  JOULE_ASSIGN_OR_RETURN(int fd, OpenForRead(ref.path));
  scanner_ = std::make_unique<SegmentScanner>(fd, ref.base, ref.path);
  segment_base_ = ref.base;
  segment_end_ = ref.end;
  // Skip (and validate) the records before our position; sequential, in large chunks.
  DecodedRecord rec;
  while (scanner_->next_offset() < position_) {
    switch (scanner_->Next(&rec)) {
      case SegmentScanner::Step::kRecord:
        break;
      case SegmentScanner::Step::kIoError:
        return scanner_->io_status();
      case SegmentScanner::Step::kEnd:
        return CorruptionAt("segment ends before the reader's offset");
      case SegmentScanner::Step::kInvalid:
        return CorruptionAt(DecodeResultName(scanner_->reason()));
    }
  }
  return Status::Ok();
}

Result<size_t> SegmentReader::Next(size_t max_records, ReadBatch* out) {
  if (!failed_.ok()) return failed_;
  size_t n = 0;
  Status st = ReadInto(max_records, out, &n);
  // Records read before an error are returned (position_ is past them); the error comes
  // with the next call — Corruption is sticky (failed_), an I/O error is tried again.
  if (!st.ok() && n == 0) return st;
  return n;
}

Status SegmentReader::ReadInto(size_t max_records, ReadBatch* out, size_t* n) {
  const uint64_t durable = log_->DurableEnd(partition_).value;
  // Bytes past the durable end that the scanner buffered may have been cut off and
  // rewritten (a refused round on a full disk): start over from the file.
  if (scanner_ != nullptr && log_->CutEpoch(partition_) != cut_epoch_) scanner_.reset();
  DecodedRecord rec;
  bool refreshed = false;
  while (*n < max_records && position_ < durable) {
    if (scanner_ == nullptr || position_ >= segment_end_) JOULE_RETURN_IF_ERROR(OpenSegment());
    SegmentScanner::Step step = scanner_->Next(&rec);
    if (step == SegmentScanner::Step::kRecord) {
      out->Add(model::LogOffset{rec.offset}, rec.append_time_ns, rec.payload);
      ++position_;
      refreshed = false;
      ++*n;
      continue;
    }
    if (step == SegmentScanner::Step::kIoError) return scanner_->io_status();
    if (!refreshed) {
      // The record is durable, so it is whole in the file now; but the scanner may have
      // buffered its bytes before the writer wrote them (the pre-written zeros there, or
      // half of a record being copied). Read them again once before concluding anything.
      scanner_->Refresh();
      refreshed = true;
      continue;
    }
    if (step == SegmentScanner::Step::kEnd || (step == SegmentScanner::Step::kInvalid &&
                                               scanner_->reason() == DecodeResult::kIncomplete)) {
      // The segment may have been sealed since we opened it: move to the next one.
      JOULE_ASSIGN_OR_RETURN(SegmentLog::SegmentRef ref, log_->FindSegment(partition_, position_));
      if (ref.base != segment_base_) {
        JOULE_RETURN_IF_ERROR(OpenSegment());
        continue;
      }
      return CorruptionAt("durable record missing");
    }
    return CorruptionAt(DecodeResultName(scanner_->reason()));
  }
  return Status::Ok();
}

}  // namespace joule::log

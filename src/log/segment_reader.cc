#include "log/segment_reader.h"

#include <string>

#include "log/file_io.h"
#include "log/segment_log.h"

namespace joule::log {

SegmentReader::SegmentReader(SegmentLog* log, uint32_t partition, model::LogOffset from)
    : log_(log), partition_(partition), position_(from.value) {}

Status SegmentReader::CorruptionAt(const char* what) const {
  return Status::Corruption("log partition " + std::to_string(partition_) + " segment " +
                            scanner_->path() + " byte " + std::to_string(scanner_->valid_bytes()) +
                            " (offset " + std::to_string(position_) + "): " + what);
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

Result<size_t> SegmentReader::Next(size_t max_records, std::vector<LogRecord>* out) {
  const uint64_t durable = log_->DurableEnd(partition_).value;
  // Bytes past the durable end that the scanner buffered may have been cut off and
  // rewritten (a refused round on a full disk): start over from the file.
  if (scanner_ != nullptr && log_->CutEpoch(partition_) != cut_epoch_) scanner_.reset();
  size_t n = 0;
  DecodedRecord rec;
  while (n < max_records && position_ < durable) {
    if (scanner_ == nullptr || position_ >= segment_end_) JOULE_RETURN_IF_ERROR(OpenSegment());
    SegmentScanner::Step step = scanner_->Next(&rec);
    if (step == SegmentScanner::Step::kRecord) {
      out->push_back(
          LogRecord{model::LogOffset{rec.offset}, rec.append_time_ns, std::string(rec.payload)});
      ++position_;
      ++n;
      continue;
    }
    if (step == SegmentScanner::Step::kIoError) return scanner_->io_status();
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
  return n;
}

}  // namespace joule::log

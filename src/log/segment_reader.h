// SegmentReader: the LogReader of SegmentLog. Follows one partition across segment files,
// reading each sequentially in large chunks and validating every record (CRC and offset).
// It never returns a record at or beyond the partition's durable end. Not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "log/log.h"
#include "log/segment_scanner.h"

namespace joule::log {

class SegmentLog;

class SegmentReader final : public LogReader {
 public:
  SegmentReader(SegmentLog* log, uint32_t partition, model::LogOffset from);
  using LogReader::Next;
  Result<size_t> Next(size_t max_records, ReadBatch* out) override;
  model::LogOffset position() const override { return model::LogOffset{position_}; }

 private:
  // Next() without its error handling: appends to *out, counts in *n.
  Status ReadInto(size_t max_records, ReadBatch* out, size_t* n);
  // Opens the segment holding position_ and skips to position_ in it.
  Status OpenSegment();
  // Reports the damaged record to the log (quarantine) and makes the reader stop there:
  // every later Next() returns the same Corruption.
  Status CorruptionAt(const char* what);

  SegmentLog* log_;
  uint32_t partition_;
  uint64_t position_;
  std::unique_ptr<SegmentScanner> scanner_;
  uint64_t segment_base_ = 0;
  uint64_t segment_end_ = 0;  // SegmentLog::kOpenEnd while the segment was active
  uint64_t cut_epoch_ = 0;    // SegmentLog::CutEpoch when the scanner was opened
  Status failed_;             // sticky Corruption
};

}  // namespace joule::log

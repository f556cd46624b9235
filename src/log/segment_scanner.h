// SegmentScanner: sequential, buffered, validating reads of one segment file. Reads in
// large chunks (one pread per chunk, not per record) and re-reads past its buffer when the
// file grows, so it can follow the active segment (whose pre-written zero tail it reports
// as the end; Refresh() drops bytes buffered before they were written). Not thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/status.h"
#include "log/segment_format.h"

namespace joule::log {

class SegmentScanner {
 public:
  enum class Step {
    kRecord,   // *record is valid until the next call
    kEnd,      // no bytes after the last record (so far), or a zero header: the start of a
               // pre-written tail (IsZeroHeader; docs/formats/log.md)
    kInvalid,  // bytes follow that are not a valid record; see reason()
    kIoError,  // see io_status()
  };

  // Takes ownership of `fd`; the file's first record has offset `base_offset`.
  SegmentScanner(int fd, uint64_t base_offset, std::string path);
  ~SegmentScanner();
  SegmentScanner(const SegmentScanner&) = delete;
  SegmentScanner& operator=(const SegmentScanner&) = delete;

  Step Next(DecodedRecord* record);

  // Forgets the bytes buffered after the last record returned, so that the next call reads
  // them from the file again. For readers of the active segment: bytes buffered before the
  // writer overwrote the pre-written tail there are stale (zeros or a half-copied record).
  void Refresh() { len_ = pos_; }

  // The offset of the record the next call expects.
  uint64_t next_offset() const { return next_offset_; }
  // File position just after the last valid record returned.
  uint64_t valid_bytes() const { return buf_file_pos_ + pos_; }
  DecodeResult reason() const { return reason_; }
  const Status& io_status() const { return io_status_; }
  const std::string& path() const { return path_; }

 private:
  // Tries to have `need` unread bytes buffered; false on I/O error.
  bool Fill(size_t need);
  size_t available() const { return len_ - pos_; }

  int fd_;
  std::string path_;
  uint64_t next_offset_;
  std::string buf_;
  uint64_t buf_file_pos_ = 0;  // file position of buf_[0]
  size_t pos_ = 0;             // next unread byte in buf_
  size_t len_ = 0;             // bytes of buf_ holding file data
  DecodeResult reason_ = DecodeResult::kOk;
  Status io_status_;
};

}  // namespace joule::log

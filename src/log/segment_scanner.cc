#include "log/segment_scanner.h"

#include <algorithm>
#include <cstring>

#include "log/file_io.h"

namespace joule::log {
namespace {
constexpr size_t kChunkBytes = 256 * 1024;
}  // namespace

SegmentScanner::SegmentScanner(int fd, uint64_t base_offset, std::string path)
    : fd_(fd), path_(std::move(path)), next_offset_(base_offset) {}

SegmentScanner::~SegmentScanner() { CloseFd(fd_); }

bool SegmentScanner::Fill(size_t need) {
  if (available() >= need) return true;
  // Compact: move the unread tail to the front.
  if (pos_ > 0) {
    size_t rest = available();
    if (rest > 0) std::memmove(buf_.data(), buf_.data() + pos_, rest);
    buf_file_pos_ += pos_;
    pos_ = 0;
    len_ = rest;
  }
  if (buf_.size() < std::max(need, kChunkBytes)) buf_.resize(std::max(need, kChunkBytes));
  // Read as much as fits (a whole chunk), at least until `need` is met or EOF.
  auto r = ReadAt(fd_, buf_file_pos_ + len_, buf_.data() + len_, buf_.size() - len_, path_);
  if (!r.ok()) {
    io_status_ = r.status();
    return false;
  }
  len_ += *r;
  return true;
}

SegmentScanner::Step SegmentScanner::Next(DecodedRecord* record) {
  if (available() < kRecordHeaderBytes && !Fill(kRecordHeaderBytes)) return Step::kIoError;
  if (available() == 0) return Step::kEnd;
  // Fewer than a header's bytes are available only at the file's end.
  if (IsZeroHeader(std::string_view(buf_.data() + pos_, available()))) return Step::kEnd;
  if (available() >= kRecordHeaderBytes) {
    // Peek the length to know how much to buffer.
    const auto* p = reinterpret_cast<const uint8_t*>(buf_.data() + pos_ + 4);
    uint32_t length = static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
                      (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
    if (length <= kMaxPayloadBytes && available() < kRecordHeaderBytes + length &&
        !Fill(kRecordHeaderBytes + length)) {
      return Step::kIoError;
    }
  }
  DecodeResult r =
      DecodeRecord(std::string_view(buf_.data() + pos_, available()), next_offset_, record);
  if (r != DecodeResult::kOk) {
    reason_ = r;
    return Step::kInvalid;
  }
  pos_ += record->size;
  ++next_offset_;
  return Step::kRecord;
}

}  // namespace joule::log

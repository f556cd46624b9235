// The record framing and file naming of log segments (docs/formats/log.md). Pure functions,
// no I/O, so that the writer, recovery and readers agree on one definition.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace joule::log {

inline constexpr size_t kRecordHeaderBytes = 24;  // crc32 len32 offset64 time64
inline constexpr uint32_t kMaxPayloadBytes = 16u << 20;

// Appends one framed record to *out.
void EncodeRecord(uint64_t offset, int64_t append_time_ns, std::string_view payload,
                  std::string* out);

enum class DecodeResult {
  kOk,
  kIncomplete,  // fewer bytes than the header or the header's length promises
  kBadLength,   // length > kMaxPayloadBytes
  kBadCrc,
  kBadOffset,  // valid frame, but not the offset the caller expected
};

struct DecodedRecord {
  uint64_t offset = 0;
  int64_t append_time_ns = 0;
  std::string_view payload;  // points into the input
  size_t size = 0;           // bytes consumed: header + payload
};

// Decodes the record at the start of `data`, which must have offset `expected_offset`.
DecodeResult DecodeRecord(std::string_view data, uint64_t expected_offset, DecodedRecord* out);
const char* DecodeResultName(DecodeResult r);
// The offset field of the record header at the start of `data` (unvalidated).
// REQUIRES: data.size() >= kRecordHeaderBytes.
uint64_t RecordHeaderOffset(std::string_view data);

// Whether `data` (the bytes at a record boundary, up to the file's end) starts where a
// segment's data ends in its pre-written zero tail: its first min(24, size) bytes are all
// zero (size > 0). No record starts like that: a record's CRC covers its header and the
// CRC of 20 zero bytes is not zero. (docs/formats/log.md, "Pre-written tail")
bool IsZeroHeader(std::string_view data);

// "00000000000000000042.seg"
std::string SegmentFileName(uint64_t base_offset);
// The base offset of a segment file name, or nullopt if the name is not a segment's.
std::optional<uint64_t> ParseSegmentFileName(std::string_view name);
// "p-003"
std::string PartitionDirName(uint32_t partition);
std::optional<uint32_t> ParsePartitionDirName(std::string_view name);

}  // namespace joule::log

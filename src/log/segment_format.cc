#include "log/segment_format.h"

#include <algorithm>
#include <bit>
#include <cstring>

#include "common/crc32c.h"

namespace joule::log {
namespace {

// Little-endian fixed-width integers; on a little-endian host one load or store each.
template <typename T>
void PutFixed(char* p, T v) {
  if constexpr (std::endian::native == std::endian::little) {
    std::memcpy(p, &v, sizeof(T));
  } else {
    for (size_t i = 0; i < sizeof(T); ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  }
}
template <typename T>
T GetFixed(const char* p) {
  T v = 0;
  if constexpr (std::endian::native == std::endian::little) {
    std::memcpy(&v, p, sizeof(T));
  } else {
    for (size_t i = 0; i < sizeof(T); ++i)
      v |= static_cast<T>(static_cast<uint8_t>(p[i])) << (8 * i);
  }
  return v;
}
void PutFixed32(char* p, uint32_t v) { PutFixed(p, v); }
void PutFixed64(char* p, uint64_t v) { PutFixed(p, v); }
uint32_t GetFixed32(const char* p) { return GetFixed<uint32_t>(p); }
uint64_t GetFixed64(const char* p) { return GetFixed<uint64_t>(p); }

std::optional<uint64_t> ParseDecimal(std::string_view digits) {
  if (digits.empty()) return std::nullopt;
  uint64_t v = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) return std::nullopt;
    v = v * 10 + d;
  }
  return v;
}

}  // namespace

void EncodeRecord(uint64_t offset, int64_t append_time_ns, std::string_view payload,
                  std::string* out) {
  size_t start = out->size();
  out->resize(start + kRecordHeaderBytes + payload.size());
  char* p = out->data() + start;
  PutFixed32(p + 4, static_cast<uint32_t>(payload.size()));
  PutFixed64(p + 8, offset);
  PutFixed64(p + 16, static_cast<uint64_t>(append_time_ns));
  if (!payload.empty()) std::memcpy(p + kRecordHeaderBytes, payload.data(), payload.size());
  uint32_t crc = crc32c::Value(p + 4, kRecordHeaderBytes - 4 + payload.size());
  PutFixed32(p, crc32c::Mask(crc));
}

uint64_t RecordHeaderOffset(std::string_view data) { return GetFixed64(data.data() + 8); }

DecodeResult DecodeRecord(std::string_view data, uint64_t expected_offset, DecodedRecord* out) {
  if (data.size() < kRecordHeaderBytes) return DecodeResult::kIncomplete;
  const char* p = data.data();
  uint32_t length = GetFixed32(p + 4);
  if (length > kMaxPayloadBytes) return DecodeResult::kBadLength;
  if (data.size() - kRecordHeaderBytes < length) return DecodeResult::kIncomplete;
  uint32_t expected_crc = crc32c::Unmask(GetFixed32(p));
  if (crc32c::Value(p + 4, kRecordHeaderBytes - 4 + length) != expected_crc) {
    return DecodeResult::kBadCrc;
  }
  uint64_t offset = GetFixed64(p + 8);
  if (offset != expected_offset) return DecodeResult::kBadOffset;
  out->offset = offset;
  out->append_time_ns = static_cast<int64_t>(GetFixed64(p + 16));
  out->payload = std::string_view(p + kRecordHeaderBytes, length);
  out->size = kRecordHeaderBytes + length;
  return DecodeResult::kOk;
}

bool IsZeroHeader(std::string_view data) {
  if (data.empty()) return false;
  const size_t n = std::min(data.size(), kRecordHeaderBytes);
  for (size_t i = 0; i < n; ++i) {
    if (data[i] != 0) return false;
  }
  return true;
}

const char* DecodeResultName(DecodeResult r) {
  switch (r) {
    case DecodeResult::kOk:
      return "ok";
    case DecodeResult::kIncomplete:
      return "incomplete record";
    case DecodeResult::kBadLength:
      return "record length over limit";
    case DecodeResult::kBadCrc:
      return "crc mismatch";
    case DecodeResult::kBadOffset:
      return "unexpected record offset";
  }
  return "unknown";
}

std::string SegmentFileName(uint64_t base_offset) {
  std::string digits = std::to_string(base_offset);
  return std::string(20 - digits.size(), '0') + digits + ".seg";
}

std::optional<uint64_t> ParseSegmentFileName(std::string_view name) {
  constexpr std::string_view kSuffix = ".seg";
  if (name.size() != 20 + kSuffix.size() || name.substr(20) != kSuffix) return std::nullopt;
  return ParseDecimal(name.substr(0, 20));
}

std::string PartitionDirName(uint32_t partition) {
  std::string digits = std::to_string(partition);
  if (digits.size() < 3) digits.insert(0, 3 - digits.size(), '0');
  return "p-" + digits;
}

std::optional<uint32_t> ParsePartitionDirName(std::string_view name) {
  if (name.size() < 5 || name.substr(0, 2) != "p-") return std::nullopt;
  auto v = ParseDecimal(name.substr(2));
  if (!v || *v > UINT32_MAX) return std::nullopt;
  return static_cast<uint32_t>(*v);
}

}  // namespace joule::log

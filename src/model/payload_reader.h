// PayloadReader: the primitives of the binary event payload (docs/formats/log.md, "event
// payload"): varints, length-prefixed strings, little-endian doubles, single bytes. Shared
// by model::DecodeEvent and the archive's in-place reader (store::DecodeEventView), so
// both accept exactly the same bytes.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

namespace joule::model {

class PayloadReader {
 public:
  explicit PayloadReader(std::string_view d) : p_(d.data()), end_(d.data() + d.size()) {}
  // LEB128, at most 10 bytes.
  bool Varint(uint64_t* v) {
    if (p_ < end_ && static_cast<uint8_t>(*p_) < 0x80) {  // one byte: lengths, counts
      *v = static_cast<uint8_t>(*p_++);
      return true;
    }
    uint64_t r = 0;
    for (int shift = 0; shift <= 63; shift += 7) {
      if (p_ >= end_) return false;
      const uint8_t b = static_cast<uint8_t>(*p_++);
      r |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) {
        *v = r;
        return true;
      }
    }
    return false;
  }
  // A varint length, then that many bytes (a view into the payload).
  bool String(std::string_view* s) {
    uint64_t n;
    if (!Varint(&n) || n > static_cast<uint64_t>(end_ - p_)) return false;
    *s = std::string_view(p_, n);
    p_ += n;
    return true;
  }
  bool Double(double* v) {
    if (end_ - p_ < 8) return false;
    std::memcpy(v, p_, 8);  // little-endian hosts only (x86-64, aarch64)
    p_ += 8;
    return true;
  }
  bool Byte(uint8_t* b) {
    if (p_ >= end_) return false;
    *b = static_cast<uint8_t>(*p_++);
    return true;
  }
  bool AtEnd() const { return p_ == end_; }

 private:
  const char* p_;
  const char* end_;
};

inline int64_t UnZigZag(uint64_t v) {
  return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1);
}

}  // namespace joule::model

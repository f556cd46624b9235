// Fixed-width integers (native byte order) appended to a string, and a bounds-checked cursor
// that reads them back: the encoding of the app's small binary files (processor checkpoints,
// replay journals; their layouts are in docs/formats/).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "common/status.h"

namespace joule {

inline void PutU8(std::string* out, uint8_t v) { out->push_back(static_cast<char>(v)); }
inline void PutU32(std::string* out, uint32_t v) {
  char b[4];
  std::memcpy(b, &v, 4);
  out->append(b, 4);
}
inline void PutU64(std::string* out, uint64_t v) {
  char b[8];
  std::memcpy(b, &v, 8);
  out->append(b, 8);
}

class ByteCursor {
 public:
  explicit ByteCursor(std::string_view d) : d_(d) {}
  bool U8(uint8_t* v) { return Raw(v, 1); }
  bool U32(uint32_t* v) { return Raw(v, 4); }
  bool U64(uint64_t* v) { return Raw(v, 8); }
  // The next n bytes, as a view into the input.
  bool Take(uint64_t n, std::string_view* s) {
    if (n > d_.size() - pos_) return false;
    *s = d_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  bool AtEnd() const { return pos_ == d_.size(); }
  // Whether `n` items of at least `item_bytes` each can still follow: a corrupt count must
  // not make a decoder allocate for items the input cannot hold.
  bool CanHold(uint64_t n, size_t item_bytes) const { return n <= (d_.size() - pos_) / item_bytes; }

 private:
  bool Raw(void* v, size_t n) {
    if (d_.size() - pos_ < n) return false;
    std::memcpy(v, d_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  std::string_view d_;
  size_t pos_ = 0;
};

// A framed file: an 8-byte magic, u32 version, u64 body size and the masked CRC-32C of the
// body, then the body. Checks the magic, the length and the CRC (errors name `what`, e.g.
// "replay journal") and returns the version and the body; the caller checks the version.
Status OpenFramed(std::string_view data, std::string_view magic, std::string_view what,
                  uint32_t* version, std::string_view* body);
inline constexpr size_t kFramedHeaderBytes = 8 + 16;

}  // namespace joule

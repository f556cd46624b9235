// BytesEqual: equality of two short byte strings of a known length, inline. Names (device
// ids, metric names) are mostly 4–16 bytes; for those two overlapping word loads per side
// replace a call to memcmp (the engine's metric-name checks and the ingest scanner's,
// per event and metric).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace joule {

// The n bytes at a and at b are equal. Reads only [a, a + n) and [b, b + n).
inline bool BytesEqual(const char* a, const char* b, size_t n) {
  if (n >= 8 && n <= 16) {
    uint64_t a0, a1, b0, b1;
    std::memcpy(&a0, a, 8);
    std::memcpy(&b0, b, 8);
    std::memcpy(&a1, a + n - 8, 8);
    std::memcpy(&b1, b + n - 8, 8);
    return ((a0 ^ b0) | (a1 ^ b1)) == 0;
  }
  if (n >= 4 && n < 8) {
    uint32_t a0, a1, b0, b1;
    std::memcpy(&a0, a, 4);
    std::memcpy(&b0, b, 4);
    std::memcpy(&a1, a + n - 4, 4);
    std::memcpy(&b1, b + n - 4, 4);
    return ((a0 ^ b0) | (a1 ^ b1)) == 0;
  }
  return std::memcmp(a, b, n) == 0;
}

}  // namespace joule

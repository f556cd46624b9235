// BytesEqual: equality of two short byte strings of a known length, inline. Names (device
// ids, metric names) are mostly 4–16 bytes; for those two overlapping word loads per side
// replace a call to memcmp (the engine's metric-name checks and the ingest scanner's,
// per event and metric).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace joule {

namespace bytes_equal_internal {
// [a, a + n) equals [b, b + n), for sizeof(Word) <= n <= 2 * sizeof(Word): the first and the
// last word of each side (overlapping when n < 2 * sizeof(Word)).
template <typename Word>
inline bool HeadAndTailEqual(const char* a, const char* b, size_t n) {
  Word a0, a1, b0, b1;
  std::memcpy(&a0, a, sizeof(Word));
  std::memcpy(&b0, b, sizeof(Word));
  std::memcpy(&a1, a + n - sizeof(Word), sizeof(Word));
  std::memcpy(&b1, b + n - sizeof(Word), sizeof(Word));
  return ((a0 ^ b0) | (a1 ^ b1)) == 0;
}
}  // namespace bytes_equal_internal

// The n bytes at a and at b are equal. Reads only [a, a + n) and [b, b + n).
[[gnu::always_inline]] inline bool BytesEqual(const char* a, const char* b, size_t n) {
  if (n >= 8 && n <= 16) return bytes_equal_internal::HeadAndTailEqual<uint64_t>(a, b, n);
  if (n >= 4 && n < 8) return bytes_equal_internal::HeadAndTailEqual<uint32_t>(a, b, n);
  return std::memcmp(a, b, n) == 0;
}

}  // namespace joule

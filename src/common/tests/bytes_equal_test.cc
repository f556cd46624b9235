#include "common/bytes_equal.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>

namespace joule {
namespace {

// Every length 0–24 (both word paths and memcmp), a difference at every position, against
// memcmp.
TEST(BytesEqual, AgreesWithMemcmpForEveryLengthAndDifferencePosition) {
  for (size_t n = 0; n <= 24; ++n) {
    std::string a(n, 'x'), b(n, 'x');
    for (size_t i = 0; i < n; ++i) a[i] = b[i] = static_cast<char>('a' + i);
    EXPECT_TRUE(BytesEqual(a.data(), b.data(), n)) << n;
    for (size_t i = 0; i < n; ++i) {
      std::string c = b;
      c[i] = static_cast<char>(c[i] ^ 0x20);
      EXPECT_EQ(BytesEqual(a.data(), c.data(), n), std::memcmp(a.data(), c.data(), n) == 0)
          << n << " " << i;
      EXPECT_FALSE(BytesEqual(a.data(), c.data(), n)) << n << " " << i;
    }
  }
}

}  // namespace
}  // namespace joule

#include "ingest/validation.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace joule::ingest {
namespace {

TEST(ValidDeviceIdTest, AcceptsAllowedCharacters) {
  EXPECT_TRUE(ValidDeviceId("plug-42"));
  EXPECT_TRUE(ValidDeviceId("A.b_c:d-9"));
  EXPECT_TRUE(ValidDeviceId("x"));
  EXPECT_TRUE(ValidDeviceId(std::string(128, 'a')));
}

TEST(ValidDeviceIdTest, RejectsBadLengthAndCharacters) {
  EXPECT_FALSE(ValidDeviceId(""));
  EXPECT_FALSE(ValidDeviceId(std::string(129, 'a')));
  for (const std::string& bad : std::vector<std::string>{"a b", "a/b", "a+b", "ä", "a\nb", "a#",
                                                         "a\"", std::string("a\0b", 3)}) {
    EXPECT_FALSE(ValidDeviceId(bad)) << bad;
  }
}

// Found by a black-box test: "." and ".." were registered (201) and ingested (202), but no
// URL reaches them (clients normalise /v1/devices/.. to /v1), so the dashboard showed 404.
TEST(ValidDeviceIdTest, RejectsDotSegments) {
  EXPECT_FALSE(ValidDeviceId("."));
  EXPECT_FALSE(ValidDeviceId(".."));
  EXPECT_TRUE(ValidDeviceId("..."));
  EXPECT_TRUE(ValidDeviceId(".a"));
  EXPECT_TRUE(ValidDeviceId("a."));
  EXPECT_TRUE(ValidDeviceId("a.."));
  EXPECT_TRUE(ValidDeviceId("-"));
}

TEST(ValidMetricNameTest, Grammar) {
  EXPECT_TRUE(ValidMetricName("power_w"));
  EXPECT_TRUE(ValidMetricName("a"));
  EXPECT_TRUE(ValidMetricName("a0_9"));
  EXPECT_TRUE(ValidMetricName("a" + std::string(63, 'b')));
  EXPECT_FALSE(ValidMetricName("a" + std::string(64, 'b')));
  EXPECT_FALSE(ValidMetricName(""));
  EXPECT_FALSE(ValidMetricName("_a"));
  EXPECT_FALSE(ValidMetricName("0a"));
  EXPECT_FALSE(ValidMetricName("Power"));
  EXPECT_FALSE(ValidMetricName("power-w"));
  EXPECT_FALSE(ValidMetricName("power.w"));
}

TEST(Utf8LengthTest, CountsCodePoints) {
  EXPECT_EQ(Utf8Length(""), 0u);
  EXPECT_EQ(Utf8Length("abc"), 3u);
  EXPECT_EQ(Utf8Length("h\xC3\xA9llo"), 5u);      // é
  EXPECT_EQ(Utf8Length("\xF0\x9F\x94\x8C"), 1u);  // 🔌
}

}  // namespace
}  // namespace joule::ingest

// The whole-home meter flag of a device config (whole_home_meter.h): what marks a meter,
// what does not, and what the device API refuses.
#include "api/whole_home_meter.h"

#include <gtest/gtest.h>

namespace joule::api {
namespace {

TEST(WholeHomeMeterTest, OnlyATopLevelTrueMarksAMeter) {
  EXPECT_TRUE(IsWholeHomeMeter(R"({"whole_home":true})"));
  EXPECT_TRUE(IsWholeHomeMeter(R"({"a": 1, "whole_home": true})"));  // PostgreSQL's jsonb
  EXPECT_TRUE(IsWholeHomeMeter(R"({"whole\u005fhome":true})"));      // an escaped key
  EXPECT_FALSE(IsWholeHomeMeter(""));
  EXPECT_FALSE(IsWholeHomeMeter("{}"));
  EXPECT_FALSE(IsWholeHomeMeter(R"({"whole_home":false})"));
  EXPECT_FALSE(IsWholeHomeMeter(R"({"whole_home":"true"})"));
  EXPECT_FALSE(IsWholeHomeMeter(R"({"whole_home":1})"));
  EXPECT_FALSE(IsWholeHomeMeter(R"({"x":{"whole_home":true}})"));
  EXPECT_FALSE(IsWholeHomeMeter(R"({"note":"not whole_home"})"));
  EXPECT_FALSE(IsWholeHomeMeter(R"({"whole_home":true,"whole_home":false})"));
  EXPECT_FALSE(IsWholeHomeMeter(R"({"whole_home":tru)"));  // not JSON
  EXPECT_FALSE(IsWholeHomeMeter(R"(["whole_home"])"));     // not an object
}

TEST(WholeHomeMeterTest, TheDeviceApiRefusesAFlagThatIsNotABoolean) {
  EXPECT_TRUE(ValidateWholeHomeFlag("").ok());
  EXPECT_TRUE(ValidateWholeHomeFlag("{}").ok());
  EXPECT_TRUE(ValidateWholeHomeFlag(R"({"whole_home":true})").ok());
  EXPECT_TRUE(ValidateWholeHomeFlag(R"({"whole_home":false})").ok());
  EXPECT_TRUE(ValidateWholeHomeFlag(R"({"x":{"whole_home":"anything"}})").ok());
  for (const char* bad : {R"({"whole_home":"true"})", R"({"whole_home":1})",
                          R"({"whole_home":null})", R"({"whole_home":true,"whole_home":true})"}) {
    Status st = ValidateWholeHomeFlag(bad);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(st.message().find("config.whole_home"), std::string::npos) << st.ToString();
  }
}

}  // namespace
}  // namespace joule::api

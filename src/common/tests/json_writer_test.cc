#include "common/json_writer.h"

#include <gtest/gtest.h>

#include <limits>

namespace joule {

TEST(JsonWriterTest, NestedWithCommas) {
  JsonWriter w;
  w.BeginObject();
  w.Key("a");
  w.Int(1);
  w.Key("b");
  w.BeginArray();
  w.String("x\"y");
  w.Double(1.5);
  w.Double(std::numeric_limits<double>::infinity());
  w.EndArray();
  w.Key("c");
  w.Bool(true);
  w.EndObject();
  EXPECT_EQ(w.str(), R"({"a":1,"b":["x\"y",1.5,null],"c":true})");
}

TEST(JsonWriterTest, EscapesControlCharacters) {
  JsonWriter w;
  w.String(std::string("a\x01\n", 3));
  EXPECT_EQ(w.str(), "\"a\\u0001\\n\"");
}

TEST(JsonWriterTest, ShortestDoubles) {
  JsonWriter w;
  w.BeginArray();
  w.Double(0.1);
  w.Double(230.1);
  w.Double(-0.0);
  w.EndArray();
  EXPECT_EQ(w.str(), "[0.1,230.1,0]");
}

}  // namespace joule

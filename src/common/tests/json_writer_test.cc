#include "common/json_writer.h"

#include <fmt/compile.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>

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

// Ill-formed UTF-8 (a percent-decoded "%ff" echoed in an error message, found by a
// black-box test) becomes U+FFFD, so the document stays valid JSON; well-formed UTF-8 is
// copied as it is.
TEST(JsonWriterTest, IllFormedUtf8BecomesReplacementCharacters) {
  struct Case {
    std::string in;
    std::string out;
  };
  const Case cases[] = {
      {"/nope\xff", "\"/nope\\ufffd\""},
      {"a\x80"
       "b",
       "\"a\\ufffdb\""},
      {"\xc0\xaf", "\"\\ufffd\\ufffd\""},                        // overlong '/'
      {"\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\""},             // a surrogate
      {"\xe2\x82", "\"\\ufffd\""},                               // truncated at the end
      {"\xe2\x82x", "\"\\ufffdx\""},                             // truncated in the middle
      {"\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\""},  // above U+10FFFF
      {"K\xc3\xbc"
       "che \xe2\x82\xac \xf0\x9f\x94\x8c",
       "\"K\xc3\xbc"
       "che \xe2\x82\xac \xf0\x9f\x94\x8c\""},
      {"\xff\"", "\"\\ufffd\\\"\""},
  };
  for (const Case& c : cases) {
    std::string out;
    JsonWriter::AppendEscaped(&out, c.in);
    EXPECT_EQ(out, c.out) << c.in;
    EXPECT_EQ(JsonWriter::NeedsEscape(c.in), out != "\"" + c.in + "\"") << c.in;
  }
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

// What JsonWriter wrote before its own layout of Dragonbox's digits: fmt's compiled "{}"
// (0 for -0, null for non-finite numbers).
std::string FmtDouble(double v) {
  if (!std::isfinite(v)) return "null";
  if (v == 0) v = 0;
  return fmt::format(FMT_COMPILE("{}"), v);
}

std::string Appended(double v) {
  std::string out;
  JsonWriter::AppendDouble(&out, v);
  return out;
}

double FromBits(uint64_t bits) {
  double v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

TEST(JsonWriterTest, DoublesAreFmtsShortestForm) {
  const double fixed[] = {0.0,
                          -0.0,
                          1.0,
                          -1.0,
                          0.5,
                          230.0,
                          230.1,
                          107.97,
                          0.1 + 0.2,
                          1e15,
                          1e16,
                          1e17,
                          9.999999999999998e15,
                          1e21,
                          1e22,
                          1e100,
                          1e-4,
                          1e-5,
                          0.00012345,
                          0.000012345,
                          123456.789,
                          5e-324,
                          2.2250738585072014e-308,
                          1.7976931348623157e308,
                          9007199254740992.0,
                          9007199254740994.0,
                          4503599627370497.5,
                          -9007199254740991.0,
                          0.3,
                          2.5e-7,
                          1e-300,
                          std::numeric_limits<double>::quiet_NaN(),
                          std::numeric_limits<double>::infinity(),
                          -std::numeric_limits<double>::infinity()};
  for (double v : fixed) EXPECT_EQ(Appended(v), FmtDouble(v)) << v;
  EXPECT_EQ(Appended(1e16), "1e+16");
  EXPECT_EQ(Appended(1e15), "1000000000000000");
  EXPECT_EQ(Appended(1e-5), "1e-05");
  EXPECT_EQ(Appended(1e-4), "0.0001");
  EXPECT_EQ(Appended(-1.5e-300), "-1.5e-300");
  EXPECT_EQ(Appended(230.0), "230");

  std::mt19937_64 rng(20261129);
  for (int i = 0; i < 1'000'000; ++i) {
    // Any bit pattern: every exponent, subnormals, NaNs and infinities.
    const double any = FromBits(rng());
    ASSERT_EQ(Appended(any), FmtDouble(any)) << any;
    // Decimal-looking values of every magnitude (what meters send), and integers.
    const double dec =
        static_cast<double>(static_cast<int64_t>(rng() % 2'000'000'000) - 1'000'000'000) *
        std::pow(10.0, static_cast<int>(rng() % 60) - 30);
    ASSERT_EQ(Appended(dec), FmtDouble(dec)) << dec;
    // Around the fixed/exponent boundaries and 2^53.
    const double edge =
        std::nextafter(std::pow(10.0, static_cast<int>(rng() % 44) - 22) * (rng() % 2 ? 1 : -1),
                       rng() % 2 ? 0.0 : std::numeric_limits<double>::infinity());
    ASSERT_EQ(Appended(edge), FmtDouble(edge)) << edge;
    const double big =
        static_cast<double>(static_cast<int64_t>(rng() >> (1 + rng() % 63)) * (rng() % 2 ? 1 : -1));
    ASSERT_EQ(Appended(big), FmtDouble(big)) << big;
  }
}

TEST(JsonWriterTest, Integers) {
  const int64_t ints[] = {0,
                          1,
                          -1,
                          9,
                          10,
                          99,
                          100,
                          -100,
                          123456789,
                          std::numeric_limits<int64_t>::max(),
                          std::numeric_limits<int64_t>::min()};
  for (int64_t v : ints) {
    std::string out;
    JsonWriter::AppendInt(&out, v);
    EXPECT_EQ(out, std::to_string(v));
  }
  const uint64_t uints[] = {0, 7, 42, 1000, std::numeric_limits<uint64_t>::max()};
  for (uint64_t v : uints) {
    std::string out;
    JsonWriter::AppendUint(&out, v);
    EXPECT_EQ(out, std::to_string(v));
  }
}

}  // namespace joule

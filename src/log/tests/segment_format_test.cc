#include "log/segment_format.h"

#include <gtest/gtest.h>

#include <string>

namespace joule::log {
namespace {

TEST(SegmentFormatTest, RoundTrip) {
  std::string buf;
  EncodeRecord(42, 1234567890123, "hello", &buf);
  EncodeRecord(43, -5, "", &buf);
  ASSERT_EQ(buf.size(), 2 * kRecordHeaderBytes + 5);

  DecodedRecord rec;
  ASSERT_EQ(DecodeRecord(buf, 42, &rec), DecodeResult::kOk);
  EXPECT_EQ(rec.offset, 42u);
  EXPECT_EQ(rec.append_time_ns, 1234567890123);
  EXPECT_EQ(rec.payload, "hello");
  EXPECT_EQ(rec.size, kRecordHeaderBytes + 5);

  ASSERT_EQ(DecodeRecord(std::string_view(buf).substr(rec.size), 43, &rec), DecodeResult::kOk);
  EXPECT_EQ(rec.append_time_ns, -5);
  EXPECT_EQ(rec.payload, "");
}

TEST(SegmentFormatTest, DetectsDamage) {
  std::string buf;
  EncodeRecord(7, 99, "payload bytes", &buf);
  DecodedRecord rec;
  // Every proper prefix is incomplete.
  for (size_t n = 0; n < buf.size(); ++n) {
    EXPECT_EQ(DecodeRecord(std::string_view(buf).substr(0, n), 7, &rec), DecodeResult::kIncomplete)
        << n;
  }
  // Every single-bit flip anywhere is caught (by the CRC, or the length check).
  for (size_t i = 0; i < buf.size() * 8; ++i) {
    std::string bad = buf;
    bad[i / 8] = static_cast<char>(bad[i / 8] ^ (1 << (i % 8)));
    EXPECT_NE(DecodeRecord(bad, 7, &rec), DecodeResult::kOk) << "bit " << i;
  }
  EXPECT_EQ(DecodeRecord(buf, 8, &rec), DecodeResult::kBadOffset);
  // All zeros is not a valid empty record.
  std::string zeros(64, '\0');
  EXPECT_EQ(DecodeRecord(zeros, 0, &rec), DecodeResult::kBadCrc);
}

TEST(SegmentFormatTest, OversizedLengthIsRejectedBeforeReading) {
  std::string buf;
  EncodeRecord(0, 0, "x", &buf);
  buf[4] = buf[5] = buf[6] = buf[7] = static_cast<char>(0xff);
  DecodedRecord rec;
  EXPECT_EQ(DecodeRecord(buf, 0, &rec), DecodeResult::kBadLength);
}

TEST(SegmentFormatTest, Names) {
  EXPECT_EQ(SegmentFileName(0), "00000000000000000000.seg");
  EXPECT_EQ(SegmentFileName(1234), "00000000000000001234.seg");
  EXPECT_EQ(ParseSegmentFileName("00000000000000001234.seg"), 1234u);
  EXPECT_EQ(ParseSegmentFileName("18446744073709551615.seg"), UINT64_MAX);
  EXPECT_FALSE(ParseSegmentFileName("18446744073709551616.seg"));
  EXPECT_FALSE(ParseSegmentFileName("0000000000000000123.seg"));
  EXPECT_FALSE(ParseSegmentFileName("00000000000000001234.seg.tmp"));
  EXPECT_FALSE(ParseSegmentFileName("0000000000000000123x.seg"));
  EXPECT_EQ(PartitionDirName(3), "p-003");
  EXPECT_EQ(PartitionDirName(1234), "p-1234");
  EXPECT_EQ(ParsePartitionDirName("p-003"), 3u);
  EXPECT_FALSE(ParsePartitionDirName("p-"));
  EXPECT_FALSE(ParsePartitionDirName("q-003"));
}

}  // namespace
}  // namespace joule::log

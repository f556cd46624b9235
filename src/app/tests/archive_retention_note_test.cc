#include "app/archive_retention_note.h"

#include <gtest/gtest.h>

#include <limits>

#include "app/config.h"
#include "common/clock.h"

namespace joule::app {
namespace {

constexpr int64_t kNow = 1'796'100'000 * kNanosPerSecond;  // 2026-12-01T04:40:00Z

TEST(ArchiveRetentionNoteTest, KeptForeverSaysNothing) {
  Config c;
  c.archive_retention_ns = 0;
  EXPECT_EQ(ArchiveRetentionHorizon(c, kNow), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(ArchiveRetentionNote(c, 0, kNow), "");
}

// 40 min at 04:40: hour 03 ended 40 min ago and is gone, hour 04 stays (as the soak saw).
TEST(ArchiveRetentionNoteTest, NamesTheOldestHourKept) {
  Config c;
  c.archive_retention_ns = 40 * kNanosPerMinute;
  const int64_t hour4 = kNow - 40 * kNanosPerMinute;  // 04:00:00
  EXPECT_EQ(ArchiveRetentionHorizon(c, kNow), hour4);
  EXPECT_EQ(ArchiveRetentionNote(c, hour4, kNow), "");
  const std::string note = ArchiveRetentionNote(c, hour4 - kNanosPerHour, kNow);
  EXPECT_NE(note.find("from 2026-12-01T04:00:00.000Z on (archive.retention 40m)"),
            std::string::npos)
      << note;
}

}  // namespace
}  // namespace joule::app

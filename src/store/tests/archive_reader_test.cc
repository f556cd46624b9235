// Archive rows and files: parsing rows back into Events, file-level corruption, layout names.
#include "store/archive/archive_reader.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>
#include <zstd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "common/clock.h"
#include "common/time_format.h"
#include "store/archive/archive_layout.h"

namespace joule::store {
namespace {

TEST(ArchiveRowTest, RoundTripKeepsIdentityAndMeta) {
  model::Event e;
  e.device_id = "plug-42";
  e.timestamp_ns = 1'795'000'000LL * kNanosPerSecond + 250'000'001;  // sub-ms
  e.received_at_ns = 1'795'000'001LL * kNanosPerSecond + 5 * kNanosPerMilli;
  e.event_id = "id \"quoted\"";
  e.metrics = {{"power_w", 12.3}, {"voltage_v", 230.1}, {"energy_wh", 1e20}, {"zero", 0}};
  e.meta_json = R"({"firmware":"1.0.3","n":1.5,"ok":true})";
  const std::string row = model::EventToJson(e);
  EXPECT_NE(row.find("\"timestamp\":\"2026-11-18T"), std::string::npos) << row;
  EXPECT_NE(row.find(".250000001Z\""), std::string::npos) << row;
  model::Event back;
  ASSERT_TRUE(ParseArchiveRow(row, &back).ok());
  EXPECT_EQ(back, e);
  EXPECT_EQ(model::EventToJson(back), row);
}

TEST(ArchiveRowTest, RejectsGarbage) {
  model::Event e;
  EXPECT_FALSE(ParseArchiveRow("", &e).ok());
  EXPECT_FALSE(ParseArchiveRow("{\"device_id\":\"a\"}", &e).ok());
  EXPECT_FALSE(ParseArchiveRow("[1,2]", &e).ok());
  EXPECT_FALSE(
      ParseArchiveRow("{\"device_id\":\"a\",\"timestamp\":\"nope\",\"metrics\":{\"x\":1}}", &e)
          .ok());
}

TEST(ArchiveLayoutTest, Names) {
  const int64_t t = 1'795'000'000LL * kNanosPerSecond;  // 2026-11-18T11:06:40Z
  EXPECT_EQ(ArchiveHourDir(ArchiveHourOf(t)), "dt=2026-11-18/hour=11");
  EXPECT_EQ(ParseArchiveHourDir("dt=2026-11-18", "hour=11"), ArchiveHourOf(t));
  EXPECT_FALSE(ParseArchiveHourDir("dt=2026-11-18", "hour=24"));
  EXPECT_EQ(ArchiveFileName(42), "part-0000000042.ndjson.zst");
  EXPECT_EQ(ParseArchiveFileName("part-0000000042.ndjson.zst"), 42u);
  EXPECT_FALSE(ParseArchiveFileName("part-0000000042.ndjson.zst.tmp"));
  EXPECT_FALSE(ParseArchiveFileName(".part-1.ndjson.zst"));
}

TEST(ArchiveFileTest, TruncatedStreamIsCorruption) {
  const std::string rows = "{\"a\":1}\n{\"b\":2}\n";
  std::string z(ZSTD_compressBound(rows.size()), '\0');
  z.resize(ZSTD_compress(z.data(), z.size(), rows.data(), rows.size(), 3));
  const auto path =
      std::filesystem::temp_directory_path() / fmt::format("joule-archive-file-{}.zst", ::getpid());
  auto write = [&](std::string_view bytes) {
    std::ofstream(path, std::ios::binary)
        .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  };
  std::vector<std::string> lines;
  auto collect = [&](std::string_view l) {
    lines.emplace_back(l);
    return Status::Ok();
  };
  write(z);
  ASSERT_TRUE(ReadArchiveFile(path.string(), collect).ok());
  EXPECT_EQ(lines, (std::vector<std::string>{"{\"a\":1}", "{\"b\":2}"}));
  write(std::string_view(z).substr(0, z.size() - 3));
  EXPECT_EQ(ReadArchiveFile(path.string(), collect).code(), StatusCode::kCorruption);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace joule::store

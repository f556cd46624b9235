#include "app/latest_backlog_file.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <limits>

namespace joule::app {
namespace {

using Marker = store::LatestCatchUp::Marker;

TEST(LatestBacklogFileTest, RoundTripsEveryKindOfMarker) {
  std::vector<Marker> in(4);
  in[0].device_id = "plug-1";
  in[0].from_ns = -5;  // before the epoch
  in[1].device_id = "meter:2";
  in[1].reading = true;
  in[2].device_id = "x";
  in[2].newest = true;
  in[2].reading = true;
  in[2].from_ns = 1'700'000'000'000'000'000;
  in[3].device_id = "y";  // nothing set: still a line
  std::vector<Marker> out;
  ASSERT_TRUE(DecodeLatestBacklog(EncodeLatestBacklog(in), &out).ok());
  ASSERT_EQ(out.size(), in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    EXPECT_EQ(out[i].device_id, in[i].device_id);
    EXPECT_EQ(out[i].from_ns, in[i].from_ns);
    EXPECT_EQ(out[i].reading, in[i].reading);
    EXPECT_EQ(out[i].newest, in[i].newest);
  }
  EXPECT_EQ(out[1].from_ns, std::numeric_limits<int64_t>::max());
}

TEST(LatestBacklogFileTest, RejectsWhatDoesNotParse) {
  std::vector<Marker> out;
  for (const char* bad : {"", "joule-latest-backlog 2\n", "joule-latest-backlog 1\n12 r\n",
                          "joule-latest-backlog 1\nx r dev\n", "joule-latest-backlog 1\n1 q dev\n",
                          "joule-latest-backlog 1\n1 r dev"}) {
    EXPECT_EQ(DecodeLatestBacklog(bad, &out).code(), StatusCode::kCorruption) << bad;
  }
}

TEST(LatestBacklogFileTest, WrittenAtomicallyAndRemovedWhenEmpty) {
  char tmpl[] = "/tmp/joule-backlog-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string path = std::string(tmpl) + "/processor-0.ckpt.latest";
  auto missing = ReadLatestBacklogFile(path);
  ASSERT_TRUE(missing.ok());
  EXPECT_TRUE(missing->empty());
  std::vector<Marker> one(1);
  one[0].device_id = "d";
  one[0].from_ns = 60;
  ASSERT_TRUE(WriteLatestBacklogFile(path, one).ok());
  auto read = ReadLatestBacklogFile(path);
  ASSERT_TRUE(read.ok());
  ASSERT_EQ(read->size(), 1u);
  EXPECT_EQ((*read)[0].from_ns, 60);
  ASSERT_TRUE(WriteLatestBacklogFile(path, {}).ok());
  EXPECT_FALSE(std::filesystem::exists(path));
  std::filesystem::remove_all(tmpl);
}

}  // namespace
}  // namespace joule::app

#include "ingest/parse_scratch.h"

#include <gtest/gtest.h>

#include <string>

#include "common/time_format.h"

namespace joule::ingest {
namespace {

int64_t Now() {
  int64_t ns = 0;
  EXPECT_TRUE(ParseRfc3339("2026-11-28T18:00:00Z", &ns));
  return ns;
}

constexpr std::string_view kBody =
    R"([{"device_id":"plug-1","timestamp":"2026-11-28T17:59:30Z","metrics":{"power_w":1}},)"
    R"({"device_id":"plug-2","timestamp":"2026-11-28T17:59:31Z","metrics":{"power_w":2}}])";

TEST(ParseScratchTest, ReusesTheSlotsParserAndBodyAcrossLeases) {
  ParseScratch scratch;
  const TelemetryParser* parser = nullptr;
  const ParsedBody* body = nullptr;
  const char* device_buffer = nullptr;
  {
    ParseScratch::Lease lease(&scratch, IngestLimits{});
    ASSERT_TRUE(lease.parser().ParseInto(kBody, BodyFormat::kJson, Now(), {}, &lease.body()).ok());
    ASSERT_EQ(lease.body().events.size(), 2u);
    parser = &lease.parser();
    body = &lease.body();
    device_buffer = lease.body().events[1].device_id.data();
  }
  ParseScratch::Lease lease(&scratch, IngestLimits{});
  EXPECT_EQ(&lease.parser(), parser);
  EXPECT_EQ(&lease.body(), body);
  ASSERT_TRUE(lease.parser().ParseInto(kBody, BodyFormat::kJson, Now(), {}, &lease.body()).ok());
  ASSERT_EQ(lease.body().events.size(), 2u);
  EXPECT_EQ(lease.body().events[1].device_id, "plug-2");
  EXPECT_EQ(lease.body().events[1].device_id.data(), device_buffer);  // the string was reused
}

TEST(ParseScratchTest, ANestedLeaseGetsItsOwnParserAndBody) {
  ParseScratch scratch;
  ParseScratch::Lease outer(&scratch, IngestLimits{});
  ASSERT_TRUE(outer.parser().ParseInto(kBody, BodyFormat::kJson, Now(), {}, &outer.body()).ok());
  {
    ParseScratch::Lease inner(&scratch, IngestLimits{});
    EXPECT_NE(&inner.body(), &outer.body());
    EXPECT_NE(&inner.parser(), &outer.parser());
    ASSERT_TRUE(inner.parser()
                    .ParseInto(R"({"device_id":"x","timestamp":0,"metrics":{"a":1}})",
                               BodyFormat::kJson, Now(), {}, &inner.body())
                    .ok());
  }
  // The outer lease's events are untouched by the inner parse.
  ASSERT_EQ(outer.body().events.size(), 2u);
  EXPECT_EQ(outer.body().events[0].device_id, "plug-1");
  EXPECT_EQ(outer.body().events[1].device_id, "plug-2");
}

TEST(ParseScratchTest, TheParserFollowsTheCallersLimits) {
  ParseScratch scratch;
  {
    ParseScratch::Lease lease(&scratch, IngestLimits{});
    EXPECT_TRUE(lease.parser().ParseInto(kBody, BodyFormat::kJson, Now(), {}, &lease.body()).ok());
  }
  IngestLimits small;
  small.max_events_per_request = 1;
  ParseScratch::Lease lease(&scratch, small);
  EXPECT_EQ(lease.parser().limits().max_events_per_request, 1u);
  Status st = lease.parser().ParseInto(kBody, BodyFormat::kJson, Now(), {}, &lease.body());
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace joule::ingest

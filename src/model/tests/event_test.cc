#include "model/event.h"

#include <gtest/gtest.h>

#include "model/partition.h"

namespace joule::model {

Event SampleEvent() {
  Event e;
  e.device_id = "plug-42";
  e.timestamp_ns = 1'764'356'405'250'000'000;
  e.received_at_ns = 1'764'356'406'000'000'000;
  e.metrics = {{"power_w", 12.3}, {"energy_wh", 10452.5}};
  e.meta_json = R"({"firmware":"1.0.3"})";
  e.event_id = "e-1";
  return e;
}

TEST(EventTest, BinaryRoundTrip) {
  Event e = SampleEvent();
  std::string buf;
  EncodeEvent(e, &buf);
  Event d;
  ASSERT_TRUE(DecodeEvent(buf, &d).ok());
  EXPECT_EQ(d, e);
}

TEST(EventTest, TruncatedPayloadIsCorruption) {
  std::string buf;
  EncodeEvent(SampleEvent(), &buf);
  for (size_t n = 0; n < buf.size(); ++n) {
    Event d;
    EXPECT_FALSE(DecodeEvent(std::string_view(buf).substr(0, n), &d).ok()) << n;
  }
}

TEST(EventTest, CanonicalJson) {
  EXPECT_EQ(EventToJson(SampleEvent()),
            R"({"device_id":"plug-42","timestamp":"2025-11-28T19:00:05.250Z","event_id":"e-1",)"
            R"("metrics":{"power_w":12.3,"energy_wh":10452.5},"meta":{"firmware":"1.0.3"},)"
            R"("received_at":"2025-11-28T19:00:06.000Z"})");
}

TEST(PartitionTest, StableAndInRange) {
  EXPECT_EQ(PartitionOf("plug-42", 8), PartitionOf("plug-42", 8));
  for (int i = 0; i < 100; ++i) EXPECT_LT(PartitionOf("d" + std::to_string(i), 8), 8u);
}

}  // namespace joule::model

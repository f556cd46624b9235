#include "model/event.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <string>
#include <vector>

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

// The version 1 payload (docs/formats/log.md, "Event payload"), written out by a plain
// reference encoder: logs written by earlier builds must keep decoding, and the encoder
// must keep writing exactly these bytes.
std::string ReferenceV1(const Event& e) {
  std::string out;
  auto varint = [&](uint64_t v) {
    while (v >= 0x80) {
      out.push_back(static_cast<char>(v | 0x80));
      v >>= 7;
    }
    out.push_back(static_cast<char>(v));
  };
  auto zigzag = [](int64_t v) {
    return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63);
  };
  auto str = [&](const std::string& s) {
    varint(s.size());
    out += s;
  };
  out.push_back(1);
  str(e.device_id);
  varint(zigzag(e.timestamp_ns));
  varint(zigzag(e.received_at_ns));
  str(e.event_id);
  str(e.meta_json);
  varint(e.metrics.size());
  for (const auto& m : e.metrics) {
    str(m.name);
    out.append(reinterpret_cast<const char*>(&m.value), 8);
  }
  return out;
}

std::vector<Event> VariedEvents() {
  std::vector<Event> v;
  v.push_back(SampleEvent());
  Event e;  // minimal: no meta, no event id, epoch 0
  e.device_id = "d";
  e.metrics = {{"x", -0.0}};
  v.push_back(e);
  e.device_id = std::string(128, 'a');  // 2-byte length varint
  e.timestamp_ns = -1;                  // before the epoch
  e.received_at_ns = INT64_MIN;         // 10-byte varint
  e.event_id = std::string(200, 'z');
  e.meta_json = "{\"k\":\"" + std::string(4000, 'm') + "\"}";
  e.metrics.clear();
  for (int i = 0; i < 64; ++i)
    e.metrics.push_back({"m" + std::to_string(i) + std::string(60, 'q'), i * 0.5});
  v.push_back(e);
  e.timestamp_ns = INT64_MAX;
  e.received_at_ns = 127;
  e.metrics.resize(1);
  v.push_back(e);
  return v;
}

TEST(EventTest, EncodingIsVersion1Bytes) {
  for (const Event& e : VariedEvents()) {
    std::string buf = "prefix";  // appends
    EncodeEvent(e, &buf);
    EXPECT_EQ(buf, "prefix" + ReferenceV1(e));
    Event d;
    ASSERT_TRUE(DecodeEvent(ReferenceV1(e), &d).ok());
    EXPECT_EQ(d, e);
  }
}

TEST(EventTest, DecodeIntoReusedEvent) {
  // The processors decode into the same Event objects batch after batch.
  std::vector<Event> events = VariedEvents();
  Event d;
  for (int round = 0; round < 2; ++round) {
    for (const Event& e : events) {
      std::string buf;
      EncodeEvent(e, &buf);
      ASSERT_TRUE(DecodeEvent(buf, &d).ok());
      EXPECT_EQ(d, e);
    }
    std::reverse(events.begin(), events.end());
  }
}

TEST(EventTest, TrailingBytesAndBadVersionAreCorruption) {
  std::string buf;
  EncodeEvent(SampleEvent(), &buf);
  Event d;
  EXPECT_FALSE(DecodeEvent(buf + "x", &d).ok());
  buf[0] = 2;
  EXPECT_FALSE(DecodeEvent(buf, &d).ok());
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

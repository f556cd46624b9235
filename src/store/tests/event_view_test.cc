#include "store/archive/event_view.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

#include "store/archive/archive_row.h"

namespace joule::store {
namespace {

model::Event RandomEvent(std::mt19937_64& rng, int i) {
  std::uniform_int_distribution<int64_t> time(-4'000'000'000'000'000'000,
                                              4'000'000'000'000'000'000);
  std::uniform_real_distribution<double> value(-1e6, 1e6);
  model::Event e;
  e.device_id = "dev-" + std::to_string(i);
  e.timestamp_ns = time(rng);
  e.received_at_ns = time(rng);
  if (i % 3 == 0) e.event_id = "e\"" + std::to_string(i);
  if (i % 4 == 0) e.meta_json = R"({"fw":"1.0"})";
  for (int m = 0; m < 1 + i % 64; ++m) e.metrics.push_back({"m" + std::to_string(m), value(rng)});
  return e;
}

void ExpectSame(const EventView& v, const model::Event& e) {
  EXPECT_EQ(v.device_id, e.device_id);
  EXPECT_EQ(v.timestamp_ns, e.timestamp_ns);
  EXPECT_EQ(v.received_at_ns, e.received_at_ns);
  EXPECT_EQ(v.event_id, e.event_id);
  EXPECT_EQ(v.meta_json, e.meta_json);
  ASSERT_EQ(v.metric_count, e.metrics.size());
  for (size_t i = 0; i < e.metrics.size(); ++i) {
    EXPECT_EQ(v.metrics[i].name, e.metrics[i].name);
    EXPECT_EQ(v.metrics[i].value, e.metrics[i].value);
  }
}

TEST(EventViewTest, ReadsWhatEncodeEventWrites) {
  std::mt19937_64 rng(3);
  EventView view;
  model::Event fallback;
  for (int i = 0; i < 3000; ++i) {
    const model::Event e = RandomEvent(rng, i);
    std::string payload;
    model::EncodeEvent(e, &payload);
    ASSERT_TRUE(ParseEventPayloadV1(payload, &view)) << i;
    ExpectSame(view, e);
    ASSERT_TRUE(DecodeEventView(payload, &view, &fallback).ok());
    ExpectSame(view, e);
    // The row from the view is the row of the event.
    ArchiveRowEncoder encoder;
    std::string from_view, from_event;
    encoder.Append(view, &from_view);
    AppendArchiveRow(e, &from_event);
    ASSERT_EQ(from_view, from_event) << i;
    ASSERT_EQ(from_event, model::EventToJson(e) + "\n") << i;
  }
}

// Accepts exactly what model::DecodeEvent accepts: every truncation and corrupted byte of
// valid payloads, and random bytes.
TEST(EventViewTest, AcceptsExactlyWhatDecodeEventAccepts) {
  std::mt19937_64 rng(5);
  std::uniform_int_distribution<int> byte(0, 255);
  EventView view;
  model::Event decoded, fallback;
  size_t accepted = 0, refused = 0;
  auto check = [&](const std::string& payload) {
    const bool fast = ParseEventPayloadV1(payload, &view);
    const Status slow = model::DecodeEvent(payload, &decoded);
    ASSERT_EQ(fast, slow.ok());
    const Status viewed = DecodeEventView(payload, &view, &fallback);
    ASSERT_EQ(viewed.ok(), slow.ok());
    if (slow.ok()) {
      ExpectSame(view, decoded);
      ++accepted;
    } else {
      EXPECT_EQ(viewed.code(), slow.code());
      ++refused;
    }
  };
  for (int i = 0; i < 300; ++i) {
    const model::Event e = RandomEvent(rng, i % 7);
    std::string payload;
    model::EncodeEvent(e, &payload);
    for (size_t len = 0; len <= payload.size(); ++len) check(payload.substr(0, len));
    for (int k = 0; k < 20; ++k) {
      std::string damaged = payload;
      damaged[static_cast<size_t>(byte(rng)) % damaged.size()] = static_cast<char>(byte(rng));
      check(damaged);
    }
    check(payload + "x");
    std::string noise(static_cast<size_t>(byte(rng)), '\0');
    for (auto& c : noise) c = static_cast<char>(byte(rng));
    check(noise);
  }
  EXPECT_GT(accepted, 300u);
  EXPECT_GT(refused, 1000u);
}

// A payload of another format version goes through model::DecodeEvent (which refuses
// today's unknown versions with its own error).
TEST(EventViewTest, OtherVersionsGoThroughDecodeEvent) {
  model::Event e;
  e.device_id = "d";
  e.metrics = {{"power_w", 1.5}};
  std::string payload;
  model::EncodeEvent(e, &payload);
  payload[0] = 2;
  EventView view;
  model::Event fallback;
  EXPECT_FALSE(ParseEventPayloadV1(payload, &view));
  Status st = DecodeEventView(payload, &view, &fallback);
  EXPECT_EQ(st.code(), StatusCode::kCorruption);
}

}  // namespace
}  // namespace joule::store

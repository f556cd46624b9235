#include "api/live_hub.h"

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "net/sse_stream.h"

namespace joule::api {
namespace {

// Records what it is sent.
class FakeStream : public net::SseStream {
 public:
  bool Send(std::string_view event, std::string_view data) override {
    events.emplace_back(std::string(event), std::string(data));
    return true;
  }
  void Close() override { open = false; }
  bool IsOpen() const override { return open; }
  void SetOnClose(std::function<void()>) override {}

  std::vector<std::pair<std::string, std::string>> events;
  bool open = true;
};

// Found by a black-box test: alert events went to the device's *current* owner, so after
// a device moved from o2 to o1 the resolution of o2's alert reached o1's stream (which may
// not read that alert) and o2's got nothing; for a deleted device it reached nobody.
TEST(LiveHubTest, AlertEventsGoToTheAlertsOwner) {
  std::map<std::string, std::string> owner_of{{"d4", "o1"}};  // moved from o2 to o1
  LiveHub hub([&owner_of](std::string_view id) {
    auto it = owner_of.find(std::string(id));
    return it == owner_of.end() ? std::string() : it->second;
  });
  auto o1 = std::make_shared<FakeStream>();
  auto o2 = std::make_shared<FakeStream>();
  auto admin_o1 = std::make_shared<FakeStream>();  // the admin watching owner o1
  auto d4_by_o1 = std::make_shared<FakeStream>();  // o1's key on the device's stream
  auto d4_by_admin = std::make_shared<FakeStream>();
  auto d3_by_admin = std::make_shared<FakeStream>();
  hub.Subscribe("", "o1", o1, {}, "o1");
  hub.Subscribe("", "o2", o2, {}, "o2");
  hub.Subscribe("", "o1", admin_o1, {}, "");
  hub.Subscribe("d4", "", d4_by_o1, {}, "o1");
  hub.Subscribe("d4", "", d4_by_admin, {}, "");
  hub.Subscribe("d3", "", d3_by_admin, {}, "");

  hub.PublishAlert("d4", "o2", R"({"owner_id":"o2","event":"resolved"})");
  EXPECT_TRUE(o1->events.empty());
  EXPECT_TRUE(admin_o1->events.empty());
  EXPECT_TRUE(d4_by_o1->events.empty()) << "o1 may not read o2's alert";
  ASSERT_EQ(o2->events.size(), 1u);
  EXPECT_EQ(o2->events[0].first, "alert");
  EXPECT_EQ(d4_by_admin->events.size(), 1u) << "the admin's device stream gets every alert";

  // A deleted device (no owner any more): its alert's owner still gets the resolution.
  hub.PublishAlert("d3", "o2", R"({"owner_id":"o2","event":"resolved"})");
  EXPECT_EQ(o2->events.size(), 2u);
  EXPECT_EQ(d3_by_admin->events.size(), 1u);
  EXPECT_TRUE(o1->events.empty());

  // The device's own owner's alerts reach its owner streams and device streams.
  hub.PublishAlert("d4", "o1", R"({"owner_id":"o1","event":"firing"})");
  EXPECT_EQ(o1->events.size(), 1u);
  EXPECT_EQ(admin_o1->events.size(), 1u);
  EXPECT_EQ(d4_by_o1->events.size(), 1u);
  EXPECT_EQ(d4_by_admin->events.size(), 2u);
  EXPECT_EQ(o2->events.size(), 2u);
}

}  // namespace
}  // namespace joule::api

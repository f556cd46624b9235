// GET /v1/stream through the real router and route code: which streams open (404 for a
// device the caller cannot read) and which ones the hub's once-a-second check ends.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <string>

#include "api/api_context.h"
#include "api/auth.h"
#include "api/live_hub.h"
#include "api/routes.h"
#include "common/clock.h"
#include "net/responder.h"
#include "net/router.h"
#include "net/sse_stream.h"
#include "store/history_memory/memory_history_store.h"
#include "store/memory/memory_latest_store.h"
#include "store/sqlite/sqlite_metadata_store.h"

namespace joule::api {
namespace {

constexpr int64_t kT0 = 1'764'000'000 * kNanosPerSecond;
constexpr char kAdminToken[] = "admin-token-for-the-test";

class FakeStream : public net::SseStream {
 public:
  bool Send(std::string_view, std::string_view) override { return open; }
  void Close() override { open = false; }
  bool IsOpen() const override { return open; }
  void SetOnClose(std::function<void()>) override {}
  bool open = true;
};

// The answer: a status and body, or an open stream.
struct Answer {
  int status = 0;
  std::string body;
  std::shared_ptr<FakeStream> stream;
};

class CapturingSink : public net::ResponseSink {
 public:
  explicit CapturingSink(Answer* out) : out_(out) {}
  void Send(net::HttpResponse r) override {
    out_->status = r.status;
    out_->body = std::move(r.body);
  }
  std::shared_ptr<net::SseStream> StartStream(net::HttpHeaders) override {
    out_->status = 200;
    out_->stream = std::make_shared<FakeStream>();
    return out_->stream;
  }

 private:
  Answer* out_;
};

class StreamRoutesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/stream-routes-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    auto metadata = store::SqliteMetadataStore::Open(dir_ + "/meta.db", &clock_);
    ASSERT_TRUE(metadata.ok()) << metadata.status().ToString();
    metadata_ = std::move(*metadata);
    auth_ = std::make_unique<Authenticator>("required", kAdminToken, metadata_.get());
    ctx_.clock = &clock_;
    ctx_.metrics = &metrics_;
    ctx_.auth = auth_.get();
    ctx_.latest = &latest_;
    ctx_.history = &history_;
    ctx_.metadata = metadata_.get();
    ctx_.live = &hub_;
    AddStreamRoutes(router_, ctx_);
  }
  void TearDown() override {
    metadata_.reset();
    std::filesystem::remove_all(dir_);
  }

  void Register(const std::string& device_id, const std::string& owner_id) {
    store::Device d;
    d.device_id = device_id;
    d.owner_id = owner_id;
    std::string token;
    ASSERT_TRUE(metadata_->CreateDevice(d, &token).ok());
  }

  Answer Open(const std::string& name, const std::string& value) {
    net::HttpRequest req;
    req.method = "GET";
    req.path = "/v1/stream";
    req.query.emplace_back(name, value);
    req.headers.emplace_back("authorization", std::string("Bearer ") + kAdminToken);
    Answer a;
    router_.Dispatch(req, net::Responder(std::make_shared<CapturingSink>(&a)));
    return a;
  }

  ManualClock clock_{kT0};
  MetricsRegistry metrics_;
  std::string dir_;
  std::unique_ptr<store::SqliteMetadataStore> metadata_;
  std::unique_ptr<Authenticator> auth_;
  store::MemoryLatestStore latest_;
  store::MemoryHistoryStore history_{store::HistoryRetention::Forever(), &clock_};
  LiveHub hub_{[](std::string_view) { return std::string(); }};
  ApiContext ctx_;
  net::Router router_;
};

// Found by a black-box test: with the admin token, `device_id=nope` answered 200 and stayed
// open (an owner key got 404, as realtime gives the admin), and a device stream went on after
// the device was deleted (only owner keys' streams were checked again).
TEST_F(StreamRoutesTest, AdminDeviceStreamOfAnUnknownDeviceIs404) {
  Answer a = Open("device_id", "nope");
  EXPECT_EQ(a.status, 404) << a.body;
  EXPECT_EQ(a.stream, nullptr);
  EXPECT_EQ(hub_.subscriber_count(), 0u);
}

TEST_F(StreamRoutesTest, AdminDeviceStreamOfADeviceWithDataButNoRegistrationOpens) {
  // auth.mode = "disabled" needs no registration: a device known by its data is streamed.
  ctx_.health = [](std::string_view id, stream::WindowEngine::DeviceHealth*) {
    return id == "unregistered-plug";
  };
  Answer a = Open("device_id", "unregistered-plug");
  ASSERT_EQ(a.status, 200) << a.body;
  ASSERT_NE(a.stream, nullptr);
  EXPECT_EQ(hub_.Revalidate(), 0u) << "never registered, so never deleted: it goes on";
  EXPECT_TRUE(a.stream->IsOpen());
}

TEST_F(StreamRoutesTest, AdminDeviceStreamEndsWhenTheDeviceIsDeleted) {
  Register("plug-1", "home-1");
  Register("plug-2", "home-1");
  Answer one = Open("device_id", "plug-1");
  Answer two = Open("device_id", "plug-2");
  ASSERT_EQ(one.status, 200) << one.body;
  ASSERT_EQ(two.status, 200) << two.body;
  EXPECT_EQ(hub_.Revalidate(), 0u);
  ASSERT_TRUE(metadata_->DeleteDevice("plug-1").ok());
  EXPECT_EQ(hub_.Revalidate(), 1u);
  EXPECT_FALSE(one.stream->IsOpen()) << "the deleted device's stream went on";
  EXPECT_TRUE(two.stream->IsOpen());
}

// The admin's owner streams are like GET /v1/owners/{id}/energy: any owner id, with devices
// or none yet (owners exist only through their devices and keys), 200 and open.
TEST_F(StreamRoutesTest, AdminOwnerStreamOfAnOwnerWithoutDevicesOpens) {
  Answer a = Open("owner_id", "nope");
  EXPECT_EQ(a.status, 200) << a.body;
  Answer bad = Open("owner_id", "not an id");
  EXPECT_EQ(bad.status, 404) << bad.body;
}

}  // namespace
}  // namespace joule::api

// GET /v1/devices/{id}/health through the real router and route code.
#include <gtest/gtest.h>

#include <string>

#include "api/api_context.h"
#include "api/auth.h"
#include "api/routes.h"
#include "common/clock.h"
#include "net/router.h"

namespace joule::api {
namespace {

constexpr int64_t kT0 = 1'764'000'000 * kNanosPerSecond;

// After the server's clock stepped back, the device's last event was received "in the
// future": silent_seconds and lag_seconds are 0, never negative (found by a black-box
// test: silent_seconds −7164 after a restart with the clock 2 h earlier).
TEST(HealthRoutesTest, SilenceAndLagAreNeverNegative) {
  ManualClock clock(kT0);
  MetricsRegistry metrics;
  Authenticator auth("disabled", "", nullptr);
  ApiContext ctx;
  ctx.metrics = &metrics;
  ctx.auth = &auth;
  ctx.clock = &clock;
  ctx.health = [](std::string_view, stream::WindowEngine::DeviceHealth* h) {
    h->last_seen_ns = kT0 + 2 * kNanosPerHour;
    h->last_event_time_ns = kT0 + 2 * kNanosPerHour;
    h->watermark_ns = kT0 + kNanosPerHour;
    return true;
  };
  net::Router router;
  AddHealthRoutes(router, ctx);
  net::HttpRequest req;
  req.method = "GET";
  req.path = "/v1/devices/plug-7/health";
  int status = 0;
  std::string body;
  router.Dispatch(req, net::Responder::FromCallback([&](net::HttpResponse r) {
                    status = r.status;
                    body = std::move(r.body);
                  }));
  ASSERT_EQ(status, 200) << body;
  EXPECT_NE(body.find("\"silent_seconds\":0"), std::string::npos) << body;
  EXPECT_NE(body.find("\"lag_seconds\":0"), std::string::npos) << body;
  EXPECT_EQ(body.find(":-"), std::string::npos) << body;
}

}  // namespace
}  // namespace joule::api

// The HTTP ingest route's per-request work with authentication on, without sockets:
// POST /v1/telemetry through the Router (authenticate, parse + validate, authorize every
// event's device, rate limits, EventAppender → log with durability "none"), N requests of
// 1,000 events, and the process CPU per request.
//
//   ingest_route_bench [--requests N] [--mode admin|device|disabled]
//
// admin: the admin token posts the harness's shape (1,000 different registered devices
// per body, time-major); device: a device token posts 1,000 events of its own device;
// disabled: auth off (the comparison harness's setting). For instruction counts:
//   valgrind --tool=callgrind --toggle-collect='*TelemetryRoute*Handle*' ingest_route_bench
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "api/api_context.h"
#include "api/auth.h"
#include "api/routes.h"
#include "common/clock.h"
#include "common/metrics.h"
#include "ingest/event_appender.h"
#include "ingest/rate_limiter.h"
#include "log/log.h"
#include "net/router.h"
#include "store/metadata_cache.h"
#include "store/sqlite/sqlite_metadata_store.h"

namespace {

using namespace joule;

double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6;
}

[[noreturn]] void Die(const std::string& what, const Status& st) {
  std::fprintf(stderr, "%s: %s\n", what.c_str(), st.ToString().c_str());
  std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  int requests = 200;
  std::string mode = "admin";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--requests") == 0) requests = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--mode") == 0) mode = argv[i + 1];
  }
  constexpr int kDevices = 1000;
  char tmpl[] = "/var/tmp/ingest-route-bench-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) return 1;
  const std::string dir = tmpl;

  MetricsRegistry metrics;
  const Clock* clock = SystemClock::Default();
  auto sqlite = store::SqliteMetadataStore::Open(dir + "/meta.db", clock);
  if (!sqlite.ok()) Die("sqlite", sqlite.status());
  store::MetadataCache metadata(std::move(*sqlite));
  std::string device_token;
  for (int d = 0; d < kDevices; ++d) {
    store::Device dev;
    char id[32];
    std::snprintf(id, sizeof id, "dev-%05d", d);
    dev.device_id = id;
    dev.owner_id = "owner-" + std::to_string(d / 10);
    dev.name = "Bench device " + std::to_string(d);
    dev.timezone = "Europe/Berlin";
    auto created = metadata.CreateDevice(dev, d == 0 ? &device_token : nullptr);
    if (!created.ok()) Die("create device", created.status());
  }
  const std::string admin_token = "bench-admin-token-0123456789abcdef";
  api::Authenticator auth(mode == "disabled" ? "disabled" : "required", admin_token, &metadata);

  log::LogOptions lo;
  lo.dir = dir + "/log";
  lo.fsync = false;
  auto opened = log::Log::Open(lo, &metrics);
  if (!opened.ok()) Die("log", opened.status());
  std::unique_ptr<log::Log> log = std::move(*opened);
  ingest::EventAppender appender(log.get(), &metrics);
  ingest::RateLimiter request_limiter(1e9, 1e9);
  ingest::RateLimiter event_limiter(1e9, 1e9);

  api::ApiContext ctx;
  ctx.clock = clock;
  ctx.metrics = &metrics;
  ctx.auth = &auth;
  ctx.appender = &appender;
  ctx.metadata = &metadata;
  if (mode != "disabled") {
    ctx.request_limiter = &request_limiter;
    ctx.event_limiter = &event_limiter;
  }
  net::Router router;
  api::AddTelemetryRoutes(router, ctx);

  // One body per request shape, timestamps one second apart ending now.
  const int64_t now_ms = clock->NowNanos() / 1'000'000;
  std::string body = "[";
  for (int i = 0; i < kDevices; ++i) {
    char ev[256];
    const int device = mode == "device" ? 0 : i;
    const int64_t ts = mode == "device" ? now_ms - (kDevices - i) * 1000 : now_ms - 1000;
    std::snprintf(ev, sizeof ev,
                  "%s{\"device_id\":\"dev-%05d\",\"timestamp\":%lld,\"metrics\":{\"power_w\":%d.5,"
                  "\"voltage_v\":230.1,\"current_a\":%d.25,\"energy_wh\":%d}}",
                  i ? "," : "", device, static_cast<long long>(ts), 100 + i % 900, i % 16,
                  1000 + i);
    body += ev;
  }
  body += "]";
  const std::string bearer = "Bearer " + (mode == "device" ? device_token : admin_token);

  int accepted = 0;
  double cpu = 0;
  for (int r = 0; r < requests; ++r) {
    net::HttpRequest req;
    req.method = "POST";
    req.path = "/v1/telemetry";
    req.headers.emplace_back("content-type", "application/json");
    req.headers.emplace_back("authorization", bearer);
    req.body = body;
    int status = 0;
    const double c0 = CpuSeconds();
    router.Dispatch(req, net::Responder::FromCallback(
                             [&status](net::HttpResponse resp) { status = resp.status; }));
    (void)log->Flush();  // the answer comes from the log's writer thread
    cpu += CpuSeconds() - c0;
    if (status == 202) ++accepted;
  }
  std::printf(
      "{\"mode\": \"%s\", \"requests\": %d, \"accepted\": %d, \"events_per_request\": %d, "
      "\"cpu_us_per_request\": %.1f}\n",
      mode.c_str(), requests, accepted, kDevices, 1e6 * cpu / requests);
  log.reset();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return accepted == requests ? 0 : 1;
}

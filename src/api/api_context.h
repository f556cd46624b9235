// ApiContext: what the HTTP routes need from the rest of the system. Owned by the app;
// every pointer outlives the server.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "api/auth.h"
#include "common/clock.h"
#include "common/metrics.h"
#include "ingest/event_appender.h"
#include "ingest/rate_limiter.h"
#include "ingest/telemetry_parser.h"
#include "model/aggregate_record.h"
#include "store/history_store.h"
#include "store/latest_store.h"
#include "stream/window_engine.h"

namespace joule::alert {
class AlertEngine;
}
namespace joule::store {
class AuditLog;
}

namespace joule::api {

class LiveHub;
class RecordJsonCache;
class ReplayService;

struct ApiContext {
  const Clock* clock = nullptr;
  MetricsRegistry* metrics = nullptr;
  const Authenticator* auth = nullptr;
  ingest::IngestLimits limits;
  ingest::EventAppender* appender = nullptr;
  // Token buckets (null = unlimited): requests per device token / owner key
  // ("device:<id>", "owner:<id>"; never the admin token), events per device id.
  ingest::RateLimiter* request_limiter = nullptr;
  ingest::RateLimiter* event_limiter = nullptr;
  // Elapsed time for the rate limiters (the server: MonotonicClock, so that a step of the
  // wall clock neither refuses a device nor lets a burst through); null = `clock`.
  const Clock* limiter_clock = nullptr;
  store::LatestStore* latest = nullptr;
  size_t latest_windows = 60;
  // GET /v1/stream: streams open at once per owner key (0 = unlimited; admin unlimited).
  size_t streams_per_key = 16;
  // POST /v1/rules: rules an owner key may hold (0 = unlimited; the admin is not limited).
  size_t rules_per_owner = 100;
  // [metrics.kinds]: overrides of model::DefaultMetricKind (CONTRACT §2 "Metric kinds"), as
  // the window engine has them. Rules refuse an aggregate the metric's kind lacks, owner
  // energy a metric that is neither power nor counter.
  std::map<std::string, model::MetricKind, std::less<>> metric_kinds;
  // A metric's kind: configured, else by its name.
  model::MetricKind KindOf(std::string_view metric) const {
    auto it = metric_kinds.find(metric);
    return it != metric_kinds.end() ? it->second : model::DefaultMetricKind(metric);
  }
  // State of a remote latest store (Redis); null = always usable (the memory store).
  // While it is down or catching up after an outage, realtime reads go to history.
  struct LatestState {
    bool up = true;
    size_t pending_records = 0;  // catch-up backlog: buffered records
    size_t pending_devices = 0;  // devices with something to write
    int64_t down_since_ns = 0;
    uint64_t outages = 0;
    std::string last_error;
    bool usable() const { return up && pending_devices == 0; }
  };
  std::function<LatestState()> latest_state;
  // Called when a realtime read finds the latest store unreachable (Unavailable): marks it
  // down as a failed write does (store::LatestStoreHealth::ReportFailure). May be empty.
  std::function<void(const Status&)> latest_failed;
  store::HistoryStore* history = nullptr;
  // Encoded JSON of history records (the history route's fast path); may be null.
  RecordJsonCache* history_json_cache = nullptr;
  int64_t base_window_ns = 60'000'000'000;
  // Per-device stream health from the processor that owns the device; false = unknown.
  std::function<bool(std::string_view, stream::WindowEngine::DeviceHealth*)> health;
  // Device metadata, tokens, keys, rules and alerts (through the cache). May be null.
  store::MetadataStore* metadata = nullptr;
  LiveHub* live = nullptr;               // SSE fan-out
  alert::AlertEngine* alerts = nullptr;  // rules reload, ack/snooze, delivery status; may be null
  store::AuditLog* audit = nullptr;      // administrative actions (api/audit.h); may be null
  ReplayService* replay = nullptr;       // POST/GET /v1/admin/replay; null = not available
  // Readiness: true once the processors have caught up with the log after start.
  std::function<bool()> ready;
  // True while the processors restore their state at start (the listeners are open by
  // then): a device's health is not known yet. May be empty (never restoring).
  std::function<bool()> restoring;
  // Damaged log records met at run time, each as a JSON object (log::CorruptionReportJson,
  // docs/RELIABILITY.md); a non-empty list makes /readyz "degraded". May be empty.
  std::function<std::vector<std::string>()> log_damage;
  // Writers stopped by a failing disk (a full one; docs/RELIABILITY.md #6): "log" (every
  // append refused until one succeeds again), "history" (the processors' history writes,
  // retried), "archive" (its rounds, retried) and "metadata" (writes refused for a full
  // disk: "metadata": {"state": "failing"}). Each one failing makes /readyz "degraded".
  // May be empty.
  struct WriterFault {
    std::string writer;  // "log", "history", "archive" or "metadata"
    int64_t since_ns = 0;
    std::string error;
    uint64_t pending_records = 0;  // history records waiting for the retry
  };
  std::function<std::vector<WriterFault>()> writer_faults;
};

}  // namespace joule::api

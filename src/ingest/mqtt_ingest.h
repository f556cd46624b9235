// MqttIngest: the MQTT side of telemetry ingest (CONTRACT §1 "MQTT ingest",
// docs/formats/mqtt.md §4). It is the SessionHandler of a net::mqtt::MqttListener:
//   CONNECT: user name = device id, password = a device token of that device
//            (MetadataStore::AuthenticateToken); with auth disabled any valid device id.
//   PUBLISH: topic ACL (only devices/{own id}/telemetry) → TelemetryParser (the HTTP rules,
//            device_id optional and bound to the topic) → EventAppender → the outcome is
//            reported once every accepted event is durable (so PUBACK means durable).
//
// Thread-safety: OnConnect and OnPublish may be called concurrently from any io thread
// (one TelemetryParser per thread). `metadata` (may be null with auth disabled), `appender`,
// `metrics` and `clock` must outlive this object, and this object must outlive the log's
// writer thread (publish outcomes are reported from it).
#pragma once

#include <map>
#include <mutex>
#include <string>

#include "common/clock.h"
#include "common/metrics.h"
#include "ingest/event_appender.h"
#include "ingest/rate_limiter.h"
#include "ingest/telemetry_parser.h"
#include "net/mqtt/listener.h"

namespace joule::store {
class MetadataStore;
}

namespace joule::ingest {

struct MqttIngestOptions {
  bool auth_disabled = false;
  IngestLimits limits;
  const Clock* clock = nullptr;  // null: SystemClock::Default()
  // Events per device (null = unlimited); over the limit a publish is refused with
  // quota exceeded (0x97; MQTT 3.1.1: disconnect) and nothing is stored.
  RateLimiter* event_limiter = nullptr;
  // Elapsed time for event_limiter (the server: MonotonicClock; a wall clock step must not
  // refuse a device or let a burst through). null: `clock`.
  const Clock* limiter_clock = nullptr;
};

class MqttIngest final : public net::mqtt::SessionHandler {
 public:
  MqttIngest(MqttIngestOptions options, store::MetadataStore* metadata, EventAppender* appender,
             MetricsRegistry* metrics);

  net::mqtt::ConnectDecision OnConnect(const net::mqtt::ConnectRequest& request) override;
  void OnPublish(const net::mqtt::PublishRequest& request, PublishDone done) override;

  // "devices/{device_id}/telemetry"
  static std::string TopicOf(std::string_view device_id);

 private:
  Counter* Rejected(const std::string& code);

  const MqttIngestOptions options_;
  store::MetadataStore* const metadata_;
  EventAppender* const appender_;
  MetricsRegistry* const metrics_;
  Counter* auth_failures_;
  Counter* acl_denied_;
  Counter* accepted_events_;
  Counter* messages_accepted_;
  Counter* messages_invalid_;
  Counter* messages_denied_;
  Counter* messages_unavailable_;
  Counter* messages_rate_limited_;
  Counter* limited_events_;
  Counter* unavailable_events_;  // joule_events_rejected_total{code="unavailable"}
  std::mutex mu_;
  std::map<std::string, Counter*, std::less<>> rejected_;  // guarded by mu_
};

}  // namespace joule::ingest

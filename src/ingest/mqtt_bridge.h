// MqttBridge: telemetry from an external MQTT broker (bridge mode, `ingest.mqtt_bridge_*`,
// docs/formats/mqtt.md §6). It is the MessageHandler of a net::mqtt::MqttSubscriber:
//   topic devices/{device_id}/telemetry → that device (the payload's device_id, if any,
//   must match); any other topic → the payload's device_id is required.
//   payload → TelemetryParser (the HTTP rules) → with auth on, only registered devices
//   (like an admin-token HTTP request) → EventAppender → keep = true once durable, so the
//   broker gets its PUBACK only then.
// A payload that can never be stored (invalid, too large — also one the subscriber skipped
// unread, ReceivedMessage::too_large_bytes —, unknown device) is counted and acknowledged
// (keep = true), or the broker would redeliver it forever. When the log refuses (full), or
// the metadata store cannot tell whether a device is registered (unreachable, the device
// not in its cache), keep = false: the subscriber hands it over again after a pause.
//
// Thread-safety: OnMessage is called on the subscriber's strand (one at a time); outcomes
// are reported from the log's writer thread. `metadata` (null with auth disabled),
// `appender`, `metrics` and `clock` must outlive this object, and this object must outlive
// the log's writer thread.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "common/clock.h"
#include "common/metrics.h"
#include "ingest/event_appender.h"
#include "ingest/telemetry_parser.h"
#include "net/mqtt/subscriber.h"

namespace joule::store {
class MetadataStore;
}

namespace joule::ingest {

struct MqttBridgeOptions {
  bool auth_disabled = false;
  IngestLimits limits;
  const Clock* clock = nullptr;  // null: SystemClock::Default()
  // How long a device found registered is trusted without asking the metadata store.
  int64_t device_cache_ttl_ns = 60'000'000'000;
};

class MqttBridge final : public net::mqtt::MessageHandler {
 public:
  MqttBridge(MqttBridgeOptions options, store::MetadataStore* metadata, EventAppender* appender,
             MetricsRegistry* metrics);

  void OnMessage(const net::mqtt::ReceivedMessage& message, Done done) override;

 private:
  // Unavailable when the metadata store cannot tell.
  Result<bool> Registered(const std::string& device_id, int64_t now_ns);
  Counter* Rejected(const std::string& code);

  const MqttBridgeOptions options_;
  store::MetadataStore* const metadata_;
  EventAppender* const appender_;
  MetricsRegistry* const metrics_;
  TelemetryParser parser_;  // used on the subscriber's strand only
  // Reused by every message (its events' buffers too); on the strand only, and no longer
  // referenced once OnMessage returns (Append encodes the events before it returns).
  ParsedBody body_;
  std::map<std::string, int64_t, std::less<>> registered_until_;  // device → cache expiry
  std::map<std::string, Counter*, std::less<>> rejected_;
  Counter* accepted_events_;
  Counter* messages_accepted_;
  Counter* messages_invalid_;
  Counter* messages_unknown_device_;
  Counter* messages_unavailable_;
};

}  // namespace joule::ingest

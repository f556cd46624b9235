#include "ingest/mqtt_bridge.h"

#include <utility>
#include <vector>

#include "ingest/error_codes.h"
#include "ingest/validation.h"
#include "store/metadata_store.h"

namespace joule::ingest {

namespace {

Counter* Messages(MetricsRegistry* m, const char* result) {
  return m->GetCounter("joule_mqtt_bridge_messages_total",
                       "Messages received from the MQTT bridge's broker, by outcome.",
                       {{"result", result}});
}

// "devices/{id}/telemetry" → id; anything else → empty.
std::string_view TopicDevice(std::string_view topic) {
  constexpr std::string_view kPrefix = "devices/";
  constexpr std::string_view kSuffix = "/telemetry";
  if (topic.size() <= kPrefix.size() + kSuffix.size() ||
      topic.substr(0, kPrefix.size()) != kPrefix ||
      topic.substr(topic.size() - kSuffix.size()) != kSuffix) {
    return {};
  }
  std::string_view id =
      topic.substr(kPrefix.size(), topic.size() - kPrefix.size() - kSuffix.size());
  return ValidDeviceId(id) ? id : std::string_view();
}

}  // namespace

MqttBridge::MqttBridge(MqttBridgeOptions options, store::MetadataStore* metadata,
                       EventAppender* appender, MetricsRegistry* metrics)
    : options_(std::move(options)),
      metadata_(metadata),
      appender_(appender),
      metrics_(metrics),
      parser_(options_.limits) {
  accepted_events_ =
      metrics_->GetCounter("joule_events_accepted_total", "Events accepted and durable");
  messages_accepted_ = Messages(metrics_, "accepted");
  messages_invalid_ = Messages(metrics_, "invalid_payload");
  messages_unknown_device_ = Messages(metrics_, "unknown_device");
  messages_unavailable_ = Messages(metrics_, "unavailable");
}

Counter* MqttBridge::Rejected(const std::string& code) {
  auto it = rejected_.find(code);
  if (it != rejected_.end()) return it->second;
  Counter* c = metrics_->GetCounter("joule_events_rejected_total", "Events rejected, by error code",
                                    {{"code", code}});
  rejected_.emplace(code, c);
  return c;
}

Result<bool> MqttBridge::Registered(const std::string& device_id, int64_t now_ns) {
  auto it = registered_until_.find(device_id);
  if (it != registered_until_.end() && it->second > now_ns) return true;
  if (metadata_ == nullptr) return false;
  Result<store::Device> device = metadata_->GetDevice(device_id);
  if (!device.ok()) {
    if (device.status().code() == StatusCode::kUnavailable) return device.status();
    return false;
  }
  registered_until_[device_id] = now_ns + options_.device_cache_ttl_ns;
  return true;
}

void MqttBridge::OnMessage(const net::mqtt::ReceivedMessage& message, Done done) {
  const Clock* clock = options_.clock != nullptr ? options_.clock : SystemClock::Default();
  const int64_t now = clock->NowNanos();
  if (message.too_large_bytes > 0) {
    // Larger than the packet limit: the subscriber skipped its payload unread. Refused
    // like a payload over limits.max_body_bytes, and acknowledged: withheld, the broker
    // would redeliver it on every connection.
    Rejected("payload_too_large")->Inc();
    messages_invalid_->Inc();
    done(true);
    return;
  }
  ParsedBody& body = body_;
  const Status parsed =
      parser_.ParseInto(message.payload, BodyFormat::kJson, now, TopicDevice(message.topic), &body);
  if (!parsed.ok()) {
    Rejected(BodyErrorCode(parsed))->Inc();
    messages_invalid_->Inc();
    done(true);  // it will never be valid: acknowledge, so the broker does not resend it
    return;
  }
  for (const EventError& e : body.errors) Rejected(e.code)->Inc();
  if (!options_.auth_disabled) {
    // Registered events compacted in place (swapped: body_ keeps every event's buffers).
    size_t kept = 0;
    for (size_t i = 0; i < body.events.size(); ++i) {
      Result<bool> registered = Registered(body.events[i].device_id, now);
      if (!registered.ok()) {
        // Not an unknown device: the metadata store cannot tell now. Not acknowledged, so
        // it comes again (until session 19 events of registered devices the cache did not
        // hold were acknowledged and dropped as unknown_device while PostgreSQL was down;
        // found while checking the outage paths of a black-box report).
        messages_unavailable_->Inc();
        done(false);
        return;
      }
      if (*registered) {
        if (kept != i) std::swap(body.events[kept], body.events[i]);
        ++kept;
      } else {
        Rejected("unknown_device")->Inc();
      }
    }
    if (kept == 0 && !body.events.empty()) {
      messages_unknown_device_->Inc();
      done(true);
      return;
    }
    body.events.resize(kept);
  }
  if (body.events.empty()) {
    messages_invalid_->Inc();
    done(true);
    return;
  }
  const uint64_t n = body.events.size();
  auto shared_done = std::make_shared<Done>(std::move(done));
  Status st = appender_->Append(body.events, [this, shared_done, n](Status s) {
    if (s.ok()) {
      accepted_events_->Inc(n);
      messages_accepted_->Inc();
      (*shared_done)(true);
    } else {
      // Some partitions may be durable already; the redelivered copies are de-duplicated
      // by event_id (docs/formats/mqtt.md §6).
      messages_unavailable_->Inc();
      (*shared_done)(false);
    }
  });
  if (!st.ok()) {
    messages_unavailable_->Inc();
    (*shared_done)(false);
  }
}

}  // namespace joule::ingest

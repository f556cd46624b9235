#include "ingest/mqtt_ingest.h"

#include <memory>
#include <utility>

#include "ingest/error_codes.h"
#include "ingest/parse_scratch.h"
#include "ingest/validation.h"
#include "store/metadata_store.h"

namespace joule::ingest {

namespace mqtt = net::mqtt;

namespace {

// Longest list of rejected indices in a PUBACK's reason string (an MQTT string holds 64 KiB).
constexpr size_t kMaxListedRejects = 16 << 10;

Counter* Messages(MetricsRegistry* m, const char* result) {
  return m->GetCounter("joule_mqtt_messages_total", "MQTT PUBLISH messages, by outcome.",
                       {{"result", result}});
}

}  // namespace

MqttIngest::MqttIngest(MqttIngestOptions options, store::MetadataStore* metadata,
                       EventAppender* appender, MetricsRegistry* metrics)
    : options_(std::move(options)), metadata_(metadata), appender_(appender), metrics_(metrics) {
  auth_failures_ = metrics_->GetCounter("joule_mqtt_auth_failures_total",
                                        "MQTT CONNECTs refused for bad credentials.");
  acl_denied_ = metrics_->GetCounter("joule_mqtt_acl_denied_total",
                                     "MQTT publishes to a topic the device may not write.");
  accepted_events_ =
      metrics_->GetCounter("joule_events_accepted_total", "Events accepted and durable");
  messages_accepted_ = Messages(metrics_, "accepted");
  messages_invalid_ = Messages(metrics_, "invalid_payload");
  messages_denied_ = Messages(metrics_, "not_authorized");
  messages_unavailable_ = Messages(metrics_, "unavailable");
  messages_rate_limited_ = Messages(metrics_, "rate_limited");
  unavailable_events_ = Rejected("unavailable");
  limited_events_ = metrics_->GetCounter("joule_rate_limited_total",
                                         "Requests refused by a rate limit", {{"kind", "events"}});
}

std::string MqttIngest::TopicOf(std::string_view device_id) {
  std::string topic = "devices/";
  topic.append(device_id);
  topic.append("/telemetry");
  return topic;
}

Counter* MqttIngest::Rejected(const std::string& code) {
  std::lock_guard lock(mu_);
  auto it = rejected_.find(code);
  if (it != rejected_.end()) return it->second;
  Counter* c = metrics_->GetCounter("joule_events_rejected_total", "Events rejected, by error code",
                                    {{"code", code}});
  rejected_.emplace(code, c);
  return c;
}

mqtt::ConnectDecision MqttIngest::OnConnect(const mqtt::ConnectRequest& request) {
  mqtt::ConnectDecision refused;
  refused.reason_code = mqtt::reason::kBadUserNameOrPassword;
  if (!request.username || !ValidDeviceId(*request.username)) {
    auth_failures_->Inc();
    return refused;
  }
  if (!options_.auth_disabled) {
    if (!request.password || metadata_ == nullptr) {
      auth_failures_->Inc();
      return refused;
    }
    Result<store::Principal> p = metadata_->AuthenticateToken(*request.password);
    if (!p.ok() && p.status().code() == StatusCode::kUnavailable) {
      // A token the metadata cache does not hold while the database is unreachable: not
      // a bad password — "server unavailable" (3.1.1 return code 3), the client retries.
      mqtt::ConnectDecision unavailable;
      unavailable.reason_code = mqtt::reason::kServerUnavailable;
      return unavailable;
    }
    if (!p.ok() || p->kind != store::PrincipalKind::kDevice || p->device_id != *request.username) {
      auth_failures_->Inc();
      return refused;
    }
  }
  mqtt::ConnectDecision ok;
  ok.principal = *request.username;
  if (!options_.auth_disabled) ok.credential = *request.password;
  return ok;
}

void MqttIngest::OnPublish(const mqtt::PublishRequest& request, PublishDone done) {
  const std::string& device_id = *request.principal;
  std::string_view topic = request.topic;
  constexpr std::string_view kPrefix = "devices/";
  constexpr std::string_view kSuffix = "/telemetry";
  const bool own_topic = topic.size() == kPrefix.size() + device_id.size() + kSuffix.size() &&
                         topic.substr(0, kPrefix.size()) == kPrefix &&
                         topic.substr(kPrefix.size(), device_id.size()) == device_id &&
                         topic.substr(kPrefix.size() + device_id.size()) == kSuffix;
  if (!own_topic) {
    acl_denied_->Inc();
    messages_denied_->Inc();
    done({mqtt::reason::kNotAuthorized,
          "device '" + device_id + "' may publish only to " + TopicOf(device_id)});
    return;
  }
  // The token the connection was opened with must still be valid: rotating a device's
  // token or deleting the device revokes it at once, for open connections too (a cached
  // lookup; the cache drops revoked tokens before the revoking request returns).
  if (!options_.auth_disabled) {
    Result<store::Principal> p =
        request.credential != nullptr
            ? metadata_->AuthenticateToken(*request.credential)
            : Result<store::Principal>(Status::Unauthenticated("no credential"));
    if (!p.ok() && p.status().code() == StatusCode::kUnavailable) {
      messages_unavailable_->Inc();
      done({mqtt::reason::kUnspecifiedError,
            "cannot check the token now: the metadata store is unreachable"});
      return;
    }
    if (!p.ok() || p->kind != store::PrincipalKind::kDevice || p->device_id != device_id) {
      auth_failures_->Inc();
      messages_denied_->Inc();
      mqtt::PublishOutcome revoked{
          mqtt::reason::kNotAuthorized,
          "the token this connection was opened with was revoked; nothing was stored"};
      revoked.disconnect = true;
      done(std::move(revoked));
      return;
    }
  }

  // The thread's parser and ParsedBody (ParseScratch): nothing below suspends between the
  // parse and Append (which encodes the events), so the events are not referenced after
  // the next message's parse on this thread.
  thread_local ParseScratch scratch;
  ParseScratch::Lease lease(&scratch, options_.limits);
  const Clock* clock = options_.clock != nullptr ? options_.clock : SystemClock::Default();
  const int64_t now = clock->NowNanos();
  ParsedBody& body = lease.body();
  const Status parsed =
      lease.parser().ParseInto(request.payload, BodyFormat::kJson, now, device_id, &body);
  if (!parsed.ok()) {
    Rejected(BodyErrorCode(parsed))->Inc();
    messages_invalid_->Inc();
    done({mqtt::reason::kPayloadFormatInvalid, parsed.message()});
    return;
  }
  if (body.events.empty()) {
    for (const EventError& e : body.errors) Rejected(e.code)->Inc();
    messages_invalid_->Inc();
    const EventError& first = body.errors.front();
    done({mqtt::reason::kPayloadFormatInvalid,
          "event " + std::to_string(first.index) + ": " + first.code + ": " + first.message});
    return;
  }
  if (options_.event_limiter != nullptr &&
      !options_.event_limiter->TryAcquire(
          device_id, static_cast<double>(body.events.size()),
          options_.limiter_clock != nullptr ? options_.limiter_clock->NowNanos() : now, nullptr)) {
    limited_events_->Inc();
    messages_rate_limited_->Inc();
    mqtt::PublishOutcome limited{
        mqtt::reason::kQuotaExceeded,
        "too many events for device '" + device_id + "'; nothing was stored"};
    limited.rate_limited = true;
    // More events than the device's bucket holds can never pass: a final answer (3.1.1
    // gets a PUBACK rather than a closed connection and a resend for ever).
    if (static_cast<double>(body.events.size()) > options_.event_limiter->burst()) {
      limited.reason_string +=
          "; at most " + std::to_string(static_cast<uint64_t>(options_.event_limiter->burst())) +
          " events fit in one message: split it";
      limited.permanent = true;
    }
    done(std::move(limited));
    return;
  }
  // Counted once the message is not refused by the rate limit, as HTTP counts them once a
  // request passes it: a refused message is sent again, and its invalid events were
  // counted on every try (until session 25; found by the simulator's ground-truth runs).
  for (const EventError& e : body.errors) Rejected(e.code)->Inc();
  std::string partial;
  if (!body.errors.empty()) {
    partial = "accepted " + std::to_string(body.events.size()) + ", rejected " +
              std::to_string(body.errors.size()) + " (first: event " +
              std::to_string(body.errors.front().index) + " " + body.errors.front().code + ")";
    // Every rejected event's index, so that a publisher can tell which of its events were
    // stored (HTTP lists them in the response); bounded, "…" when cut short.
    partial += "; rejected events:";
    for (size_t i = 0; i < body.errors.size(); ++i) {
      if (partial.size() > kMaxListedRejects) {
        partial += " …";
        break;
      }
      partial += (i ? "," : " ") + std::to_string(body.errors[i].index);
    }
  }
  const uint64_t n = body.events.size();
  Counter* unavailable = unavailable_events_;
  auto shared_done = std::make_shared<PublishDone>(std::move(done));
  Status st = appender_->Append(
      body.events, [this, shared_done, n, unavailable, partial = std::move(partial)](Status s) {
        if (s.ok()) {
          accepted_events_->Inc(n);
          messages_accepted_->Inc();
          (*shared_done)({mqtt::reason::kSuccess, partial});
        } else {
          unavailable->Inc(n);
          messages_unavailable_->Inc();
          (*shared_done)({mqtt::reason::kQuotaExceeded, "the log cannot take more right now"});
        }
      });
  if (!st.ok()) {
    unavailable->Inc(n);
    messages_unavailable_->Inc();
    (*shared_done)({mqtt::reason::kQuotaExceeded, "the log cannot take more right now"});
  }
}

}  // namespace joule::ingest

// LiveHub: fans records, readings and alerts out to Server-Sent-Event subscribers
// (GET /v1/stream?device_id= or owner_id=). Publishers (processor threads, the alert
// engine) pay one mutex-protected lookup when nobody listens; JSON is encoded only when
// somebody does. A slow subscriber is dropped by its stream's bounded queue, never
// slowing the pipeline. Thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "model/aggregate_record.h"
#include "model/event.h"

namespace joule::net {
class SseStream;
}

namespace joule::api {

class LiveHub {
 public:
  // Resolves a device's owner (for owner subscriptions); "" when unknown.
  using OwnerOf = std::function<std::string(std::string_view device_id)>;
  explicit LiveHub(OwnerOf owner_of);

  // Exactly one of device_id / owner_id is non-empty.
  uint64_t Subscribe(std::string device_id, std::string owner_id,
                     std::shared_ptr<net::SseStream> stream);
  void Unsubscribe(uint64_t id);

  void PublishRecord(const model::AggregateRecord& record);
  void PublishReading(const model::Event& event);
  // `event` is the SSE event name ("alert"); `json` its data.
  void Publish(std::string_view device_id, std::string_view event, const std::string& json);

  size_t subscriber_count() const;

 private:
  struct Subscriber {
    uint64_t id;
    std::shared_ptr<net::SseStream> stream;
  };
  // Streams listening to this device (directly or through its owner); empty = nobody.
  std::vector<std::shared_ptr<net::SseStream>> Targets(std::string_view device_id);

  OwnerOf owner_of_;
  mutable std::mutex mu_;
  uint64_t next_id_ = 1;
  std::unordered_map<std::string, std::vector<Subscriber>> by_device_;
  std::unordered_map<std::string, std::vector<Subscriber>> by_owner_;
  std::atomic<size_t> count_{0};  // read without the lock on the publish path
};

// JSON of a raw reading: {"device_id","timestamp","received_at","metrics","meta"}.
std::string ReadingToJson(const model::Event& event);

}  // namespace joule::api

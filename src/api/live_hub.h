// LiveHub: fans records, readings and alerts out to Server-Sent-Event subscribers
// (GET /v1/stream?device_id= or owner_id=). Publishers (processor threads, the alert
// engine) pay one mutex-protected lookup when nobody listens; JSON is encoded only when
// somebody does. A slow subscriber is dropped by its stream's bounded queue, never
// slowing the pipeline. Thread-safe.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
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

  // Whether a subscriber may still receive (its token still valid, the device still its
  // owner's); asked by Revalidate, never on the publish path.
  using Allowed = std::function<bool()>;

  // Exactly one of device_id / owner_id is non-empty. `allowed` may be empty (always).
  // `reader_owner`: the owner the subscriber reads as (an owner key's), "" for the admin;
  // a device stream gets only the alerts of that owner (PublishAlert).
  uint64_t Subscribe(std::string device_id, std::string owner_id,
                     std::shared_ptr<net::SseStream> stream, Allowed allowed = {},
                     std::string reader_owner = {});
  void Unsubscribe(uint64_t id);

  // Asks every subscriber's `allowed` (outside the lock) and closes the streams refused: a
  // revoked key or a device moved to another owner ends the streams opened with it
  // (SECURITY.md "Revocation is immediate"; streams escape every timeout). Returns how many
  // it closed.
  size_t Revalidate();
  // Revalidate every `interval_ns` on a thread of its own until StopRevalidator (or the
  // destructor). Everything `allowed` refers to must outlive StopRevalidator.
  void StartRevalidator(int64_t interval_ns);
  void StopRevalidator();
  ~LiveHub();

  void PublishRecord(const model::AggregateRecord& record);
  void PublishReading(const model::Event& event);
  // An `alert` event, routed by the alert's owner — not the device's current owner, which
  // differs once the device moved (and is none once it was deleted): the streams of
  // `owner_id`, and the device's streams opened by the admin or by `owner_id`'s keys.
  // (It went by the device's owner: after a move, the old owner's resolution went to the
  // new owner's stream and the old owner got nothing; found by a black-box test.)
  void PublishAlert(std::string_view device_id, std::string_view owner_id, const std::string& json);

  size_t subscriber_count() const;

 private:
  struct Subscriber {
    uint64_t id;
    std::shared_ptr<net::SseStream> stream;
    Allowed allowed;
    std::string reader_owner;  // "" for the admin
  };
  // Streams listening to this device (directly or through its owner); empty = nobody.
  std::vector<std::shared_ptr<net::SseStream>> Targets(std::string_view device_id);

  OwnerOf owner_of_;
  mutable std::mutex mu_;
  uint64_t next_id_ = 1;
  std::unordered_map<std::string, std::vector<Subscriber>> by_device_;
  std::unordered_map<std::string, std::vector<Subscriber>> by_owner_;
  std::atomic<size_t> count_{0};  // read without the lock on the publish path

  std::mutex revalidator_mu_;
  std::condition_variable revalidator_cv_;
  bool revalidator_stop_ = false;
  std::thread revalidator_;
};

// JSON of a raw reading: {"device_id","timestamp","received_at","metrics","meta"}.
std::string ReadingToJson(const model::Event& event);

}  // namespace joule::api

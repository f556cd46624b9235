#include "api/live_hub.h"

#include <chrono>

#include "common/json_writer.h"
#include "common/thread_priority.h"
#include "common/time_format.h"
#include "net/sse_stream.h"

namespace joule::api {

LiveHub::LiveHub(OwnerOf owner_of) : owner_of_(std::move(owner_of)) {}

LiveHub::~LiveHub() { StopRevalidator(); }

uint64_t LiveHub::Subscribe(std::string device_id, std::string owner_id,
                            std::shared_ptr<net::SseStream> stream, Allowed allowed,
                            std::string reader_owner) {
  std::lock_guard lock(mu_);
  uint64_t id = next_id_++;
  Subscriber sub{id, std::move(stream), std::move(allowed), std::move(reader_owner)};
  if (!device_id.empty()) {
    by_device_[device_id].push_back(std::move(sub));
  } else {
    by_owner_[owner_id].push_back(std::move(sub));
  }
  ++count_;
  return id;
}

void LiveHub::Unsubscribe(uint64_t id) {
  std::lock_guard lock(mu_);
  for (auto* index : {&by_device_, &by_owner_}) {
    for (auto it = index->begin(); it != index->end(); ++it) {
      auto& subs = it->second;
      for (size_t i = 0; i < subs.size(); ++i) {
        if (subs[i].id == id) {
          subs.erase(subs.begin() + static_cast<ptrdiff_t>(i));
          if (subs.empty()) index->erase(it);
          --count_;
          return;
        }
      }
    }
  }
}

size_t LiveHub::Revalidate() {
  std::vector<std::pair<std::shared_ptr<net::SseStream>, Allowed>> subs;
  {
    std::lock_guard lock(mu_);
    for (auto* index : {&by_device_, &by_owner_}) {
      for (const auto& [key, list] : *index) {
        for (const Subscriber& s : list) {
          if (s.allowed) subs.emplace_back(s.stream, s.allowed);
        }
      }
    }
  }
  size_t closed = 0;
  for (auto& [stream, allowed] : subs) {
    if (stream->IsOpen() && !allowed()) {
      stream->Close();  // its on-close callback unsubscribes it
      ++closed;
    }
  }
  return closed;
}

void LiveHub::StartRevalidator(int64_t interval_ns) {
  std::lock_guard lock(revalidator_mu_);
  if (revalidator_.joinable()) return;
  revalidator_stop_ = false;
  revalidator_ = std::thread([this, interval_ns] {
    SetUpThread("joule-live-hub", 0);
    std::unique_lock lock(revalidator_mu_);
    while (!revalidator_cv_.wait_for(lock, std::chrono::nanoseconds(interval_ns),
                                     [this] { return revalidator_stop_; })) {
      lock.unlock();
      Revalidate();
      lock.lock();
    }
  });
}

void LiveHub::StopRevalidator() {
  {
    std::lock_guard lock(revalidator_mu_);
    revalidator_stop_ = true;
  }
  revalidator_cv_.notify_all();
  if (revalidator_.joinable()) revalidator_.join();
}

size_t LiveHub::subscriber_count() const { return count_.load(std::memory_order_relaxed); }

std::vector<std::shared_ptr<net::SseStream>> LiveHub::Targets(std::string_view device_id) {
  std::vector<std::shared_ptr<net::SseStream>> out;
  // The common case — nobody listens — costs one relaxed load, no lock.
  if (count_.load(std::memory_order_relaxed) == 0) return out;
  bool owners;
  {
    std::lock_guard lock(mu_);
    auto it = by_device_.find(std::string(device_id));
    if (it != by_device_.end()) {
      for (const auto& s : it->second) out.push_back(s.stream);
    }
    owners = !by_owner_.empty();
  }
  if (owners) {
    std::string owner = owner_of_ ? owner_of_(device_id) : std::string();
    if (!owner.empty()) {
      std::lock_guard lock(mu_);
      auto it = by_owner_.find(owner);
      if (it != by_owner_.end()) {
        for (const auto& s : it->second) out.push_back(s.stream);
      }
    }
  }
  return out;
}

void LiveHub::PublishAlert(std::string_view device_id, std::string_view owner_id,
                           const std::string& json) {
  if (count_.load(std::memory_order_relaxed) == 0) return;
  std::vector<std::shared_ptr<net::SseStream>> out;
  {
    std::lock_guard lock(mu_);
    auto it = by_device_.find(std::string(device_id));
    if (it != by_device_.end()) {
      for (const auto& s : it->second) {
        if (s.reader_owner.empty() || s.reader_owner == owner_id) out.push_back(s.stream);
      }
    }
    if (!owner_id.empty()) {
      it = by_owner_.find(std::string(owner_id));
      if (it != by_owner_.end()) {
        for (const auto& s : it->second) out.push_back(s.stream);
      }
    }
  }
  for (const auto& s : out) s->Send("alert", json);
}

void LiveHub::PublishRecord(const model::AggregateRecord& record) {
  auto targets = Targets(record.device_id);
  if (targets.empty()) return;
  const std::string json = model::RecordToJson(record);
  for (const auto& s : targets) s->Send("window", json);
}

void LiveHub::PublishReading(const model::Event& event) {
  auto targets = Targets(event.device_id);
  if (targets.empty()) return;
  const std::string json = ReadingToJson(event);
  for (const auto& s : targets) s->Send("reading", json);
}

std::string ReadingToJson(const model::Event& e) {
  JsonWriter w;
  w.BeginObject();
  w.Key("device_id");
  w.String(e.device_id);
  w.Key("timestamp");
  w.String(FormatRfc3339Millis(e.timestamp_ns));
  w.Key("received_at");
  w.String(FormatRfc3339Millis(e.received_at_ns));
  w.Key("metrics");
  w.BeginObject();
  for (const auto& m : e.metrics) {
    w.Key(m.name);
    w.Double(m.value);
  }
  w.EndObject();
  w.Key("meta");
  if (e.meta_json.empty()) {
    w.BeginObject();
    w.EndObject();
  } else {
    w.Raw(e.meta_json);
  }
  w.EndObject();
  return w.Take();
}

}  // namespace joule::api

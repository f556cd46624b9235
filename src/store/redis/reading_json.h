// The latest-reading JSON kept at agg:device:{id}:reading and published on the device's
// updates channel: {"timestamp","received_at","metrics":{name:value,…},"meta":{…}?} —
// the "latest" object of the realtime API (CONTRACT §3). Times are RFC 3339 UTC with
// millisecond precision, as everywhere on the wire; "meta" is absent when the event had
// none. Metrics keep the event's order.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"
#include "model/event.h"
#include "store/latest_store.h"

namespace joule::store {

std::string ReadingToJson(const model::Event& event);

// Thread-compatible: one decoder per thread.
class ReadingJsonDecoder {
 public:
  ReadingJsonDecoder();
  ~ReadingJsonDecoder();
  ReadingJsonDecoder(const ReadingJsonDecoder&) = delete;
  ReadingJsonDecoder& operator=(const ReadingJsonDecoder&) = delete;

  // Replaces *out; times come back truncated to milliseconds. Corruption on bad input.
  Status Decode(std::string_view json, LatestReading* out);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace joule::store

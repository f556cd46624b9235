// EventView: an event as the archive needs it — views into a log payload (or into a
// model::Event), no copies. The archiver reads every log record once more after the
// partition processors did; decoding each payload into a model::Event copied every string
// into the Event only for the row encoder to copy it again (~1,000 instructions of ~6,000
// per archived event, bench/archive_bench). DecodeEventView parses the payload in place.
//
// It reads exactly the encoding of model::EncodeEvent version 1 (docs/formats/log.md,
// "payload"; src/model/event.cc) and accepts exactly what model::DecodeEvent accepts
// (archive_row_test checks both on random and damaged payloads). Anything else — another
// version, a damaged payload — goes through model::DecodeEvent, which stays the authority:
// a new event format only makes the archive take the slower path until this file learns it.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

#include "common/status.h"
#include "model/event.h"

namespace joule::store {

struct EventView {
  struct Metric {
    std::string_view name;
    double value = 0;
  };
  static constexpr size_t kMaxMetrics = 64;  // as model::DecodeEvent

  std::string_view device_id;
  int64_t timestamp_ns = 0;
  int64_t received_at_ns = 0;
  std::string_view event_id;   // empty when absent
  std::string_view meta_json;  // empty when absent
  uint32_t metric_count = 0;
  std::array<Metric, kMaxMetrics> metrics;
};

// Views into `event` (which must outlive the view).
void ViewOf(const model::Event& event, EventView* view);

// Parses a log payload. The view points into `payload`, or into `*fallback` when the
// payload had to go through model::DecodeEvent; both must outlive the view. Returns
// DecodeEvent's error for a payload it refuses.
Status DecodeEventView(std::string_view payload, EventView* view, model::Event* fallback);

// Only the fast path: false for anything it does not read (tests compare it with
// DecodeEvent).
bool ParseEventPayloadV1(std::string_view payload, EventView* view);

}  // namespace joule::store

#include "store/archive/event_view.h"

#include <cstring>

#include "model/payload_reader.h"

namespace joule::store {
namespace {

constexpr uint8_t kPayloadVersion = 1;

}  // namespace

void ViewOf(const model::Event& e, EventView* view) {
  view->device_id = e.device_id;
  view->timestamp_ns = e.timestamp_ns;
  view->received_at_ns = e.received_at_ns;
  view->event_id = e.event_id;
  view->meta_json = e.meta_json;
  const size_t n = std::min(e.metrics.size(), EventView::kMaxMetrics);
  view->metric_count = static_cast<uint32_t>(n);
  for (size_t i = 0; i < n; ++i) view->metrics[i] = {e.metrics[i].name, e.metrics[i].value};
}

bool ParseEventPayloadV1(std::string_view payload, EventView* view) {
  model::PayloadReader r(payload);
  uint8_t version;
  uint64_t ts, rx, n;
  if (!r.Byte(&version) || version != kPayloadVersion) return false;
  if (!r.String(&view->device_id) || !r.Varint(&ts) || !r.Varint(&rx) ||
      !r.String(&view->event_id) || !r.String(&view->meta_json) || !r.Varint(&n) ||
      n > EventView::kMaxMetrics) {
    return false;
  }
  view->timestamp_ns = model::UnZigZag(ts);
  view->received_at_ns = model::UnZigZag(rx);
  view->metric_count = static_cast<uint32_t>(n);
  for (uint64_t i = 0; i < n; ++i) {
    if (!r.String(&view->metrics[i].name) || !r.Double(&view->metrics[i].value)) return false;
  }
  return r.AtEnd();
}

Status DecodeEventView(std::string_view payload, EventView* view, model::Event* fallback) {
  if (ParseEventPayloadV1(payload, view)) return Status::Ok();
  JOULE_RETURN_IF_ERROR(model::DecodeEvent(payload, fallback));
  ViewOf(*fallback, view);
  return Status::Ok();
}

}  // namespace joule::store

#include "store/archive/event_view.h"

#include <cstring>

namespace joule::store {
namespace {

constexpr uint8_t kPayloadVersion = 1;

// The primitives of model::DecodeEvent's reader, with its exact acceptance rules.
class Reader {
 public:
  explicit Reader(std::string_view d)
      : p_(reinterpret_cast<const uint8_t*>(d.data())), end_(p_ + d.size()) {}
  bool Varint(uint64_t* v) {
    uint64_t r = 0;
    for (int shift = 0; shift <= 63; shift += 7) {
      if (p_ == end_) return false;
      const uint8_t b = *p_++;
      r |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) {
        *v = r;
        return true;
      }
    }
    return false;
  }
  bool String(std::string_view* s) {
    uint64_t n;
    if (!Varint(&n) || n > static_cast<uint64_t>(end_ - p_)) return false;
    *s = std::string_view(reinterpret_cast<const char*>(p_), n);
    p_ += n;
    return true;
  }
  bool Double(double* v) {
    if (end_ - p_ < 8) return false;
    std::memcpy(v, p_, 8);
    p_ += 8;
    return true;
  }
  bool Byte(uint8_t* b) {
    if (p_ == end_) return false;
    *b = *p_++;
    return true;
  }
  bool AtEnd() const { return p_ == end_; }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
};

int64_t UnZigZag(uint64_t v) { return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1); }

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
  Reader r(payload);
  uint8_t version;
  uint64_t ts, rx, n;
  if (!r.Byte(&version) || version != kPayloadVersion) return false;
  if (!r.String(&view->device_id) || !r.Varint(&ts) || !r.Varint(&rx) ||
      !r.String(&view->event_id) || !r.String(&view->meta_json) || !r.Varint(&n) ||
      n > EventView::kMaxMetrics) {
    return false;
  }
  view->timestamp_ns = UnZigZag(ts);
  view->received_at_ns = UnZigZag(rx);
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

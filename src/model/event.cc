#include "model/event.h"

#include <cstring>

#include "common/json_writer.h"
#include "common/time_format.h"

namespace joule::model {
namespace {

constexpr uint8_t kEventFormatVersion = 1;

void PutVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}
void PutString(std::string* out, std::string_view s) {
  PutVarint(out, s.size());
  out->append(s);
}
uint64_t ZigZag(int64_t v) {
  return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63);
}
int64_t UnZigZag(uint64_t v) { return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1); }

class Reader {
 public:
  explicit Reader(std::string_view d) : d_(d) {}
  bool Varint(uint64_t* v) {
    uint64_t r = 0;
    for (int shift = 0; shift <= 63; shift += 7) {
      if (pos_ >= d_.size()) return false;
      uint8_t b = static_cast<uint8_t>(d_[pos_++]);
      r |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) {
        *v = r;
        return true;
      }
    }
    return false;
  }
  bool String(std::string* s) {
    uint64_t n;
    if (!Varint(&n) || n > d_.size() - pos_) return false;
    s->assign(d_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  bool Double(double* v) {
    if (d_.size() - pos_ < 8) return false;
    std::memcpy(v, d_.data() + pos_, 8);
    pos_ += 8;
    return true;
  }
  bool Byte(uint8_t* b) {
    if (pos_ >= d_.size()) return false;
    *b = static_cast<uint8_t>(d_[pos_++]);
    return true;
  }
  bool AtEnd() const { return pos_ == d_.size(); }

 private:
  std::string_view d_;
  size_t pos_ = 0;
};

}  // namespace

void EncodeEvent(const Event& e, std::string* out) {
  out->push_back(static_cast<char>(kEventFormatVersion));
  PutString(out, e.device_id);
  PutVarint(out, ZigZag(e.timestamp_ns));
  PutVarint(out, ZigZag(e.received_at_ns));
  PutString(out, e.event_id);
  PutString(out, e.meta_json);
  PutVarint(out, e.metrics.size());
  for (const auto& m : e.metrics) {
    PutString(out, m.name);
    char buf[8];
    std::memcpy(buf, &m.value, 8);
    out->append(buf, 8);
  }
}

Status DecodeEvent(std::string_view data, Event* e) {
  Reader r(data);
  uint8_t version;
  uint64_t ts, rx, n;
  if (!r.Byte(&version)) return Status::Corruption("empty event payload");
  if (version != kEventFormatVersion) return Status::Corruption("unknown event format version");
  if (!r.String(&e->device_id) || !r.Varint(&ts) || !r.Varint(&rx) || !r.String(&e->event_id) ||
      !r.String(&e->meta_json) || !r.Varint(&n) || n > 64) {
    return Status::Corruption("truncated event payload");
  }
  e->timestamp_ns = UnZigZag(ts);
  e->received_at_ns = UnZigZag(rx);
  e->metrics.resize(n);
  for (auto& m : e->metrics) {
    if (!r.String(&m.name) || !r.Double(&m.value)) return Status::Corruption("truncated metric");
  }
  if (!r.AtEnd()) return Status::Corruption("trailing bytes in event payload");
  return Status::Ok();
}

std::string EventToJson(const Event& e) {
  JsonWriter w;
  w.BeginObject();
  w.Key("device_id");
  w.String(e.device_id);
  w.Key("timestamp");
  // Exact: the timestamp is part of the event's identity (de-duplication), which a replay
  // of the archive must reproduce.
  w.String(FormatRfc3339Exact(e.timestamp_ns));
  if (!e.event_id.empty()) {
    w.Key("event_id");
    w.String(e.event_id);
  }
  w.Key("metrics");
  w.BeginObject();
  for (const auto& m : e.metrics) {
    w.Key(m.name);
    w.Double(m.value);
  }
  w.EndObject();
  if (!e.meta_json.empty()) {
    w.Key("meta");
    w.Raw(e.meta_json);
  }
  w.Key("received_at");
  w.String(FormatRfc3339Millis(e.received_at_ns));
  w.EndObject();
  return w.Take();
}

}  // namespace joule::model

#include "model/event.h"

#include <cstring>

#include "common/json_writer.h"
#include "common/time_format.h"
#include "model/payload_reader.h"

namespace joule::model {
namespace {

constexpr uint8_t kEventFormatVersion = 1;

size_t VarintLength(uint64_t v) {
  // 1 + floor(bit_width / 7): 1 byte up to 127, 10 bytes at most.
  return 1 + static_cast<size_t>((63 - __builtin_clzll(v | 1)) / 7);
}
char* PutVarint(char* p, uint64_t v) {
  while (v >= 0x80) {
    *p++ = static_cast<char>(v | 0x80);
    v >>= 7;
  }
  *p++ = static_cast<char>(v);
  return p;
}
char* PutString(char* p, std::string_view s) {
  p = PutVarint(p, s.size());
  if (!s.empty()) std::memcpy(p, s.data(), s.size());
  return p + s.size();
}
uint64_t ZigZag(int64_t v) {
  return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63);
}

// Assigns `v` to `*s` unless it already holds it. Decoding into reused events (the
// processors keep theirs across batches) mostly meets the same metric names again, and a
// compare is cheaper than std::string::assign's general path.
inline void AssignIfDifferent(std::string* s, std::string_view v) {
  if (s->size() == v.size() && (v.empty() || std::memcmp(s->data(), v.data(), v.size()) == 0)) {
    return;
  }
  s->clear();
  s->append(v.data(), v.size());  // cheaper than assign's aliasing-safe path
}

}  // namespace

void EncodeEvent(const Event& e, std::string* out) {
  // The exact size first, so the payload is written with one resize and no per-byte
  // appends.
  const uint64_t ts = ZigZag(e.timestamp_ns), rx = ZigZag(e.received_at_ns);
  size_t size = 1 + VarintLength(e.device_id.size()) + e.device_id.size() + VarintLength(ts) +
                VarintLength(rx) + VarintLength(e.event_id.size()) + e.event_id.size() +
                VarintLength(e.meta_json.size()) + e.meta_json.size() +
                VarintLength(e.metrics.size());
  for (const auto& m : e.metrics) size += VarintLength(m.name.size()) + m.name.size() + 8;
  const size_t start = out->size();
  out->resize(start + size);
  char* p = out->data() + start;
  *p++ = static_cast<char>(kEventFormatVersion);
  p = PutString(p, e.device_id);
  p = PutVarint(p, ts);
  p = PutVarint(p, rx);
  p = PutString(p, e.event_id);
  p = PutString(p, e.meta_json);
  p = PutVarint(p, e.metrics.size());
  for (const auto& m : e.metrics) {
    p = PutString(p, m.name);
    std::memcpy(p, &m.value, 8);
    p += 8;
  }
}

Status DecodeEvent(std::string_view data, Event* e) {
  PayloadReader r(data);
  uint8_t version;
  uint64_t ts, rx, n;
  std::string_view device_id, event_id, meta;
  if (!r.Byte(&version)) return Status::Corruption("empty event payload");
  if (version != kEventFormatVersion) return Status::Corruption("unknown event format version");
  if (!r.String(&device_id) || !r.Varint(&ts) || !r.Varint(&rx) || !r.String(&event_id) ||
      !r.String(&meta) || !r.Varint(&n) || n > 64) {
    return Status::Corruption("truncated event payload");
  }
  e->device_id.clear();
  e->device_id.append(device_id.data(), device_id.size());
  AssignIfDifferent(&e->event_id, event_id);
  AssignIfDifferent(&e->meta_json, meta);
  e->timestamp_ns = UnZigZag(ts);
  e->received_at_ns = UnZigZag(rx);
  e->metrics.resize(n);
  for (auto& m : e->metrics) {
    std::string_view name;
    if (!r.String(&name) || !r.Double(&m.value)) return Status::Corruption("truncated metric");
    AssignIfDifferent(&m.name, name);
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

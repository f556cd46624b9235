#include "store/rocksdb/history_record_codec.h"

#include <bit>
#include <cstring>

namespace joule::store::history_codec {
namespace {

constexpr uint8_t kFlagFinal = 1;
constexpr uint8_t kFlagDayFields = 2;
constexpr uint8_t kKnownFlags = kFlagFinal | kFlagDayFields;

// Metric field bits, in the order the fields are written.
enum FieldBit : uint32_t {
  kMin = 0,
  kMax,
  kSum,
  kFirst,
  kLast,
  kEnergyWh,
  kCoveredNs,
  kDelta,
  kResets,
  kFieldCount,
};

uint64_t ZigZag(int64_t v) {
  return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63);
}
int64_t UnZigZag(uint64_t v) { return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1); }

bool NonZero(double d) { return std::bit_cast<uint64_t>(d) != 0; }

// A bounds-checked reader; every Get returns false instead of reading past the end.
class Reader {
 public:
  explicit Reader(std::string_view s) : p_(s.data()), end_(s.data() + s.size()) {}
  size_t remaining() const { return static_cast<size_t>(end_ - p_); }

  bool GetU8(uint8_t* v) {
    if (p_ == end_) return false;
    *v = static_cast<uint8_t>(*p_++);
    return true;
  }
  bool GetVarint64(uint64_t* v) {
    uint64_t result = 0;
    for (int shift = 0; shift <= 63 && p_ < end_; shift += 7) {
      const auto byte = static_cast<uint8_t>(*p_++);
      if (shift == 63 && byte > 1) return false;  // overflows 64 bits
      result |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) {
        *v = result;
        return true;
      }
    }
    return false;
  }
  bool GetDouble(double* d) {
    if (remaining() < 8) return false;
    uint64_t u = 0;
    for (int i = 0; i < 8; ++i) u |= static_cast<uint64_t>(static_cast<uint8_t>(p_[i])) << (8 * i);
    p_ += 8;
    *d = std::bit_cast<double>(u);
    return true;
  }
  bool GetView(std::string_view* s, size_t max_len) {
    uint64_t n;
    if (!GetVarint64(&n) || n > max_len || n > remaining()) return false;
    *s = std::string_view(p_, static_cast<size_t>(n));
    p_ += n;
    return true;
  }
  bool Skip(size_t n) {
    if (remaining() < n) return false;
    p_ += n;
    return true;
  }
  bool GetBytes(std::string* s, size_t max_len) {
    uint64_t n;
    if (!GetVarint64(&n) || n > max_len || n > remaining()) return false;
    s->assign(p_, static_cast<size_t>(n));
    p_ += n;
    return true;
  }

 private:
  const char* p_;
  const char* end_;
};

Status Corrupt(std::string_view what) {
  return Status::Corruption("history value: " + std::string(what));
}

}  // namespace

std::string EncodeKeyPrefix(model::Resolution r, std::string_view device_id) {
  std::string key;
  key.reserve(10 + device_id.size());
  key.push_back(static_cast<char>(r));
  key.push_back(static_cast<char>(static_cast<uint8_t>(device_id.size())));
  key.append(device_id);
  return key;
}

std::string EncodeKey(model::Resolution r, std::string_view device_id, int64_t window_start_ns) {
  std::string key = EncodeKeyPrefix(r, device_id);
  const uint64_t u = static_cast<uint64_t>(window_start_ns) ^ (uint64_t{1} << 63);
  for (int i = 0; i < 8; ++i) key.push_back(static_cast<char>(u >> (56 - 8 * i)));
  return key;
}

bool DecodeKeyWindowStart(std::string_view key, int64_t* window_start_ns) {
  if (key.size() < 11) return false;
  uint64_t u = 0;
  for (size_t i = key.size() - 8; i < key.size(); ++i) u = (u << 8) | static_cast<uint8_t>(key[i]);
  *window_start_ns = static_cast<int64_t>(u ^ (uint64_t{1} << 63));
  return true;
}

Result<DecodedKey> DecodeKey(std::string_view key) {
  if (key.size() < 11) return Status::Corruption("history key: too short");
  const auto resolution = static_cast<uint8_t>(key[0]);
  const auto id_len = static_cast<uint8_t>(key[1]);
  if (resolution > 2) return Status::Corruption("history key: unknown resolution");
  if (id_len == 0 || key.size() != 10u + id_len) {
    return Status::Corruption("history key: bad device id length");
  }
  DecodedKey out{static_cast<model::Resolution>(resolution), key.substr(2, id_len), 0};
  DecodeKeyWindowStart(key, &out.window_start_ns);
  return out;
}

namespace {

// Writes through a pointer into space reserved beforehand (AppendValue sizes it from a
// bound): one resize per value instead of a capacity check per byte.
class RawWriter {
 public:
  explicit RawWriter(char* p) : p_(p) {}
  char* pos() const { return p_; }
  void U8(uint8_t v) { *p_++ = static_cast<char>(v); }
  void Varint(uint64_t v) {
    while (v >= 0x80) {
      *p_++ = static_cast<char>((v & 0x7f) | 0x80);
      v >>= 7;
    }
    *p_++ = static_cast<char>(v);
  }
  void Double(double d) {
    const uint64_t u = std::bit_cast<uint64_t>(d);
    char b[8];
    for (int i = 0; i < 8; ++i) b[i] = static_cast<char>(u >> (8 * i));  // little-endian
    std::memcpy(p_, b, 8);
    p_ += 8;
  }
  void Bytes(std::string_view s) {
    Varint(s.size());
    std::memcpy(p_, s.data(), s.size());
    p_ += s.size();
  }

 private:
  char* p_;
};

constexpr size_t kMaxVarint = 10;

}  // namespace

void AppendValue(const model::AggregateRecord& r, std::string* out) {
  const bool day_fields = !r.timezone.empty() || !r.local_date.empty();
  // Bound: format, version, flags, length, count, day fields, metric count; per metric its
  // name, kind+fields, count, 7 doubles and 2 varints.
  size_t bound = 2 + 4 * kMaxVarint;
  if (day_fields) bound += 2 * kMaxVarint + r.timezone.size() + r.local_date.size();
  for (const model::MetricAggregate& m : r.metrics) bound += 5 * kMaxVarint + m.name.size() + 56;
  const size_t start = out->size();
  out->resize(start + bound);
  RawWriter w(out->data() + start);
  w.U8(kValueFormat);
  w.Varint(r.version);
  w.U8((r.final ? kFlagFinal : 0) | (day_fields ? kFlagDayFields : 0));
  w.Varint(static_cast<uint64_t>(r.window_end_ns) - static_cast<uint64_t>(r.window_start_ns));
  w.Varint(r.count);
  if (day_fields) {
    w.Bytes(r.timezone);
    w.Bytes(r.local_date);
  }
  w.Varint(r.metrics.size());
  for (const model::MetricAggregate& m : r.metrics) {
    w.Bytes(m.name);
    uint32_t fields = 0;
    if (NonZero(m.min)) fields |= 1u << kMin;
    if (NonZero(m.max)) fields |= 1u << kMax;
    if (NonZero(m.sum)) fields |= 1u << kSum;
    if (NonZero(m.first)) fields |= 1u << kFirst;
    if (NonZero(m.last)) fields |= 1u << kLast;
    if (NonZero(m.energy_wh)) fields |= 1u << kEnergyWh;
    if (m.covered_ns != 0) fields |= 1u << kCoveredNs;
    if (NonZero(m.delta)) fields |= 1u << kDelta;
    if (m.resets != 0) fields |= 1u << kResets;
    w.Varint(static_cast<uint64_t>(m.kind) | (uint64_t{fields} << 2));
    w.Varint(m.count);
    if (fields & (1u << kMin)) w.Double(m.min);
    if (fields & (1u << kMax)) w.Double(m.max);
    if (fields & (1u << kSum)) w.Double(m.sum);
    if (fields & (1u << kFirst)) w.Double(m.first);
    if (fields & (1u << kLast)) w.Double(m.last);
    if (fields & (1u << kEnergyWh)) w.Double(m.energy_wh);
    if (fields & (1u << kCoveredNs)) w.Varint(ZigZag(m.covered_ns));
    if (fields & (1u << kDelta)) w.Double(m.delta);
    if (fields & (1u << kResets)) w.Varint(m.resets);
  }
  out->resize(static_cast<size_t>(w.pos() - out->data()));
}

std::string EncodeValue(const model::AggregateRecord& record) {
  std::string out;
  out.reserve(32 + record.metrics.size() * 64);
  AppendValue(record, &out);
  return out;
}

Result<uint64_t> DecodeVersion(std::string_view value) {
  Reader in(value);
  uint8_t format;
  uint64_t version;
  if (!in.GetU8(&format)) return Corrupt("empty");
  if (format != kValueFormat) return Corrupt("unknown format " + std::to_string(format));
  if (!in.GetVarint64(&version)) return Corrupt("truncated version");
  return version;
}

Result<model::AggregateRecord> DecodeRecord(std::string_view key, std::string_view value) {
  JOULE_ASSIGN_OR_RETURN(DecodedKey k, DecodeKey(key));
  model::AggregateRecord r;
  r.device_id.assign(k.device_id);
  r.resolution = k.resolution;
  r.window_start_ns = k.window_start_ns;

  Reader in(value);
  uint8_t format, flags;
  uint64_t window_length, metric_count;
  if (!in.GetU8(&format)) return Corrupt("empty");
  if (format != kValueFormat) return Corrupt("unknown format " + std::to_string(format));
  if (!in.GetVarint64(&r.version)) return Corrupt("truncated version");
  if (!in.GetU8(&flags)) return Corrupt("truncated flags");
  if ((flags & ~kKnownFlags) != 0) return Corrupt("unknown flags");
  r.final = (flags & kFlagFinal) != 0;
  if (!in.GetVarint64(&window_length)) return Corrupt("truncated window length");
  r.window_end_ns = static_cast<int64_t>(static_cast<uint64_t>(r.window_start_ns) + window_length);
  if (!in.GetVarint64(&r.count)) return Corrupt("truncated count");
  if (flags & kFlagDayFields) {
    if (!in.GetBytes(&r.timezone, 255)) return Corrupt("bad timezone");
    if (!in.GetBytes(&r.local_date, 255)) return Corrupt("bad local_date");
  }
  if (!in.GetVarint64(&metric_count)) return Corrupt("truncated metric count");
  // Each metric takes at least 4 bytes (name length, name, tag, count).
  if (metric_count > in.remaining() / 4) return Corrupt("metric count exceeds value size");
  r.metrics.resize(static_cast<size_t>(metric_count));
  for (model::MetricAggregate& m : r.metrics) {
    uint64_t tag;
    if (!in.GetBytes(&m.name, 255) || m.name.empty()) return Corrupt("bad metric name");
    if (!in.GetVarint64(&tag)) return Corrupt("truncated metric tag");
    const uint64_t kind = tag & 3;
    const uint64_t fields = tag >> 2;
    if (kind == 3) return Corrupt("unknown metric kind");
    if (fields >> kFieldCount) return Corrupt("unknown metric fields");
    m.kind = static_cast<model::MetricKind>(kind);
    if (!in.GetVarint64(&m.count)) return Corrupt("truncated metric count");
    auto has = [&](FieldBit b) { return (fields >> b) & 1; };
    bool ok = true;
    if (has(kMin)) ok = ok && in.GetDouble(&m.min);
    if (has(kMax)) ok = ok && in.GetDouble(&m.max);
    if (has(kSum)) ok = ok && in.GetDouble(&m.sum);
    if (has(kFirst)) ok = ok && in.GetDouble(&m.first);
    if (has(kLast)) ok = ok && in.GetDouble(&m.last);
    if (has(kEnergyWh)) ok = ok && in.GetDouble(&m.energy_wh);
    if (has(kCoveredNs)) {
      uint64_t z = 0;
      ok = ok && in.GetVarint64(&z);
      m.covered_ns = UnZigZag(z);
    }
    if (has(kDelta)) ok = ok && in.GetDouble(&m.delta);
    if (has(kResets)) ok = ok && in.GetVarint64(&m.resets);
    if (!ok) return Corrupt("truncated metric " + m.name);
  }
  if (in.remaining() != 0) return Corrupt("trailing bytes");
  return r;
}

}  // namespace joule::store::history_codec

namespace joule::store::history_codec {

// The walk of DecodeRecord, keeping only what an energy sum needs. Keep the two in step:
// tests/rocksdb_history_store_test.cc compares them on valid and damaged values.
Status DecodeEnergy(std::string_view key, std::string_view value, std::string_view metric,
                    HistoryEnergyFields* out) {
  JOULE_ASSIGN_OR_RETURN(DecodedKey k, DecodeKey(key));
  *out = HistoryEnergyFields{};
  Reader in(value);
  uint8_t format, flags;
  uint64_t version, window_length, count, metric_count;
  if (!in.GetU8(&format)) return Corrupt("empty");
  if (format != kValueFormat) return Corrupt("unknown format " + std::to_string(format));
  if (!in.GetVarint64(&version)) return Corrupt("truncated version");
  if (!in.GetU8(&flags)) return Corrupt("truncated flags");
  if ((flags & ~kKnownFlags) != 0) return Corrupt("unknown flags");
  if (!in.GetVarint64(&window_length)) return Corrupt("truncated window length");
  out->window_end_ns =
      static_cast<int64_t>(static_cast<uint64_t>(k.window_start_ns) + window_length);
  if (!in.GetVarint64(&count)) return Corrupt("truncated count");
  if (flags & kFlagDayFields) {
    std::string_view timezone;
    if (!in.GetView(&timezone, 255)) return Corrupt("bad timezone");
    if (!in.GetView(&out->local_date, 255)) return Corrupt("bad local_date");
  }
  if (!in.GetVarint64(&metric_count)) return Corrupt("truncated metric count");
  if (metric_count > in.remaining() / 4) return Corrupt("metric count exceeds value size");
  for (uint64_t i = 0; i < metric_count; ++i) {
    std::string_view name;
    uint64_t tag, m_count;
    if (!in.GetView(&name, 255) || name.empty()) return Corrupt("bad metric name");
    if (!in.GetVarint64(&tag)) return Corrupt("truncated metric tag");
    const uint64_t kind = tag & 3;
    const uint64_t fields = tag >> 2;
    if (kind == 3) return Corrupt("unknown metric kind");
    if (fields >> kFieldCount) return Corrupt("unknown metric fields");
    if (!in.GetVarint64(&m_count)) return Corrupt("truncated metric count");
    // FindMetric's answer is the first metric of that name.
    const bool keep = !out->metric_found && name == metric;
    auto has = [&](FieldBit b) { return (fields >> b) & 1; };
    bool ok = true;
    for (FieldBit b : {kMin, kMax, kSum, kFirst, kLast}) {
      if (has(b)) ok = ok && in.Skip(8);
    }
    double energy_wh = 0, delta = 0;
    if (has(kEnergyWh)) ok = ok && in.GetDouble(&energy_wh);
    if (has(kCoveredNs)) {
      uint64_t z = 0;
      ok = ok && in.GetVarint64(&z);
    }
    if (has(kDelta)) ok = ok && in.GetDouble(&delta);
    if (has(kResets)) {
      uint64_t resets = 0;
      ok = ok && in.GetVarint64(&resets);
    }
    if (!ok) return Corrupt("truncated metric " + std::string(name));
    if (keep) {
      out->metric_found = true;
      out->kind = static_cast<model::MetricKind>(kind);
      out->energy_wh = energy_wh;
      out->delta = delta;
    }
  }
  if (in.remaining() != 0) return Corrupt("trailing bytes");
  return Status::Ok();
}

}  // namespace joule::store::history_codec

#include "store/rocksdb/history_record_codec.h"

#include <bit>
#include <cmath>
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
  // Format 2 only: the metric's doubles are all raw, 8 bytes each without number headers.
  kRawNumbers = kFieldCount,
};

uint64_t ZigZag(int64_t v) {
  return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63);
}
int64_t UnZigZag(uint64_t v) { return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1); }

bool NonZero(double d) { return std::bit_cast<uint64_t>(d) != 0; }
bool SameBits(double a, double b) {
  return std::bit_cast<uint64_t>(a) == std::bit_cast<uint64_t>(b);
}

// ---- format 2 numbers (docs/formats/history.md, "Value, format 2") ----

// Powers of ten exact in binary64 (10^0 .. 10^15), so that m / 10^e is one correctly
// rounded division: the double a parser gives for the decimal text "m·10^-e".
constexpr double kPow10[16] = {1e0, 1e1, 1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                               1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15};
constexpr double kMaxExactInt = 9007199254740992.0;  // 2^53

// Number headers (one byte before each double of format 2).
constexpr uint8_t kNumRefMax = 6;      // 0..6: the bits of an earlier field of the metric
constexpr uint8_t kNumDecimal = 0x10;  // | e: zvarint m, value = m / 10^e
constexpr uint8_t kNumHalfSpan =
    0x20;  // | e: zvarint m, value = (m / 10^e) * 0.5 * (covered_ns / 3.6e12)
constexpr uint8_t kNumLastMinus =
    0x30;                          // | e: zvarint k, value = last - (round(last * 10^e) - k) / 10^e
constexpr uint8_t kNumRaw = 0x40;  // 8 bytes, IEEE-754 binary64 little-endian

// m and the smallest e in 0..15 with m / 10^e == d bit for bit and |m| < 2^42 (at most 6
// varint bytes: sensor readings have far fewer digits; a noisy double is often also the
// nearest to some 16-digit decimal, but its 8-byte varint is no shorter than the raw bytes
// and compresses worse).
constexpr double kMaxDecimalMantissa = 4398046511104.0;  // 2^42
bool FindDecimal(double d, int* e_out, int64_t* m_out) {
  if (!std::isfinite(d)) return false;
  for (int e = 0; e < 16; ++e) {
    const double scaled = d * kPow10[e];
    if (!(std::fabs(scaled) < kMaxDecimalMantissa)) return false;
    const auto m = static_cast<int64_t>(std::nearbyint(scaled));
    if (SameBits(static_cast<double>(m) / kPow10[e], d)) {
      *e_out = e;
      *m_out = m;
      return true;
    }
  }
  return false;
}

// The decoders of the two derived forms; the encoder uses the same functions to verify a
// candidate, so that what it writes decodes to the same bits by construction.
double HalfSpan(int64_t m, int e, int64_t covered_ns) {
  return (static_cast<double>(m) / kPow10[e]) * 0.5 * (static_cast<double>(covered_ns) / 3.6e12);
}
bool LastMinus(double last, int e, int64_t k, double* out) {
  const double scaled = last * kPow10[e];
  if (!(std::fabs(scaled) <= kMaxExactInt)) return false;
  int64_t p;
  if (__builtin_sub_overflow(static_cast<int64_t>(std::nearbyint(scaled)), k, &p)) return false;
  *out = last - static_cast<double>(p) / kPow10[e];
  return true;
}

// An integer as q·10^k in one varint: zigzag(q) << 4 | k (k in 0..14), or k = 15 and a
// zvarint of the integer itself when zigzag(q) does not fit in 60 bits.
constexpr uint64_t kScaledRaw = 15;

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
  bool GetScaled(int64_t* v) {
    uint64_t h;
    if (!GetVarint64(&h)) return false;
    const uint64_t k = h & 15;
    if (k == kScaledRaw) {
      uint64_t z;
      if ((h >> 4) != 0 || !GetVarint64(&z)) return false;
      *v = UnZigZag(z);
      return true;
    }
    int64_t q = UnZigZag(h >> 4);
    for (uint64_t i = 0; i < k; ++i) {
      if (__builtin_mul_overflow(q, int64_t{10}, &q)) return false;
    }
    *v = q;
    return true;
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
  void Raw(const char* s, size_t n) {
    std::memcpy(p_, s, n);
    p_ += n;
  }
  void Bytes(std::string_view s) {
    Varint(s.size());
    std::memcpy(p_, s.data(), s.size());
    p_ += s.size();
  }
  void Scaled(int64_t v) {
    int64_t q = v;
    uint64_t k = 0;
    while (q != 0 && q % 10 == 0 && k < 14) {
      q /= 10;
      ++k;
    }
    const uint64_t z = ZigZag(q);
    if (z >> 60) {
      Varint(kScaledRaw);
      Varint(ZigZag(v));
    } else {
      Varint(z << 4 | k);
    }
  }

 private:
  char* p_;
};

constexpr size_t kMaxVarint = 10;

}  // namespace

namespace {

// The doubles of a metric in their bit order (bits 0-5 and 7 of the field bitmap).
constexpr int kSlots = 7;
constexpr FieldBit kSlotBit[kSlots] = {kMin, kMax, kSum, kFirst, kLast, kEnergyWh, kDelta};

// Writes slot i's value `d` (not zero) in the shortest form it finds (format 2).
// Returns true when it wrote a decimal or derived form (not a reference, not raw).
bool WriteNumber(RawWriter& w, int i, double d, const double* v, uint32_t fields,
                 int64_t covered_ns) {
  for (int j = 0; j < i; ++j) {
    if ((fields >> kSlotBit[j] & 1) && SameBits(v[j], d)) {
      w.U8(static_cast<uint8_t>(j));
      return false;
    }
  }
  int e;
  int64_t m;
  if (FindDecimal(d, &e, &m)) {
    w.U8(static_cast<uint8_t>(kNumDecimal | e));
    w.Varint(ZigZag(m));
    return true;
  }
  if (std::isfinite(d) && kSlotBit[i] == kEnergyWh && covered_ns > 0) {
    // One trapezoid piece: (p_a + p_b) * 0.5 * (dt / 3.6e12) with a short decimal sum.
    const double per_unit = 0.5 * (static_cast<double>(covered_ns) / 3.6e12);
    for (int pe = 0; pe <= 6; ++pe) {
      const double est = d / per_unit * kPow10[pe];
      if (!(std::fabs(est) <= kMaxExactInt - 2)) break;
      const auto base = static_cast<int64_t>(std::nearbyint(est));
      for (int64_t c : {base, base - 1, base + 1}) {
        if (SameBits(HalfSpan(c, pe, covered_ns), d)) {
          w.U8(static_cast<uint8_t>(kNumHalfSpan | pe));
          w.Varint(ZigZag(c));
          return true;
        }
      }
    }
  }
  const double last = v[4];
  if (std::isfinite(d) && kSlotBit[i] == kDelta && (fields >> kLast & 1) &&
      FindDecimal(last, &e, &m)) {
    // A counter's one increment: last minus the previous reading, a short decimal.
    for (int pe = e; pe <= std::min(15, e + 2); ++pe) {
      const double scaled_last = last * kPow10[pe];
      const double est = (last - d) * kPow10[pe];
      if (!(std::fabs(scaled_last) <= kMaxExactInt) || !(std::fabs(est) <= kMaxExactInt - 2)) {
        break;
      }
      const auto m_last = static_cast<int64_t>(std::nearbyint(scaled_last));
      const auto base = static_cast<int64_t>(std::nearbyint(est));
      for (int64_t c : {base, base - 1, base + 1}) {
        double got;
        if (LastMinus(last, pe, m_last - c, &got) && SameBits(got, d)) {
          w.U8(static_cast<uint8_t>(kNumLastMinus | pe));
          w.Varint(ZigZag(m_last - c));
          return true;
        }
      }
    }
  }
  w.U8(kNumRaw);
  w.Double(d);
  return false;
}

}  // namespace

void AppendValue(const model::AggregateRecord& r, std::string* out) {
  const bool day_fields = !r.timezone.empty() || !r.local_date.empty();
  // Bound: format, version, flags, length (up to 2 varints), count, day fields, metric
  // count; per metric its name, kind+fields, count, covered_ns (2 varints), resets, 7
  // numbers of 1 + 10 bytes.
  size_t bound = 2 + 5 * kMaxVarint;
  if (day_fields) bound += 2 * kMaxVarint + r.timezone.size() + r.local_date.size();
  for (const model::MetricAggregate& m : r.metrics) {
    bound += 6 * kMaxVarint + m.name.size() + kSlots * (1 + kMaxVarint);
  }
  const size_t start = out->size();
  out->resize(start + bound);
  RawWriter w(out->data() + start);
  w.U8(kValueFormat);
  w.Varint(r.version);
  w.U8((r.final ? kFlagFinal : 0) | (day_fields ? kFlagDayFields : 0));
  w.Scaled(static_cast<int64_t>(static_cast<uint64_t>(r.window_end_ns) -
                                static_cast<uint64_t>(r.window_start_ns)));
  w.Varint(r.count);
  if (day_fields) {
    w.Bytes(r.timezone);
    w.Bytes(r.local_date);
  }
  w.Varint(r.metrics.size());
  for (const model::MetricAggregate& m : r.metrics) {
    w.Bytes(m.name);
    const double v[kSlots] = {m.min, m.max, m.sum, m.first, m.last, m.energy_wh, m.delta};
    uint32_t fields = 0;
    for (int i = 0; i < kSlots; ++i) {
      if (NonZero(v[i])) fields |= 1u << kSlotBit[i];
    }
    if (m.covered_ns != 0) fields |= 1u << kCoveredNs;
    if (m.resets != 0) fields |= 1u << kResets;
    // The numbers first: when none is a decimal or a derived form (noisy sums and averages),
    // they are written as in format 1, 8 bytes each without headers and references: between
    // incompressible bytes the header bytes, and records that alternate between the two
    // layouts (a first that happens to equal the min), cost the block compressor more than
    // the references save (history_bench's noisy records: 167.4 bytes with them, 162.0 as
    // format 1).
    char numbers[kSlots * (1 + kMaxVarint)];
    RawWriter nw(numbers);
    bool any_short = false, any = false;
    for (int i = 0; i < kSlots; ++i) {
      if (fields >> kSlotBit[i] & 1) {
        any = true;
        any_short |= WriteNumber(nw, i, v[i], v, fields, m.covered_ns);
      }
    }
    const bool raw = any && !any_short;
    if (raw) fields |= 1u << kRawNumbers;
    w.Varint(static_cast<uint64_t>(m.kind) | (uint64_t{fields} << 2));
    w.Varint(m.count);
    if (fields & (1u << kCoveredNs)) w.Scaled(m.covered_ns);
    if (fields & (1u << kResets)) w.Varint(m.resets);
    if (raw) {
      for (int i = 0; i < kSlots; ++i) {
        if (fields >> kSlotBit[i] & 1) w.Double(v[i]);
      }
    } else {
      w.Raw(numbers, static_cast<size_t>(nw.pos() - numbers));
    }
  }
  out->resize(static_cast<size_t>(w.pos() - out->data()));
}

std::string EncodeValue(const model::AggregateRecord& record) {
  std::string out;
  out.reserve(32 + record.metrics.size() * 64);
  AppendValue(record, &out);
  return out;
}

namespace {

struct ValueHeader {
  uint8_t format = 0;
  uint64_t version = 0;
  uint8_t flags = 0;
  uint64_t window_length = 0;
  uint64_t count = 0;
  std::string_view timezone, local_date;
  uint64_t metric_count = 0;
};

// What DecodeRecord and DecodeEnergy read of one metric.
struct MetricView {
  std::string_view name;
  uint64_t kind = 0;
  uint64_t count = 0;
  double v[kSlots] = {};
  int64_t covered_ns = 0;
  uint64_t resets = 0;
};

Status ReadFormat(Reader& in, uint8_t* format) {
  if (!in.GetU8(format)) return Corrupt("empty");
  if (*format != 1 && *format != 2) return Corrupt("unknown format " + std::to_string(*format));
  return Status::Ok();
}

Status ReadHeader(Reader& in, ValueHeader* h) {
  JOULE_RETURN_IF_ERROR(ReadFormat(in, &h->format));
  if (!in.GetVarint64(&h->version)) return Corrupt("truncated version");
  if (!in.GetU8(&h->flags)) return Corrupt("truncated flags");
  if ((h->flags & ~kKnownFlags) != 0) return Corrupt("unknown flags");
  if (h->format == 1) {
    if (!in.GetVarint64(&h->window_length)) return Corrupt("truncated window length");
  } else {
    int64_t length;
    if (!in.GetScaled(&length)) return Corrupt("bad window length");
    h->window_length = static_cast<uint64_t>(length);
  }
  if (!in.GetVarint64(&h->count)) return Corrupt("truncated count");
  if (h->flags & kFlagDayFields) {
    if (!in.GetView(&h->timezone, 255)) return Corrupt("bad timezone");
    if (!in.GetView(&h->local_date, 255)) return Corrupt("bad local_date");
  }
  if (!in.GetVarint64(&h->metric_count)) return Corrupt("truncated metric count");
  // Each metric takes at least 4 bytes (name length, name, tag, count).
  if (h->metric_count > in.remaining() / 4) return Corrupt("metric count exceeds value size");
  return Status::Ok();
}

// Format 2's number of slot i (docs/formats/history.md); false when malformed.
bool ReadNumber(Reader& in, int i, uint64_t fields, MetricView* m) {
  uint8_t h;
  if (!in.GetU8(&h)) return false;
  double& out = m->v[i];
  if (h <= kNumRefMax) {
    if (h >= i || !(fields >> kSlotBit[h] & 1)) return false;
    out = m->v[h];
    return true;
  }
  if (h == kNumRaw) return in.GetDouble(&out);
  const uint8_t form = h & 0xf0;
  const int e = h & 0x0f;
  uint64_t z;
  if (form != kNumDecimal && form != kNumHalfSpan && form != kNumLastMinus) return false;
  if (!in.GetVarint64(&z)) return false;
  const int64_t x = UnZigZag(z);
  if (form == kNumDecimal) {
    out = static_cast<double>(x) / kPow10[e];
    return true;
  }
  if (form == kNumHalfSpan) {
    out = HalfSpan(x, e, m->covered_ns);
    return true;
  }
  return i > 4 && LastMinus(m->v[4], e, x, &out);
}

Status ReadMetric(Reader& in, uint8_t format, MetricView* m) {
  uint64_t tag;
  if (!in.GetView(&m->name, 255) || m->name.empty()) return Corrupt("bad metric name");
  if (!in.GetVarint64(&tag)) return Corrupt("truncated metric tag");
  m->kind = tag & 3;
  const uint64_t fields = tag >> 2;
  if (m->kind == 3) return Corrupt("unknown metric kind");
  if (fields >> (format == 1 ? kFieldCount : kRawNumbers + 1)) {
    return Corrupt("unknown metric fields");
  }
  if (!in.GetVarint64(&m->count)) return Corrupt("truncated metric count");
  auto has = [&](FieldBit b) { return (fields >> b) & 1; };
  bool ok = true;
  if (format == 1) {
    for (int i = 0; i < 6; ++i) {
      if (has(kSlotBit[i])) ok = ok && in.GetDouble(&m->v[i]);
    }
    if (has(kCoveredNs)) {
      uint64_t z = 0;
      ok = ok && in.GetVarint64(&z);
      m->covered_ns = UnZigZag(z);
    }
    if (has(kDelta)) ok = ok && in.GetDouble(&m->v[6]);
    if (has(kResets)) ok = ok && in.GetVarint64(&m->resets);
  } else {
    if (has(kCoveredNs)) ok = ok && in.GetScaled(&m->covered_ns);
    if (has(kResets)) ok = ok && in.GetVarint64(&m->resets);
    for (int i = 0; i < kSlots && ok; ++i) {
      if (!has(kSlotBit[i])) continue;
      ok = has(kRawNumbers) ? in.GetDouble(&m->v[i]) : ReadNumber(in, i, fields, m);
    }
  }
  if (!ok) return Corrupt("truncated or malformed metric " + std::string(m->name));
  return Status::Ok();
}

}  // namespace

Result<uint64_t> DecodeVersion(std::string_view value) {
  Reader in(value);
  uint8_t format;
  uint64_t version;
  JOULE_RETURN_IF_ERROR(ReadFormat(in, &format));
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
  ValueHeader h;
  JOULE_RETURN_IF_ERROR(ReadHeader(in, &h));
  r.version = h.version;
  r.final = (h.flags & kFlagFinal) != 0;
  r.window_end_ns =
      static_cast<int64_t>(static_cast<uint64_t>(r.window_start_ns) + h.window_length);
  r.count = h.count;
  r.timezone.assign(h.timezone);
  r.local_date.assign(h.local_date);
  r.metrics.resize(static_cast<size_t>(h.metric_count));
  for (model::MetricAggregate& m : r.metrics) {
    MetricView v;
    JOULE_RETURN_IF_ERROR(ReadMetric(in, h.format, &v));
    m.name.assign(v.name);
    m.kind = static_cast<model::MetricKind>(v.kind);
    m.count = v.count;
    m.min = v.v[0];
    m.max = v.v[1];
    m.sum = v.v[2];
    m.first = v.v[3];
    m.last = v.v[4];
    m.energy_wh = v.v[5];
    m.covered_ns = v.covered_ns;
    m.delta = v.v[6];
    m.resets = v.resets;
  }
  if (in.remaining() != 0) return Corrupt("trailing bytes");
  return r;
}

// The walk of DecodeRecord, keeping only what an energy sum needs: same reads, same checks.
Status DecodeEnergy(std::string_view key, std::string_view value, std::string_view metric,
                    HistoryEnergyFields* out) {
  JOULE_ASSIGN_OR_RETURN(DecodedKey k, DecodeKey(key));
  *out = HistoryEnergyFields{};
  Reader in(value);
  ValueHeader h;
  JOULE_RETURN_IF_ERROR(ReadHeader(in, &h));
  out->window_end_ns =
      static_cast<int64_t>(static_cast<uint64_t>(k.window_start_ns) + h.window_length);
  out->local_date = h.local_date;
  for (uint64_t i = 0; i < h.metric_count; ++i) {
    MetricView v;
    JOULE_RETURN_IF_ERROR(ReadMetric(in, h.format, &v));
    // FindMetric's answer is the first metric of that name.
    if (!out->metric_found && v.name == metric) {
      out->metric_found = true;
      out->kind = static_cast<model::MetricKind>(v.kind);
      out->energy_wh = v.v[5];
      out->delta = v.v[6];
    }
  }
  if (in.remaining() != 0) return Corrupt("trailing bytes");
  return Status::Ok();
}

}  // namespace joule::store::history_codec

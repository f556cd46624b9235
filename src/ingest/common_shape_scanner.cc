#include "ingest/common_shape_scanner.h"

#include <array>
#include <cstddef>
#include <cstring>
#include <string>
#include <vector>

#include "common/bytes_equal.h"
#include "common/clock.h"
#include "common/time_format.h"
#include "ingest/validation.h"

namespace joule::ingest {
namespace {

// Byte classes.
constexpr uint8_t kWs = 1;         // JSON whitespace
constexpr uint8_t kDigit = 2;      // 0-9
constexpr uint8_t kIdChar = 4;     // [A-Za-z0-9._:-], device ids
constexpr uint8_t kNameHead = 8;   // [a-z], a metric name's first byte
constexpr uint8_t kNameTail = 16;  // [a-z0-9_]

constexpr std::array<uint8_t, 256> kClass = [] {
  std::array<uint8_t, 256> t{};
  t[' '] = t['\t'] = t['\n'] = t['\r'] = kWs;
  for (int c = '0'; c <= '9'; ++c) t[c] = kDigit | kIdChar | kNameTail;
  for (int c = 'a'; c <= 'z'; ++c) t[c] = kIdChar | kNameHead | kNameTail;
  for (int c = 'A'; c <= 'Z'; ++c) t[c] = kIdChar;
  t['.'] = t[':'] = t['-'] = kIdChar;
  t['_'] = kIdChar | kNameTail;
  return t;
}();

inline bool Is(char c, uint8_t cls) { return (kClass[static_cast<uint8_t>(c)] & cls) != 0; }

const char* SkipWs(const char* p, const char* end) {
  while (p < end && Is(*p, kWs)) ++p;
  return p;
}

// Consumes `c`, after any whitespace; false when the next byte is something else. Compact
// JSON has the byte right there, so that is tried before the whitespace.
inline bool Eat(const char*& p, const char* end, char c) {
  if (p < end && *p == c) {
    ++p;
    return true;
  }
  p = SkipWs(p, end);
  if (p < end && *p == c) {
    ++p;
    return true;
  }
  return false;
}

// Eight ASCII digits at p → their value; false when any byte is not a digit (SWAR, as in
// fast_float and simdjson).
inline bool EightDigits(const char* p, uint64_t* out) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  if ((((v + 0x4646464646464646) | (v - 0x3030303030303030)) & 0x8080808080808080) != 0) {
    return false;
  }
  v -= 0x3030303030303030;
  v = (v * 10) + (v >> 8);
  v = (((v & 0x000000FF000000FF) * (100 + (1000000ULL << 32))) +
       (((v >> 16) & 0x000000FF000000FF) * (1 + (10000ULL << 32)))) >>
      32;
  *out = v;
  return true;
}

// Powers of ten that a double holds exactly.
constexpr double kPow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                             1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

// A JSON number whose value one IEEE operation gives exactly rounded: at most 19
// significant digits forming an integer m ≤ 2^53, scaled by 10^e with |e| ≤ 22 (Clinger's
// fast path: m and 10^e are both exact, so m·10^e or m/10^−e is correctly rounded, the
// value simdjson's exact conversion gives too). Zero with any exponent is ±0. Anything
// else, and anything that is not JSON number syntax, returns false.
bool ScanNumber(const char*& p, const char* end, double* out) {
  const char* q = p;
  const bool negative = q < end && *q == '-';
  if (negative) ++q;
  if (q == end || !Is(*q, kDigit)) return false;
  uint64_t m = 0;
  int digits = 0;  // significant digits in m
  int exp10 = 0;
  if (*q == '0') {
    ++q;
    if (q < end && Is(*q, kDigit)) return false;  // a leading zero
  } else {
    for (; q < end && Is(*q, kDigit); ++q) {
      if (++digits > 19) return false;
      m = m * 10 + static_cast<uint64_t>(*q - '0');
    }
  }
  if (q < end && *q == '.') {
    ++q;
    if (q == end || !Is(*q, kDigit)) return false;
    for (; q < end && Is(*q, kDigit); ++q) {
      const uint64_t d = static_cast<uint64_t>(*q - '0');
      if (m == 0 && d == 0) {  // a leading zero of the fraction: only the scale moves
        --exp10;
        continue;
      }
      if (++digits > 19) return false;
      m = m * 10 + d;
      --exp10;
    }
  }
  if (q < end && (*q == 'e' || *q == 'E')) {
    ++q;
    bool negative_exp = false;
    if (q < end && (*q == '+' || *q == '-')) negative_exp = *q++ == '-';
    if (q == end || !Is(*q, kDigit)) return false;
    int e = 0;
    for (; q < end && Is(*q, kDigit); ++q) {
      if (e > 999) return false;
      e = e * 10 + (*q - '0');
    }
    exp10 += negative_exp ? -e : e;
  }
  double v;
  if (m == 0) {
    v = 0;
  } else {
    if (m > (uint64_t{1} << 53) || exp10 < -22 || exp10 > 22) return false;
    v = static_cast<double>(m);
    v = exp10 < 0 ? v / kPow10[-exp10] : v * kPow10[exp10];
  }
  *out = negative ? -v : v;
  p = q;
  return true;
}

// The literal `lit` (N bytes, its closing quote included) at p.
template <size_t N>
bool Literal(const char* p, const char* end, const char (&lit)[N]) {
  return static_cast<size_t>(end - p) >= N - 1 && std::memcmp(p, lit, N - 1) == 0;
}

enum Field : unsigned { kDeviceId = 1, kTimestamp = 2, kMetrics = 4, kEventId = 8 };

// "…" of a device id, at the opening quote.
const char* ScanDeviceId(const char* p, const char* end, const ScanBounds& bounds,
                         model::Event* event) {
  if (p == end || *p != '"') return nullptr;
  const char* start = ++p;
  while (p < end && Is(*p, kIdChar)) ++p;
  if (p == end || *p != '"') return nullptr;
  const auto len = static_cast<size_t>(p - start);
  if (len == 0 || len > kMaxDeviceIdLength) return nullptr;
  const std::string_view id(start, len);
  if (IsDotSegment(id)) return nullptr;  // as ValidDeviceId
  if (!bounds.topic_device_id.empty() && id != bounds.topic_device_id) return nullptr;
  event->device_id.assign(id);
  return p + 1;
}

// "…" at p holding printable ASCII only, no escapes (its text is then its JSON value):
// the text into *s and the position after the closing quote; else nullptr.
const char* ScanPlainString(const char* p, const char* end, std::string_view* s) {
  if (p == end || *p != '"') return nullptr;
  const char* start = ++p;
  while (p < end && *p != '"' && *p != '\\' && *p >= 0x20 && *p < 0x7f) ++p;
  if (p == end || *p != '"') return nullptr;
  *s = std::string_view(start, static_cast<size_t>(p - start));
  return p + 1;
}

// An event id: 1–128 bytes of a plain string (other ids, null included, go to the full
// parser).
const char* ScanEventId(const char* p, const char* end, model::Event* event) {
  std::string_view id;
  p = ScanPlainString(p, end, &id);
  if (p == nullptr || id.empty() || id.size() > kMaxEventIdLength) return nullptr;
  event->event_id.assign(id);
  return p;
}

// An integer of epoch milliseconds, or an RFC 3339 plain string.
const char* ScanTimestamp(const char* p, const char* end, model::Event* event) {
  if (p < end && *p == '"') {
    std::string_view s;
    p = ScanPlainString(p, end, &s);
    return p != nullptr && ParseRfc3339(s, &event->timestamp_ns) ? p : nullptr;
  }
  const bool negative = p < end && *p == '-';
  if (negative) ++p;
  if (p == end || !Is(*p, kDigit)) return nullptr;
  int64_t millis = 0;
  if (*p == '0') {
    ++p;
  } else {
    int digits = 0;
    uint64_t eight;
    if (end - p >= 8 && EightDigits(p, &eight)) {  // epoch ms have 13 digits
      millis = static_cast<int64_t>(eight);
      digits = 8;
      p += 8;
    }
    for (; p < end && Is(*p, kDigit); ++p) {
      if (++digits > 18) return nullptr;
      millis = millis * 10 + (*p - '0');
    }
  }
  // A fraction, an exponent or a leading zero: not this shape (the full parser rejects
  // the first two and calls the last a syntax error).
  if (p < end && (*p == '.' || *p == 'e' || *p == 'E' || Is(*p, kDigit))) return nullptr;
  if (millis > kMaxEpochMillis) return nullptr;
  event->timestamp_ns = (negative ? -millis : millis) * kNanosPerMilli;
  return p;
}

// {"name":number,…}, at the opening brace: 1–64 entries, names unique.
const char* ScanMetrics(const char* p, const char* end, model::Event* event) {
  if (p == end || *p != '{') return nullptr;
  ++p;
  std::vector<model::MetricSample>& metrics = event->metrics;
  size_t stored = 0;
  for (;;) {
    if (!Eat(p, end, '"')) return nullptr;
    const char* start = p;
    if (p == end || !Is(*p, kNameHead)) return nullptr;
    ++p;
    while (p < end && Is(*p, kNameTail)) ++p;
    if (p == end || *p != '"') return nullptr;
    const auto len = static_cast<size_t>(p - start);
    if (len > kMaxMetricNameLength || stored == kMaxMetricsPerEvent) return nullptr;
    ++p;
    if (!Eat(p, end, ':')) return nullptr;
    p = SkipWs(p, end);
    double v;
    if (!ScanNumber(p, end, &v)) return nullptr;
    // (Within kMaxMetricMagnitude by construction: at most 2^53 · 10^22.)
    static_assert(9.1e37 < kMaxMetricMagnitude);
    // The slot's previous samples are overwritten in place (names mostly repeat from one
    // event to the next), as the full parser does.
    if (stored < metrics.size()) {
      model::MetricSample& m = metrics[stored];
      if (m.name.size() != len || !BytesEqual(m.name.data(), start, len)) {
        m.name.assign(start, len);
      }
      m.value = v;
    } else {
      metrics.push_back(model::MetricSample{std::string(start, len), v});
    }
    ++stored;
    if (Eat(p, end, ',')) continue;
    if (Eat(p, end, '}')) break;
    return nullptr;
  }
  metrics.resize(stored);
  // Names are unique.
  for (size_t i = 0; i < stored; ++i) {
    const std::string& a = metrics[i].name;
    for (size_t j = i + 1; j < stored; ++j) {
      const std::string& b = metrics[j].name;
      if (a.size() == b.size() && BytesEqual(a.data(), b.data(), a.size())) {
        return nullptr;
      }
    }
  }
  return p;
}

}  // namespace

const char* SkipJsonWhitespace(const char* p, const char* end) { return SkipWs(p, end); }

const char* ScanCommonEvent(const char* p, const char* end, const ScanBounds& bounds,
                            model::Event* event) {
  if (!Eat(p, end, '{')) return nullptr;
  unsigned seen = 0;
  for (;;) {
    if (!Eat(p, end, '"')) return nullptr;
    Field field;
    if (Literal(p, end, "device_id\"")) {
      field = kDeviceId;
      p += 10;
    } else if (Literal(p, end, "timestamp\"")) {
      field = kTimestamp;
      p += 10;
    } else if (Literal(p, end, "metrics\"")) {
      field = kMetrics;
      p += 8;
    } else if (Literal(p, end, "event_id\"")) {
      field = kEventId;
      p += 9;
    } else {
      return nullptr;
    }
    if (seen & field) return nullptr;
    seen |= field;
    if (!Eat(p, end, ':')) return nullptr;
    p = SkipWs(p, end);
    switch (field) {
      case kDeviceId:
        p = ScanDeviceId(p, end, bounds, event);
        break;
      case kTimestamp:
        p = ScanTimestamp(p, end, event);
        break;
      case kMetrics:
        p = ScanMetrics(p, end, event);
        break;
      case kEventId:
        p = ScanEventId(p, end, event);
        break;
    }
    if (p == nullptr) return nullptr;
    if (Eat(p, end, ',')) continue;
    if (Eat(p, end, '}')) break;
    return nullptr;
  }
  if (!(seen & kTimestamp) || !(seen & kMetrics)) return nullptr;
  if (event->timestamp_ns > bounds.latest_ns || event->timestamp_ns < bounds.earliest_ns) {
    return nullptr;
  }
  if (!(seen & kDeviceId)) {
    if (!ValidDeviceId(bounds.topic_device_id)) return nullptr;  // also: no topic
    event->device_id.assign(bounds.topic_device_id);
  }
  return p;
}

}  // namespace joule::ingest

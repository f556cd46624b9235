#include "store/archive/archive_row.h"

#include <bit>
#include <cmath>
#include <cstring>

#include "common/clock.h"
#include "common/json_writer.h"
#include "common/time_format.h"

namespace joule::store {
namespace {

// Whether a metric name equals the one cached for its position: inline for names up to 16
// bytes (two overlapping loads of 8, or of 4), where memcmp's call was ~10 % of the row's
// time (four names per row).
inline bool SameName(const std::string& cached, std::string_view name) {
  const size_t n = name.size();
  if (cached.size() != n) return false;
  const char* a = cached.data();
  const char* b = name.data();
  auto load8 = [](const char* p) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    return v;
  };
  auto load4 = [](const char* p) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
  };
  if (n >= 8) {
    if (n > 16) return std::memcmp(a, b, n) == 0;
    return ((load8(a) ^ load8(b)) | (load8(a + n - 8) ^ load8(b + n - 8))) == 0;
  }
  if (n >= 4) return ((load4(a) ^ load4(b)) | (load4(a + n - 4) ^ load4(b + n - 4))) == 0;
  for (size_t i = 0; i < n; ++i) {
    if (a[i] != b[i]) return false;
  }
  return true;
}

constexpr double kPow10[] = {1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7};
constexpr int kMaxDecimals = 7;

constexpr char kDigitPairs[] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

void Put2(char* p, unsigned v) { std::memcpy(p, kDigitPairs + 2 * v, 2); }

constexpr uint64_t kPow10Int[] = {1,
                                  10,
                                  100,
                                  1000,
                                  10000,
                                  100000,
                                  1000000,
                                  10000000,
                                  100000000,
                                  1000000000,
                                  10000000000,
                                  100000000000,
                                  1000000000000,
                                  10000000000000,
                                  100000000000000,
                                  1000000000000000,
                                  10000000000000000,
                                  100000000000000000,
                                  1000000000000000000,
                                  10000000000000000000u};

// Decimal digits of v (1 for 0).
int DigitCount(uint64_t v) {
  // floor(log10(2^bits)) ≈ bits · 1233 / 4096, then one correction.
  // (v | 1: the same count, and 1 for 0.)
  const uint64_t w = v | 1;
  const int t = (std::bit_width(w) * 1233) >> 12;
  return t + (w >= kPow10Int[t] ? 1 : 0);
}

// v in decimal at p, two digits at a time from the right; returns the end.
char* PutUint(uint64_t v, char* p) {
  char* const end = p + DigitCount(v);
  char* d = end;
  while (v >= 100) {
    d -= 2;
    Put2(d, static_cast<unsigned>(v % 100));
    v /= 100;
  }
  if (v >= 10) {
    Put2(d - 2, static_cast<unsigned>(v));
  } else {
    d[-1] = static_cast<char>('0' + v);
  }
  return end;
}

// v < 10^k as exactly k digits (leading zeros) at p.
void PutFraction(uint64_t v, int k, char* p) {
  char* d = p + k;
  for (; k >= 2; k -= 2) {
    d -= 2;
    Put2(d, static_cast<unsigned>(v % 100));
    v /= 100;
  }
  if (k == 1) d[-1] = static_cast<char>('0' + v);
}

// Whether JsonWriter::AppendEscaped would change `s` beyond the quotes.
bool NeedsEscape(std::string_view s) {
  unsigned bad = 0;
  // Bytes >= 0x80 take the slow path, which checks that they are well-formed UTF-8.
  for (unsigned char c : s) {
    bad |= static_cast<unsigned>(c < 0x20) | (c == '"') | (c == '\\') | (c >= 0x80);
  }
  return bad != 0;
}

// Writes `s` as a JSON string at `p` (room for 6 bytes per character + 2 assumed).
char* PutString(std::string_view s, char* p) {
  if (!NeedsEscape(s)) {
    *p++ = '"';
    std::memcpy(p, s.data(), s.size());
    p += s.size();
    *p++ = '"';
    return p;
  }
  std::string escaped;
  JsonWriter::AppendEscaped(&escaped, s);
  std::memcpy(p, escaped.data(), escaped.size());
  return p + escaped.size();
}

char* PutLiteral(char* p, std::string_view s) {
  std::memcpy(p, s.data(), s.size());
  return p + s.size();
}

char* PutDouble(double v, char* p) {
  // +0, the common reading of a switched-off appliance, without a call. -0 (rare) takes the
  // general path like every value PutSimpleDouble does not take: its bytes are then
  // JsonWriter's by construction (today "0", as model::EventToJson and the API write it),
  // not a second rule kept here (a black-box test asked whether the archive dropped its sign).
  if (v == 0 && !std::signbit(v)) {
    *p++ = '0';
    return p;
  }
  if (char* end = PutSimpleDouble(v, p)) return end;
  std::string s;
  JsonWriter::AppendDouble(&s, v);
  std::memcpy(p, s.data(), s.size());
  return p + s.size();
}

}  // namespace

char* PutSimpleDouble(double v, char* p) {
  const bool negative = v < 0;
  const double a = negative ? -v : v;
  // Outside this range JsonWriter uses exponent notation (below 1e-4 and from 1e16 on),
  // or the value is 0 or not finite.
  if (!(a >= 1e-3 && a < 1e15)) return nullptr;
  // The finest scale K <= 7 decimals at which a·10^K stays below 1e15 < 2^50. There, m
  // and 10^K are exact doubles, so m / 10^K is the correctly rounded value of the decimal
  // m·10^-K — what any exact reader (and the shortest-round-trip algorithm) makes of it —
  // and multiples of 10^-K are more than 4 ulps of `a` apart: at most one of them reads
  // back as `a`, the integer nearest to a·10^K (the product's rounding error and a's own
  // are < 0.2). Any shorter decimal that reads back as `a` is also a multiple of 10^-K,
  // hence that one: so if it fails no decimal with <= K decimals works, and if it works,
  // m without its trailing zeros (k <= K decimals) is the shortest form.
  int k = kMaxDecimals;
  while (k > 0 && a * kPow10[k] >= 1e15) --k;
  const double scaled = a * kPow10[k];
  // Round half up (a tie is never a match, see above); no libm call.
  const auto mi = static_cast<int64_t>(scaled + 0.5);
  if (static_cast<double>(mi) / kPow10[k] != a) return nullptr;
  auto m = static_cast<uint64_t>(mi);
  // Trailing zeros off, at most k <= 7 of them: 4, 2, then 1 at a time.
  if (k >= 4 && m % 10000 == 0) {
    m /= 10000;
    k -= 4;
  }
  if (k >= 2 && m % 100 == 0) {
    m /= 100;
    k -= 2;
  }
  if (k >= 1 && m % 10 == 0) {
    m /= 10;
    k -= 1;
  }

  // The integer part, then the point and exactly k fraction digits (m < 1e15: both parts
  // are written straight into `p`, no temporary and no copy).
  if (negative) *p++ = '-';
  if (k == 0) return PutUint(m, p);
  const uint64_t unit = kPow10Int[k];
  p = PutUint(m / unit, p);  // "0" for values below 1
  *p++ = '.';
  PutFraction(m % unit, k, p);
  return p + k;
}

// RFC 3339 UTC with milliseconds (AppendRfc3339Millis), plus 3 or 6 more fraction digits
// when `exact` and the time has them (FormatRfc3339Exact). Room for 40 bytes assumed.
char* ArchiveRowEncoder::PutTime(HourCache* cache, int64_t nanos, bool exact, char* p) {
  int64_t ms = nanos / kNanosPerMilli;
  int64_t sub_milli = nanos % kNanosPerMilli;
  if (sub_milli < 0) {
    sub_milli += kNanosPerMilli;
    --ms;
  }
  int64_t hour = ms / (3600 * 1000);
  int64_t in_hour = ms % (3600 * 1000);
  if (in_hour < 0) {
    in_hour += 3600 * 1000;
    --hour;
  }
  constexpr int64_t kMinHour = INT64_MIN / (3600 * kNanosPerSecond) + 1;
  if (hour != cache->hour && hour >= kMinHour) {
    std::string s;
    AppendRfc3339Millis(&s, hour * 3600 * kNanosPerSecond);
    if (s.size() == 24) {
      std::memcpy(cache->prefix, s.data(), sizeof cache->prefix);
      cache->hour = hour;
    }
  }
  if (hour == cache->hour) {
    p = PutLiteral(p, std::string_view(cache->prefix, sizeof cache->prefix));
    const auto r = static_cast<unsigned>(in_hour);
    const unsigned millis = r % 1000, secs = r / 1000;
    Put2(p, secs / 60);
    p[2] = ':';
    Put2(p + 3, secs % 60);
    p[5] = '.';
    p[6] = static_cast<char>('0' + millis / 100);
    Put2(p + 7, millis % 100);
    p[9] = 'Z';
    p += 10;
  } else {  // the first hour of int64 time, or a year outside 0000–9999: not cached
    std::string s;
    AppendRfc3339Millis(&s, nanos);
    p = PutLiteral(p, s);
  }
  if (!exact || sub_milli == 0) return p;
  --p;  // 'Z'
  unsigned frac = static_cast<unsigned>(sub_milli);
  int digits = 6;
  if (frac % kNanosPerMicro == 0) {
    frac /= kNanosPerMicro;
    digits = 3;
  }
  for (int i = digits - 1; i >= 0; --i) {
    p[i] = static_cast<char>('0' + frac % 10);
    frac /= 10;
  }
  p += digits;
  *p++ = 'Z';
  return p;
}

void ArchiveRowEncoder::Append(const model::Event& e, std::string* out) {
  if (e.metrics.size() > EventView::kMaxMetrics) {  // not a valid event; never from the log
    out->append(model::EventToJson(e));
    out->push_back('\n');
    return;
  }
  ViewOf(e, &scratch_);
  Append(scratch_, out);
}

void ArchiveRowEncoder::Append(const EventView& e, std::string* out) {
  // Upper bound of the row: escaping writes at most 6 bytes per input byte; a number at
  // most 24 (JsonWriter's bound) plus the comma; a time at most 40; the fixed text 84.
  const size_t n_metrics = e.metric_count;
  size_t bound =
      256 + 6 * (e.device_id.size() + e.event_id.size()) + e.meta_json.size() + 32 * n_metrics;
  for (size_t i = 0; i < n_metrics; ++i) bound += 6 * e.metrics[i].name.size();
  const size_t old = out->size();
  out->resize(old + bound);
  char* const begin = out->data() + old;
  char* p = begin;

  p = PutLiteral(p, "{\"device_id\":");
  p = PutString(e.device_id, p);
  p = PutLiteral(p, ",\"timestamp\":\"");
  p = PutTime(&timestamp_hour_, e.timestamp_ns, /*exact=*/true, p);
  *p++ = '"';
  if (!e.event_id.empty()) {
    p = PutLiteral(p, ",\"event_id\":");
    p = PutString(e.event_id, p);
  }
  p = PutLiteral(p, ",\"metrics\":{");
  if (keys_.size() < n_metrics) {
    keys_.resize(n_metrics);
    key_lens_.resize(n_metrics, 0);
    key_names_.resize(n_metrics);
  }
  for (size_t i = 0; i < n_metrics; ++i) {
    const EventView::Metric& m = e.metrics[i];
    if (i > 0) *p++ = ',';
    if (key_lens_[i] == 0 || !SameName(key_names_[i], m.name)) {
      key_names_[i] = m.name;
      keys_[i].clear();
      JsonWriter::AppendEscaped(&keys_[i], m.name);
      keys_[i].push_back(':');
      key_lens_[i] = keys_[i].size();
      if (keys_[i].size() < kKeyCopy) keys_[i].resize(kKeyCopy, ' ');
    }
    if (key_lens_[i] <= kKeyCopy) {
      // A fixed-size copy (no memcpy call); the bytes past the key are overwritten next.
      // Room: `bound` leaves more than kKeyCopy bytes beyond the row's longest possible
      // text up to here (84 fixed + 2 × 40 for the times < 256 − kKeyCopy).
      std::memcpy(p, keys_[i].data(), kKeyCopy);
      p += key_lens_[i];
    } else {
      p = PutLiteral(p, std::string_view(keys_[i].data(), key_lens_[i]));
    }
    p = PutDouble(m.value, p);
  }
  *p++ = '}';
  if (!e.meta_json.empty()) {
    p = PutLiteral(p, ",\"meta\":");
    p = PutLiteral(p, e.meta_json);
  }
  p = PutLiteral(p, ",\"received_at\":\"");
  p = PutTime(&received_hour_, e.received_at_ns, /*exact=*/false, p);
  p = PutLiteral(p, "\"}\n");
  out->resize(old + static_cast<size_t>(p - begin));
}

void AppendArchiveRow(const model::Event& event, std::string* out) {
  ArchiveRowEncoder encoder;
  encoder.Append(event, out);
}

}  // namespace joule::store

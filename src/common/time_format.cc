#include "common/time_format.h"

#include <fmt/format.h>

#include <cctype>
#include <cstring>
#include <limits>

#include "common/clock.h"

namespace joule {

int64_t DaysFromCivil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

void CivilFromDays(int64_t z, int64_t* y, unsigned* m, unsigned* d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const unsigned doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t yy = static_cast<int64_t>(yoe) + era * 400;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = yy + (*m <= 2);
}

static int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

namespace {

void CivilMillis(int64_t nanos, int64_t* y, unsigned* m, unsigned* d, int64_t* ms_of_day) {
  const int64_t ms_total = FloorDiv(nanos, kNanosPerMilli);
  const int64_t days = FloorDiv(ms_total, 86400000);
  *ms_of_day = ms_total - days * 86400000;
  CivilFromDays(days, y, m, d);
}

// "00" .. "99".
constexpr char kDigitPairs[] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

// "YYYY-MM-DDThh:mm:ss.mmmZ" for a year in [0, 9999].
char* WriteCivilMillis(char* b, int64_t y, unsigned m, unsigned d, int64_t ms_of_day) {
  const auto ms = static_cast<unsigned>(ms_of_day);  // [0, 86400000)
  const unsigned secs = ms / 1000;
  auto pair = [b](int pos, unsigned v) { std::memcpy(b + pos, kDigitPairs + 2 * v, 2); };
  pair(0, static_cast<unsigned>(y) / 100);
  pair(2, static_cast<unsigned>(y) % 100);
  b[4] = '-';
  pair(5, m);
  b[7] = '-';
  pair(8, d);
  b[10] = 'T';
  pair(11, secs / 3600);
  b[13] = ':';
  pair(14, secs / 60 % 60);
  b[16] = ':';
  pair(17, secs % 60);
  b[19] = '.';
  b[20] = static_cast<char>('0' + ms % 1000 / 100);
  pair(21, ms % 100);
  b[23] = 'Z';
  return b + 24;
}

}  // namespace

void AppendRfc3339Millis(std::string* out, int64_t nanos) {
  int64_t y, ms_of_day;
  unsigned m, d;
  CivilMillis(nanos, &y, &m, &d, &ms_of_day);
  if (y < 0 || y > 9999) {
    const int64_t secs = ms_of_day / 1000;
    fmt::format_to(std::back_inserter(*out), "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}.{:03d}Z", y,
                   m, d, secs / 3600, (secs / 60) % 60, secs % 60, ms_of_day % 1000);
    return;
  }
  // The common case without the formatting library (hot in the archiver): same bytes.
  char b[24];
  out->append(b, WriteCivilMillis(b, y, m, d, ms_of_day));
}

char* WriteRfc3339Millis(char* out, int64_t nanos) {
  int64_t y, ms_of_day;
  unsigned m, d;
  CivilMillis(nanos, &y, &m, &d, &ms_of_day);
  return WriteCivilMillis(out, y, m, d, ms_of_day);
}

std::string FormatRfc3339Millis(int64_t nanos) {
  std::string s;
  s.reserve(24);
  AppendRfc3339Millis(&s, nanos);
  return s;
}

std::string FormatRfc3339Exact(int64_t nanos) {
  std::string s = FormatRfc3339Millis(nanos);
  const int64_t sub_milli = nanos - FloorDiv(nanos, kNanosPerMilli) * kNanosPerMilli;
  if (sub_milli == 0) return s;
  s.pop_back();  // 'Z'
  if (sub_milli % kNanosPerMicro == 0) {
    fmt::format_to(std::back_inserter(s), "{:03d}Z", sub_milli / kNanosPerMicro);
  } else {
    fmt::format_to(std::back_inserter(s), "{:06d}Z", sub_milli);
  }
  return s;
}

namespace {
bool Digits(std::string_view s, size_t pos, size_t n, int* out) {
  if (pos + n > s.size()) return false;
  int v = 0;
  for (size_t i = 0; i < n; ++i) {
    char c = s[pos + i];
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  *out = v;
  return true;
}
bool IsLeap(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }
}  // namespace

bool ParseRfc3339(std::string_view s, int64_t* nanos) {
  int64_t secs = 0, frac = 0;
  if (!ParseRfc3339Seconds(s, &secs, &frac)) return false;
  // int64 nanoseconds cover 1677-09-21 to 2262-04-11: reject outside.
  if (secs < -9223372036LL || secs > 9223372035LL) return false;
  *nanos = secs * kNanosPerSecond + frac;
  return true;
}

bool ParseRfc3339Seconds(std::string_view s, int64_t* seconds, int64_t* fraction_ns) {
  int y, mo, d, h, mi, se;
  if (!Digits(s, 0, 4, &y) || s.size() < 20 || s[4] != '-' || !Digits(s, 5, 2, &mo) ||
      s[7] != '-' || !Digits(s, 8, 2, &d) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
      !Digits(s, 11, 2, &h) || s[13] != ':' || !Digits(s, 14, 2, &mi) || s[16] != ':' ||
      !Digits(s, 17, 2, &se)) {
    return false;
  }
  static const int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (mo < 1 || mo > 12 || d < 1) return false;
  int max_day = kDays[mo - 1] + (mo == 2 && IsLeap(y) ? 1 : 0);
  if (d > max_day || h > 23 || mi > 59 || se > 60) return false;
  if (se == 60) se = 59;  // leap second: clamp (documented)
  size_t pos = 19;
  int64_t frac = 0;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    size_t start = pos;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      if (pos - start >= 9) return false;
      frac = frac * 10 + (s[pos] - '0');
      ++pos;
    }
    size_t n = pos - start;
    if (n == 0) return false;
    for (size_t i = n; i < 9; ++i) frac *= 10;
  }
  if (pos >= s.size()) return false;
  int64_t offset_s = 0;
  if (s[pos] == 'Z' || s[pos] == 'z') {
    ++pos;
  } else if (s[pos] == '+' || s[pos] == '-') {
    int oh, om;
    if (!Digits(s, pos + 1, 2, &oh) || pos + 3 >= s.size() || s[pos + 3] != ':' ||
        !Digits(s, pos + 4, 2, &om) || oh > 23 || om > 59) {
      return false;
    }
    offset_s = (oh * 3600 + om * 60) * (s[pos] == '-' ? -1 : 1);
    pos += 6;
  } else {
    return false;
  }
  if (pos != s.size()) return false;
  int64_t days = DaysFromCivil(y, mo, d);
  *seconds = days * 86400 + h * 3600 + mi * 60 + se - offset_s;
  *fraction_ns = frac;
  return true;
}

Result<int64_t> ParseDurationNanos(std::string_view s) {
  size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
  if (i == 0) return Status::InvalidArgument(fmt::format("invalid duration '{}'", s));
  double v;
  try {
    v = std::stod(std::string(s.substr(0, i)));
  } catch (...) {
    return Status::InvalidArgument(fmt::format("invalid duration '{}'", s));
  }
  std::string_view unit = s.substr(i);
  // A space before the unit is taken, as for sizes ("10 s" like "4 MiB").
  while (!unit.empty() && unit.front() == ' ') unit.remove_prefix(1);
  double mult;
  if (unit.empty() || unit == "s")
    mult = 1e9;
  else if (unit == "ms")
    mult = 1e6;
  else if (unit == "us")
    mult = 1e3;
  else if (unit == "ns")
    mult = 1;
  else if (unit == "m")
    mult = 60e9;
  else if (unit == "h")
    mult = 3600e9;
  else if (unit == "d")
    mult = 86400e9;
  else
    return Status::InvalidArgument(
        fmt::format("invalid duration unit in '{}' (units: ns, us, ms, s, m, h, d)", s));
  double r = v * mult;
  if (r > 9e18) return Status::InvalidArgument(fmt::format("duration '{}' too large", s));
  return static_cast<int64_t>(r);
}

Result<uint64_t> ParseSizeBytes(std::string_view s) {
  size_t i = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  if (i == 0) return Status::InvalidArgument(fmt::format("invalid size '{}'", s));
  // Overflow-checked, as durations are: "99999999999GiB" was taken modulo 2^64 (a
  // log_retention_bytes of 16777216TiB became 0, unlimited; found by a black-box test).
  const Status too_large = Status::InvalidArgument(fmt::format("size '{}' too large", s));
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  uint64_t v = 0;
  for (size_t d = 0; d < i; ++d) {
    const uint64_t digit = static_cast<uint64_t>(s[d] - '0');
    if (v > (kMax - digit) / 10) return too_large;
    v = v * 10 + digit;
  }
  std::string_view unit = s.substr(i);
  while (!unit.empty() && unit.front() == ' ') unit.remove_prefix(1);
  uint64_t mult;
  if (unit.empty() || unit == "B")
    mult = 1;
  else if (unit == "KiB")
    mult = 1ull << 10;
  else if (unit == "MiB")
    mult = 1ull << 20;
  else if (unit == "GiB")
    mult = 1ull << 30;
  else if (unit == "TiB")
    mult = 1ull << 40;
  else if (unit == "KB" || unit == "kB")
    mult = 1000;
  else if (unit == "MB")
    mult = 1000000;
  else if (unit == "GB")
    mult = 1000000000;
  else if (unit == "TB")  // (was refused while KB, MB and GB were taken)
    mult = 1000000000000;
  else
    return Status::InvalidArgument(fmt::format(
        "invalid size unit in '{}' (units: B, KiB, MiB, GiB, TiB, KB or kB, MB, GB, TB)", s));
  if (v > kMax / mult) return too_large;
  return v * mult;
}

}  // namespace joule

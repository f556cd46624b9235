#include "common/json_writer.h"

#include <fmt/compile.h>
#include <fmt/format.h>

#include <array>
#include <cmath>
#include <cstring>

namespace joule {

void JsonWriter::BeforeValue() {
  if (after_key_) {
    after_key_ = false;
    return;
  }
  if (need_comma_.back()) out_ += ',';
  need_comma_.back() = true;
}

void JsonWriter::BeginObject() {
  BeforeValue();
  out_ += '{';
  need_comma_.push_back(false);
}
void JsonWriter::EndObject() {
  need_comma_.pop_back();
  out_ += '}';
}
void JsonWriter::BeginArray() {
  BeforeValue();
  out_ += '[';
  need_comma_.push_back(false);
}
void JsonWriter::EndArray() {
  need_comma_.pop_back();
  out_ += ']';
}
void JsonWriter::Key(std::string_view key) {
  if (need_comma_.back()) out_ += ',';
  need_comma_.back() = true;
  AppendEscaped(&out_, key);
  out_ += ':';
  after_key_ = true;
}
void JsonWriter::String(std::string_view s) {
  BeforeValue();
  AppendEscaped(&out_, s);
}
void JsonWriter::Int(int64_t v) {
  BeforeValue();
  AppendInt(&out_, v);
}
void JsonWriter::Uint(uint64_t v) {
  BeforeValue();
  AppendUint(&out_, v);
}
void JsonWriter::Double(double v) {
  BeforeValue();
  AppendDouble(&out_, v);
}

namespace {

// "00" .. "99".
constexpr char kDigitPairs[] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

// Writes the decimal digits of v (no sign) ending at `end`; returns where they begin.
char* WriteDigitsBackward(char* end, uint64_t v) {
  while (v >= 100) {
    const size_t pair = static_cast<size_t>(v % 100) * 2;
    v /= 100;
    *--end = kDigitPairs[pair + 1];
    *--end = kDigitPairs[pair];
  }
  if (v >= 10) {
    *--end = kDigitPairs[v * 2 + 1];
    *--end = kDigitPairs[v * 2];
  } else {
    *--end = static_cast<char>('0' + v);
  }
  return end;
}

// fmt's "{}" of a finite, non-zero double (fmt 9: format.h, write_float with default
// specs): the shortest digits that read back exactly (Dragonbox), in fixed notation when
// the decimal exponent of the first digit is in [-4, 16), else d[.ddd]e±XX; no ".0".
// Here the digits come from the same Dragonbox and are laid out directly, without fmt's
// generic padding and grouping machinery (~3x fewer instructions per number).
// tests/json_writer_test.cc compares the two over millions of doubles.
char* WriteShortestDouble(char* p, double v) {
  if (std::signbit(v)) {
    *p++ = '-';
    v = -v;
  }
  const auto dec = fmt::detail::dragonbox::to_decimal(v);
  char digits[24];
  char* const digits_end = digits + sizeof digits;
  const char* d = WriteDigitsBackward(digits_end, dec.significand);
  const int n = static_cast<int>(digits_end - d);
  const int exp = dec.exponent;  // value = digits * 10^exp
  const int first_exp = exp + n - 1;
  if (first_exp < -4 || first_exp >= 16) {
    *p++ = d[0];
    if (n > 1) {
      *p++ = '.';
      std::memcpy(p, d + 1, static_cast<size_t>(n - 1));
      p += n - 1;
    }
    *p++ = 'e';
    int e = first_exp;
    if (e < 0) {
      *p++ = '-';
      e = -e;
    } else {
      *p++ = '+';
    }
    if (e >= 100) {
      *p++ = static_cast<char>('0' + e / 100);  // |e| <= 324
      e %= 100;
    }
    *p++ = kDigitPairs[e * 2];
    *p++ = kDigitPairs[e * 2 + 1];
    return p;
  }
  if (exp >= 0) {  // 1234e5 -> 123400000
    std::memcpy(p, d, static_cast<size_t>(n));
    p += n;
    std::memset(p, '0', static_cast<size_t>(exp));
    return p + exp;
  }
  const int int_digits = n + exp;
  if (int_digits > 0) {  // 1234e-2 -> 12.34
    std::memcpy(p, d, static_cast<size_t>(int_digits));
    p += int_digits;
    *p++ = '.';
    std::memcpy(p, d + int_digits, static_cast<size_t>(n - int_digits));
    return p + (n - int_digits);
  }
  *p++ = '0';  // 1234e-6 -> 0.001234
  *p++ = '.';
  std::memset(p, '0', static_cast<size_t>(-int_digits));
  p += -int_digits;
  std::memcpy(p, d, static_cast<size_t>(n));
  return p + n;
}

}  // namespace

char* JsonWriter::WriteDouble(char* out, double v) {
  if (!std::isfinite(v)) {
    std::memcpy(out, "null", 4);
    return out + 4;
  }
  // An integral value below 2^53 (also 0 and -0, written "0"): its shortest form is the
  // integer's digits, in fixed notation (below 10^16).
  if (v >= -9007199254740992.0 && v <= 9007199254740992.0) {
    const auto i = static_cast<int64_t>(v);
    if (static_cast<double>(i) == v) {
      char b[24];
      char* const end = b + sizeof b;
      char* p =
          WriteDigitsBackward(end, i < 0 ? 0 - static_cast<uint64_t>(i) : static_cast<uint64_t>(i));
      if (i < 0) *--p = '-';
      std::memcpy(out, p, static_cast<size_t>(end - p));
      return out + (end - p);
    }
  }
  return WriteShortestDouble(out, v);  // at most "-1.2345678901234567e-308", 24 chars
}

void JsonWriter::AppendDouble(std::string* out, double v) {
  char b[kMaxDoubleChars];
  out->append(b, WriteDouble(b, v));
}
void JsonWriter::AppendInt(std::string* out, int64_t v) {
  char b[24];
  char* const end = b + sizeof b;
  char* p =
      WriteDigitsBackward(end, v < 0 ? 0 - static_cast<uint64_t>(v) : static_cast<uint64_t>(v));
  if (v < 0) *--p = '-';
  out->append(p, end);
}
void JsonWriter::AppendUint(std::string* out, uint64_t v) {
  char b[24];
  char* const end = b + sizeof b;
  out->append(WriteDigitsBackward(end, v), end);
}
void JsonWriter::Bool(bool v) {
  BeforeValue();
  out_ += v ? "true" : "false";
}
void JsonWriter::Null() {
  BeforeValue();
  out_ += "null";
}
void JsonWriter::Raw(std::string_view json) {
  BeforeValue();
  out_ += json;
}

namespace {

// Characters JSON strings must escape: control characters, '"' and '\'; and bytes >= 0x80,
// which are looked at more closely: a well-formed UTF-8 sequence is copied as it is, an
// ill-formed one is replaced.
constexpr auto kEscape = [] {
  std::array<bool, 256> t{};
  for (int c = 0; c < 0x20; ++c) t[c] = true;
  t['"'] = true;
  t['\\'] = true;
  for (int c = 0x80; c < 0x100; ++c) t[c] = true;
  return t;
}();

// The length of the well-formed UTF-8 sequence that starts `s` (whose first byte is
// >= 0x80), or, negated, the length of its longest ill-formed prefix ("maximal subpart",
// Unicode §3.9, at least 1): the bytes one U+FFFD replaces.
int Utf8Sequence(std::string_view s) {
  const auto b0 = static_cast<unsigned char>(s[0]);
  int length;
  unsigned char low = 0x80, high = 0xBF;  // the range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    length = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    length = 3;
    if (b0 == 0xE0) low = 0xA0;   // no overlong forms
    if (b0 == 0xED) high = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    length = 4;
    if (b0 == 0xF0) low = 0x90;   // no overlong forms
    if (b0 == 0xF4) high = 0x8F;  // nothing above U+10FFFF
  } else {
    return -1;  // a continuation byte, C0, C1 or F5..FF
  }
  for (int i = 1; i < length; ++i) {
    if (static_cast<size_t>(i) >= s.size()) return -i;
    const auto b = static_cast<unsigned char>(s[static_cast<size_t>(i)]);
    if (b < low || b > high) return -i;
    low = 0x80;
    high = 0xBF;
  }
  return length;
}

}  // namespace

bool JsonWriter::NeedsEscape(std::string_view s) {
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (!kEscape[c]) continue;
    if (c < 0x80) return true;
    const int n = Utf8Sequence(s.substr(i));
    if (n < 0) return true;
    i += static_cast<size_t>(n) - 1;
  }
  return false;
}

void JsonWriter::AppendEscaped(std::string* out, std::string_view s) {
  out->push_back('"');
  size_t run = 0;  // start of the pending run of characters that need no escaping
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (!kEscape[c]) continue;
    if (c >= 0x80) {
      const int n = Utf8Sequence(s.substr(i));
      if (n > 0) {
        i += static_cast<size_t>(n) - 1;  // well-formed: part of the run
        continue;
      }
      // Ill-formed UTF-8 (e.g. a percent-decoded %ff echoed in an error message): the
      // output must stay valid JSON text (RFC 8259 §8.1), so U+FFFD stands in for it.
      out->append(s.data() + run, i - run);
      out->append("\\ufffd", 6);
      i += static_cast<size_t>(-n) - 1;
      run = i + 1;
      continue;
    }
    out->append(s.data() + run, i - run);
    run = i + 1;
    switch (c) {
      case '"':
        out->append("\\\"", 2);
        break;
      case '\\':
        out->append("\\\\", 2);
        break;
      case '\n':
        out->append("\\n", 2);
        break;
      case '\r':
        out->append("\\r", 2);
        break;
      case '\t':
        out->append("\\t", 2);
        break;
      case '\b':
        out->append("\\b", 2);
        break;
      case '\f':
        out->append("\\f", 2);
        break;
      default:
        fmt::format_to(std::back_inserter(*out), "\\u{:04x}", c);
    }
  }
  out->append(s.data() + run, s.size() - run);
  out->push_back('"');
}

}  // namespace joule

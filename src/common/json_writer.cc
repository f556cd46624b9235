#include "common/json_writer.h"

#include <fmt/compile.h>
#include <fmt/format.h>

#include <cmath>

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

// Compiled format strings into a stack buffer: no format-string parsing, no iterator
// adapter per character (this is the hot path of every record on the wire).
void JsonWriter::AppendDouble(std::string* out, double v) {
  if (!std::isfinite(v)) {
    out->append("null", 4);
    return;
  }
  if (v == 0) v = 0;  // no "-0"
  char b[32];         // the shortest round-trip form of a double is at most 24 chars
  out->append(b, fmt::format_to(b, FMT_COMPILE("{}"), v));
}
void JsonWriter::AppendInt(std::string* out, int64_t v) {
  char b[24];
  out->append(b, fmt::format_to(b, FMT_COMPILE("{}"), v));
}
void JsonWriter::AppendUint(std::string* out, uint64_t v) {
  char b[24];
  out->append(b, fmt::format_to(b, FMT_COMPILE("{}"), v));
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

void JsonWriter::AppendEscaped(std::string* out, std::string_view s) {
  out->push_back('"');
  size_t run = 0;  // start of the pending run of characters that need no escaping
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
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

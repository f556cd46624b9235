#include "common/json_writer.h"

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
  fmt::format_to(std::back_inserter(out_), "{}", v);
}
void JsonWriter::Uint(uint64_t v) {
  BeforeValue();
  fmt::format_to(std::back_inserter(out_), "{}", v);
}
void JsonWriter::Double(double v) {
  BeforeValue();
  if (!std::isfinite(v)) {
    out_ += "null";
    return;
  }
  if (v == 0) v = 0;  // no "-0"
  fmt::format_to(std::back_inserter(out_), "{}", v);
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
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        *out += "\\\"";
        break;
      case '\\':
        *out += "\\\\";
        break;
      case '\n':
        *out += "\\n";
        break;
      case '\r':
        *out += "\\r";
        break;
      case '\t':
        *out += "\\t";
        break;
      case '\b':
        *out += "\\b";
        break;
      case '\f':
        *out += "\\f";
        break;
      default:
        if (c < 0x20) {
          fmt::format_to(std::back_inserter(*out), "\\u{:04x}", c);
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
  }
  out->push_back('"');
}

}  // namespace joule

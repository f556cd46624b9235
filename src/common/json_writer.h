// JsonWriter: a small streaming JSON encoder into a std::string. It inserts commas
// itself; the caller keeps Begin/End balanced. Doubles are written in the shortest form
// that reads back exactly; non-finite numbers become null.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace joule {

class JsonWriter {
 public:
  JsonWriter() { need_comma_.push_back(false); }

  void BeginObject();
  void EndObject();
  void BeginArray();
  void EndArray();
  void Key(std::string_view key);
  void String(std::string_view s);
  void Int(int64_t v);
  void Uint(uint64_t v);
  void Double(double v);
  void Bool(bool v);
  void Null();
  // Inserts already-encoded JSON as one value.
  void Raw(std::string_view json);

  const std::string& str() const { return out_; }
  std::string Take() { return std::move(out_); }

  // Appends `s` as a quoted JSON string. The output is always valid UTF-8: well-formed
  // UTF-8 is copied, each ill-formed sequence of `s` (a maximal subpart, Unicode §3.9)
  // becomes \ufffd, so bytes from untrusted input (a percent-decoded path) cannot make
  // the document invalid.
  static void AppendEscaped(std::string* out, std::string_view s);
  // Whether AppendEscaped changes any character of `s` (a control character, '"', '\\',
  // ill-formed UTF-8).
  static bool NeedsEscape(std::string_view s);
  // The number encodings Double, Int and Uint use, for encoders that append directly.
  static void AppendDouble(std::string* out, double v);
  static void AppendInt(std::string* out, int64_t v);
  static void AppendUint(std::string* out, uint64_t v);
  // AppendDouble's bytes written at `out` (at most kMaxDoubleChars); returns their end.
  static constexpr size_t kMaxDoubleChars = 24;
  static char* WriteDouble(char* out, double v);

 private:
  void BeforeValue();
  std::string out_;
  std::vector<bool> need_comma_;
  bool after_key_ = false;
};

}  // namespace joule

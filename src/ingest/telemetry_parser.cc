#include "ingest/telemetry_parser.h"

#include <fmt/format.h>
#include <simdjson.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>

#include "common/clock.h"
#include "common/json_writer.h"
#include "common/time_format.h"
#include "ingest/common_shape_scanner.h"

namespace joule::ingest {
namespace {

namespace od = simdjson::ondemand;
using simdjson::error_code;

#define INGEST_TRY(expr)                                            \
  do {                                                              \
    if (error_code _ingest_e = (expr); _ingest_e) return _ingest_e; \
  } while (0)

// Error code used internally for syntax errors that simdjson reports as a type error (a
// token such as `tru` or `-` whose first byte announced another type).
constexpr error_code kSyntaxError = simdjson::TAPE_ERROR;

// Depth (below an event object) to which values we do not interpret are validated.
constexpr int kMaxNesting = 32;

// Why an event is rejected. The order is the precedence when an event breaks several
// rules (the first wins), so the reported code does not depend on field order.
enum class Reject : uint8_t {
  kNone = 0,
  kJson,
  kDeviceId,
  kTimestamp,
  kTimestampRange,
  kMetrics,
  kMeta,
  kEventId,
};

std::string_view RejectCode(Reject r) {
  switch (r) {
    case Reject::kNone:
      break;
    case Reject::kJson:
      return kInvalidJson;
    case Reject::kDeviceId:
      return kInvalidDeviceId;
    case Reject::kTimestamp:
      return kInvalidTimestamp;
    case Reject::kTimestampRange:
      return kTimestampOutOfRange;
    case Reject::kMetrics:
      return kInvalidMetrics;
    case Reject::kMeta:
      return kInvalidMeta;
    case Reject::kEventId:
      return kInvalidEventId;
  }
  return "internal";
}

// A user-supplied string for an error message: at most 64 bytes (cut at a UTF-8
// boundary), quoted. Error messages must stay small however large the input.
std::string Quote(std::string_view s) {
  constexpr size_t kMax = 64;
  std::string out = "'";
  if (s.size() <= kMax) {
    out.append(s);
  } else {
    size_t n = kMax;
    while (n > 0 && (static_cast<uint8_t>(s[n]) & 0xC0) == 0x80) --n;
    out.append(s.substr(0, n));
    out.append("…");
  }
  out += '\'';
  return out;
}

std::string_view TrimJsonWhitespace(std::string_view s) {
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\t' || s.back() == '\n' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// RFC 8259 number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
// Used only on error paths, to tell a number that is well-formed but does not fit a
// double (1e400: a rule violation of the event) from a malformed token (a syntax error).
bool IsJsonNumber(std::string_view s, bool* integer) {
  size_t i = 0;
  const size_t n = s.size();
  if (i < n && s[i] == '-') ++i;
  if (i >= n) return false;
  if (s[i] == '0') {
    ++i;
  } else if (IsDigit(s[i])) {
    while (i < n && IsDigit(s[i])) ++i;
  } else {
    return false;
  }
  *integer = true;
  if (i < n && s[i] == '.') {
    *integer = false;
    ++i;
    if (i >= n || !IsDigit(s[i])) return false;
    while (i < n && IsDigit(s[i])) ++i;
  }
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    *integer = false;
    ++i;
    if (i < n && (s[i] == '+' || s[i] == '-')) ++i;
    if (i >= n || !IsDigit(s[i])) return false;
    while (i < n && IsDigit(s[i])) ++i;
  }
  return i == n;
}

// An integer token (grammar already checked) → int64 or uint64; false when it fits
// neither.
bool ParseIntegerToken(std::string_view s, bool* negative, uint64_t* magnitude) {
  *negative = !s.empty() && s[0] == '-';
  if (*negative) s.remove_prefix(1);
  uint64_t v = 0;
  for (char c : s) {
    const uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (std::numeric_limits<uint64_t>::max() - d) / 10) return false;
    v = v * 10 + d;
  }
  if (*negative && v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) + 1) {
    return false;
  }
  *magnitude = v;
  return true;
}

int64_t SaturatingAdd(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) {
    return b > 0 ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int64_t>::min();
  }
  return r;
}

// Keys of the objects being walked, for duplicate detection. Objects nest, so keys are
// kept as a stack: an object's keys are those added since its Mark(). The views point
// into the simdjson parser's string buffer, valid until the next document.
class KeyStack {
 public:
  size_t Mark() const { return keys_.size(); }
  void Add(std::string_view key) { keys_.push_back(key); }
  void Clear() { keys_.clear(); }

  // Finds a key added more than once since `mark`, then forgets the keys since `mark`.
  // O(n²) for small objects (the common case: no allocation, no hashing), O(n log n)
  // above that so a hostile object with 100k keys costs no more than parsing it.
  std::optional<std::string_view> PopDuplicate(size_t mark) {
    std::optional<std::string_view> dup;
    const size_t n = keys_.size() - mark;
    if (n <= 16) {
      for (size_t i = mark; i < keys_.size() && !dup; ++i) {
        for (size_t j = i + 1; j < keys_.size(); ++j) {
          if (keys_[i] == keys_[j]) {
            dup = keys_[i];
            break;
          }
        }
      }
    } else {
      sorted_.assign(keys_.begin() + static_cast<ptrdiff_t>(mark), keys_.end());
      std::sort(sorted_.begin(), sorted_.end());
      auto it = std::adjacent_find(sorted_.begin(), sorted_.end());
      if (it != sorted_.end()) dup = *it;
    }
    keys_.resize(mark);
    return dup;
  }

 private:
  std::vector<std::string_view> keys_;
  std::vector<std::string_view> sorted_;
};

// Canonical JSON text of `meta`: byte for byte what JsonWriter writes for the same calls
// (a test holds them together), minus its per-character appends, which dominate the cost
// of small objects: a string that needs no escaping (the common case) is copied whole,
// the others go through JsonWriter::AppendEscaped.
class MetaEncoder {
 public:
  explicit MetaEncoder(std::string* out) : out_(out) {
    out_->clear();
    out_->push_back('{');
  }
  void Key(std::string_view key) {
    if (out_->size() > 1) out_->push_back(',');
    AppendString(key);
    out_->push_back(':');
  }
  void String(std::string_view s) { AppendString(s); }
  void Int(int64_t v) { fmt::format_to(std::back_inserter(*out_), "{}", v); }
  void Uint(uint64_t v) { fmt::format_to(std::back_inserter(*out_), "{}", v); }
  void Double(double v) {  // REQUIRES: finite
    if (v == 0) v = 0;     // no "-0", as JsonWriter
    fmt::format_to(std::back_inserter(*out_), "{}", v);
  }
  void Bool(bool v) { out_->append(v ? "true" : "false"); }
  void End() { out_->push_back('}'); }

 private:
  void AppendString(std::string_view s) {
    for (char c : s) {
      if (static_cast<uint8_t>(c) < 0x20 || c == '"' || c == '\\') {
        JsonWriter::AppendEscaped(out_, s);
        return;
      }
    }
    out_->push_back('"');
    out_->append(s);
    out_->push_back('"');
  }
  std::string* out_;
};

// The event being built (a slot of the caller's ParsedBody::events, see
// TelemetryParser::Impl::BeginEvent), and the first (by precedence) reason to reject it.
struct PendingEvent {
  model::Event* event = nullptr;
  Reject reject = Reject::kNone;
  std::string message;

  void Fail(Reject r, std::string msg) {
    if (reject == Reject::kNone || r < reject) {
      reject = r;
      message = std::move(msg);
    }
  }
};

}  // namespace

bool FormatFromContentType(std::string_view content_type, BodyFormat* out) {
  auto trim = [](std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
  };
  auto iequals = [](std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
      char x = a[i] >= 'A' && a[i] <= 'Z' ? static_cast<char>(a[i] - 'A' + 'a') : a[i];
      if (x != b[i]) return false;
    }
    return true;
  };
  size_t semi = content_type.find(';');
  std::string_view media = trim(content_type.substr(0, semi));
  BodyFormat format;
  if (iequals(media, "application/json")) {
    format = BodyFormat::kJson;
  } else if (iequals(media, "application/x-ndjson") || iequals(media, "application/ndjson")) {
    format = BodyFormat::kNdjson;
  } else {
    return false;
  }
  // Parameters: `charset` must be UTF-8 when given; others are ignored.
  while (semi != std::string_view::npos) {
    std::string_view rest = content_type.substr(semi + 1);
    size_t next = rest.find(';');
    std::string_view param = trim(rest.substr(0, next));
    semi = next == std::string_view::npos ? next : semi + 1 + next;
    size_t eq = param.find('=');
    if (eq == std::string_view::npos) continue;
    if (!iequals(trim(param.substr(0, eq)), "charset")) continue;
    std::string_view value = trim(param.substr(eq + 1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
      value = value.substr(1, value.size() - 2);
    }
    if (!iequals(value, "utf-8") && !iequals(value, "utf8")) return false;
  }
  *out = format;
  return true;
}

class TelemetryParser::Impl {
 public:
  explicit Impl(const IngestLimits& limits) : limits_(limits) {}

  Status Parse(std::string_view body, BodyFormat format, int64_t now_ns,
               std::string_view topic_device_id, ParsedBody* out) {
    now_ns_ = now_ns;
    latest_ns_ = SaturatingAdd(now_ns, limits_.max_future_skew_ns);
    earliest_ns_ = SaturatingAdd(now_ns, -limits_.max_event_age_ns);
    topic_device_id_ = topic_device_id;
    bounds_ = ScanBounds{earliest_ns_, latest_ns_, topic_device_id};
    out_ = out;
    // RFC 8259 §8.1: senders must not add a byte order mark, parsers may ignore one.
    // Some Windows tools add it; ignoring it is harmless.
    if (body.starts_with("\xEF\xBB\xBF")) body.remove_prefix(3);
    CopyToPaddedBuffer(body);
    accepted_ = 0;
    Status st = format == BodyFormat::kJson ? ParseJson(body.size()) : ParseNdjson(body.size());
    out_->events.resize(accepted_);
    pending_.event = nullptr;
    out_ = nullptr;
    return st;
  }

 private:
  // simdjson reads up to SIMDJSON_PADDING bytes past the end of its input; the body is
  // copied once into a buffer owned here, which only grows.
  void CopyToPaddedBuffer(std::string_view body) {
    const size_t need = body.size() + simdjson::SIMDJSON_PADDING;
    if (need > buffer_capacity_) {
      buffer_capacity_ = std::max(need, buffer_capacity_ * 2);
      buffer_ = std::make_unique<char[]>(buffer_capacity_);
    }
    if (!body.empty()) std::memcpy(buffer_.get(), body.data(), body.size());
    std::memset(buffer_.get() + body.size(), ' ', simdjson::SIMDJSON_PADDING);
  }

  static Status JsonError(std::string_view what) {
    return Status::InvalidArgument(fmt::format("{}: {}", kInvalidJson, what));
  }
  // simdjson's messages, with the one that misleads replaced: a root object or array whose
  // last token is not its closing bracket is reported as "ended early" even when the
  // actual problem is content after it.
  static std::string_view ErrorMessage(error_code e) {
    if (e == simdjson::INCOMPLETE_ARRAY_OR_OBJECT) {
      return "the root object or array is not closed, or is followed by trailing content";
    }
    return simdjson::error_message(e);
  }
  static Status JsonError(error_code e, std::optional<size_t> index) {
    if (index) {
      return Status::InvalidArgument(
          fmt::format("{}: {} (in event {})", kInvalidJson, ErrorMessage(e), *index));
    }
    return Status::InvalidArgument(fmt::format("{}: {}", kInvalidJson, ErrorMessage(e)));
  }
  Status TooManyEvents() const {
    return Status::ResourceExhausted(fmt::format("{}: the body holds more than {} events",
                                                 kTooManyEvents, limits_.max_events_per_request));
  }

  // True when the iterator has consumed the whole document (no trailing content).
  static bool AtEnd(od::document& doc) {
    return doc.current_location().error() == simdjson::OUT_OF_BOUNDS;
  }

  // The whole body through the common-shape scanner: true when every event of it was in
  // that shape (all accepted); false, with nothing recorded, otherwise.
  bool ScanJson(size_t size) {
    const char* const end = buffer_.get() + size;
    const char* p = SkipJsonWhitespace(buffer_.get(), end);
    if (p == end) return false;
    if (*p == '{') {
      BeginEvent();
      p = ScanCommonEvent(p, end, bounds_, pending_.event);
      if (p == nullptr || SkipJsonWhitespace(p, end) != end) return false;
      Commit(0);
      out_->total = 1;
      return true;
    }
    if (*p != '[') return false;
    ++p;
    size_t index = 0;
    auto abandon = [&] {
      accepted_ = 0;
      out_->event_indices.clear();
      return false;
    };
    for (;;) {
      if (index >= limits_.max_events_per_request) return abandon();
      BeginEvent();
      p = ScanCommonEvent(p, end, bounds_, pending_.event);
      if (p == nullptr) return abandon();
      Commit(index++);
      p = SkipJsonWhitespace(p, end);
      if (p == end) return abandon();
      if (*p == ',') {
        ++p;
        continue;
      }
      if (*p != ']') return abandon();
      ++p;
      break;
    }
    if (SkipJsonWhitespace(p, end) != end) return abandon();
    out_->total = index;
    return true;
  }

  Status ParseJson(size_t size) {
    if (scan_common_shape_ && ScanJson(size)) return Status::Ok();
    od::document doc;
    if (error_code e = parser_.iterate(buffer_.get(), size, buffer_capacity_).get(doc)) {
      if (e == simdjson::EMPTY) return JsonError("empty body");
      return JsonError(e, std::nullopt);
    }
    od::json_type type;
    if (error_code e = doc.type().get(type)) return JsonError(e, std::nullopt);
    if (type == od::json_type::object) {
      od::object object;
      if (error_code e = doc.get_object().get(object)) return JsonError(e, std::nullopt);
      out_->total = 1;
      if (error_code e = ParseEvent(object)) return JsonError(e, std::nullopt);
      // Several objects one after the other: say how to send them (found by a black-box
      // test: the message did not).
      if (!AtEnd(doc)) {
        return JsonError(
            "trailing content after the JSON value (several events: send a JSON array, or "
            "one object per line with Content-Type: application/x-ndjson)");
      }
      Commit(0);
      return Status::Ok();
    }
    if (type != od::json_type::array) return JsonError("the body must be a JSON object or array");
    od::array array;
    if (error_code e = doc.get_array().get(array)) return JsonError(e, std::nullopt);
    size_t index = 0;
    for (auto element_result : array) {
      if (index >= limits_.max_events_per_request) return TooManyEvents();
      od::value element;
      if (error_code e = std::move(element_result).get(element)) return JsonError(e, index);
      od::json_type element_type;
      if (error_code e = element.type().get(element_type)) return JsonError(e, index);
      if (element_type == od::json_type::object) {
        od::object object;
        if (error_code e = element.get_object().get(object)) return JsonError(e, index);
        if (error_code e = ParseEvent(object)) return JsonError(e, index);
      } else {
        BeginEvent();
        keys_.Clear();
        if (error_code e = Skim(element, 0)) return JsonError(e, index);
        pending_.Fail(Reject::kJson, "an event must be a JSON object");
      }
      Commit(index);
      ++index;
    }
    out_->total = index;
    if (index == 0) return JsonError("empty array");
    if (!AtEnd(doc)) return JsonError("trailing content after the JSON value");
    return Status::Ok();
  }

  Status ParseNdjson(size_t size) {
    const char* data = buffer_.get();
    size_t index = 0;
    size_t pos = 0;
    while (pos < size) {
      const char* nl = static_cast<const char*>(std::memchr(data + pos, '\n', size - pos));
      const size_t end = nl ? static_cast<size_t>(nl - data) : size;
      const size_t start = pos;
      pos = end + 1;
      size_t line_end = end;
      if (line_end > start && data[line_end - 1] == '\r') --line_end;
      bool blank = true;
      for (size_t i = start; i < line_end; ++i) {
        const char c = data[i];
        if (c != ' ' && c != '\t' && c != '\r') {
          blank = false;
          break;
        }
      }
      if (blank) continue;
      if (index >= limits_.max_events_per_request) return TooManyEvents();
      ParseNdjsonLine(data + start, line_end - start, buffer_capacity_ - start, index);
      ++index;
    }
    out_->total = index;
    if (index == 0) return JsonError("empty body");
    return Status::Ok();
  }

  // One NDJSON line: any failure, including a syntax error, rejects only this event.
  void ParseNdjsonLine(const char* line, size_t len, size_t capacity, size_t index) {
    if (scan_common_shape_) {
      BeginEvent();
      const char* end = line + len;
      const char* p = ScanCommonEvent(line, end, bounds_, pending_.event);
      if (p != nullptr && SkipJsonWhitespace(p, end) == end) {
        Commit(index);
        return;
      }
    }
    od::document doc;
    od::json_type type;
    od::object object;
    error_code e = parser_.iterate(line, len, capacity).get(doc);
    if (!e) e = doc.type().get(type);
    if (!e && type != od::json_type::object) {
      RejectNow(index, "each NDJSON line must hold one JSON object");
      return;
    }
    if (!e) e = doc.get_object().get(object);
    if (!e) e = ParseEvent(object);
    if (e) {
      RejectNow(index, ErrorMessage(e));
      return;
    }
    if (!AtEnd(doc)) {
      RejectNow(index, "trailing content after the JSON object");
      return;
    }
    Commit(index);
  }

  void RejectNow(size_t index, std::string_view message) {
    out_->errors.push_back(EventError{index, std::string(kInvalidJson), std::string(message)});
  }

  // Accepted events are built in place in out_->events: slots [0, accepted_) hold the
  // accepted ones, slot accepted_ the event being parsed. Slots left over from the
  // previous call into the same ParsedBody are reused with their strings' and vectors'
  // capacity, so a stream of bodies parsed into one ParsedBody allocates nothing per event
  // once warm. Parse() trims out_->events to accepted_ at the end.
  void BeginEvent() {
    pending_.reject = Reject::kNone;
    pending_.message.clear();
    if (accepted_ == out_->events.size()) out_->events.emplace_back();
    model::Event& e = out_->events[accepted_];
    e.device_id.clear();
    e.timestamp_ns = 0;
    e.received_at_ns = 0;
    e.meta_json.clear();
    e.event_id.clear();
    // e.metrics keeps its elements: ParseMetrics overwrites and trims them, and an event
    // without a metrics field is cleared in ParseEvent (and rejected anyway).
    pending_.event = &e;
  }

  void Commit(size_t index) {
    if (pending_.reject == Reject::kNone) {
      pending_.event->received_at_ns = now_ns_;
      ++accepted_;
      out_->event_indices.push_back(index);
    } else {
      out_->errors.push_back(
          EventError{index, std::string(RejectCode(pending_.reject)), std::move(pending_.message)});
    }
  }

  // Field presence bits of an event object.
  static constexpr uint32_t kDeviceIdField = 1;
  static constexpr uint32_t kTimestampField = 2;
  static constexpr uint32_t kMetricsField = 4;
  static constexpr uint32_t kMetaField = 8;
  static constexpr uint32_t kEventIdField = 16;
  static constexpr uint32_t kSchemaField = 32;

  static uint32_t FieldOf(std::string_view key) {
    switch (key.size()) {
      case 4:
        return key == "meta" ? kMetaField : 0;
      case 6:
        return key == "schema" ? kSchemaField : 0;
      case 7:
        return key == "metrics" ? kMetricsField : 0;
      case 8:
        return key == "event_id" ? kEventIdField : 0;
      case 9:
        return key == "device_id" ? kDeviceIdField : key == "timestamp" ? kTimestampField : 0;
      default:
        return 0;
    }
  }

  // Walks one event object to its end, filling pending_. Returns a simdjson error only
  // for a syntax error (the document is then unusable); rule violations are recorded in
  // pending_ and the walk continues, so the whole object is always validated.
  error_code ParseEvent(od::object& object) {
    BeginEvent();
    keys_.Clear();
    uint32_t seen = 0;
    bool has_timestamp = false;
    const size_t mark = keys_.Mark();
    for (auto field_result : object) {
      od::field field;
      INGEST_TRY(std::move(field_result).get(field));
      std::string_view key;
      INGEST_TRY(field.unescaped_key().get(key));
      od::value value = field.value();
      const uint32_t f = FieldOf(key);
      if (f == 0) {
        keys_.Add(key);  // unknown: ignored, but validated (syntax, duplicate keys)
        INGEST_TRY(Skim(value, 1));
        continue;
      }
      if (seen & f) {
        pending_.Fail(Reject::kJson, fmt::format("duplicate key {}", Quote(key)));
        INGEST_TRY(Skim(value, 1));
        continue;
      }
      seen |= f;
      switch (f) {
        case kDeviceIdField:
          INGEST_TRY(ParseDeviceId(value));
          break;
        case kTimestampField:
          INGEST_TRY(ParseTimestamp(value, &has_timestamp));
          break;
        case kMetricsField:
          INGEST_TRY(ParseMetrics(value));
          break;
        case kMetaField:
          INGEST_TRY(ParseMeta(value));
          break;
        case kEventIdField:
          INGEST_TRY(ParseEventId(value));
          break;
        case kSchemaField:
          INGEST_TRY(ParseSchema(value));
          break;
      }
    }
    if (auto dup = keys_.PopDuplicate(mark)) {
      pending_.Fail(Reject::kJson, fmt::format("duplicate key {}", Quote(*dup)));
    }
    model::Event& event = *pending_.event;
    if (!(seen & kDeviceIdField)) {
      if (topic_device_id_.empty()) {
        pending_.Fail(Reject::kDeviceId, "device_id: missing");
      } else if (!ValidDeviceId(topic_device_id_)) {
        pending_.Fail(Reject::kDeviceId,
                      fmt::format("device_id: the topic's device id {} is not valid",
                                  Quote(topic_device_id_)));
      } else {
        event.device_id.assign(topic_device_id_);
      }
    }
    if (!(seen & kTimestampField)) {
      pending_.Fail(Reject::kTimestamp, "timestamp: missing");
    } else if (has_timestamp) {
      if (event.timestamp_ns > latest_ns_) {
        pending_.Fail(
            Reject::kTimestampRange,
            fmt::format("timestamp: {} is after now + max_future_skew ({})",
                        FormatRfc3339Millis(event.timestamp_ns), FormatRfc3339Millis(latest_ns_)));
      } else if (event.timestamp_ns < earliest_ns_) {
        pending_.Fail(Reject::kTimestampRange,
                      fmt::format("timestamp: {} is before now - max_event_age ({})",
                                  FormatRfc3339Millis(event.timestamp_ns),
                                  FormatRfc3339Millis(earliest_ns_)));
      }
    }
    if (!(seen & kMetricsField)) {
      event.metrics.clear();
      pending_.Fail(Reject::kMetrics, "metrics: missing");
    }
    return simdjson::SUCCESS;
  }

  // Validates and consumes a value whose content we do not use: every nested string,
  // number and literal is checked, and duplicate keys in nested objects reject the event.
  error_code Skim(od::value value, int depth) {
    od::json_type type;
    INGEST_TRY(value.type().get(type));
    switch (type) {
      case od::json_type::object: {
        if (depth >= kMaxNesting) {
          pending_.Fail(Reject::kJson, fmt::format("nested deeper than {} levels", kMaxNesting));
          return simdjson::SUCCESS;  // left unconsumed: the iterator skips it
        }
        od::object object;
        INGEST_TRY(value.get_object().get(object));
        const size_t mark = keys_.Mark();
        for (auto field_result : object) {
          od::field field;
          INGEST_TRY(std::move(field_result).get(field));
          std::string_view key;
          INGEST_TRY(field.unescaped_key().get(key));
          keys_.Add(key);
          INGEST_TRY(Skim(field.value(), depth + 1));
        }
        if (auto dup = keys_.PopDuplicate(mark)) {
          pending_.Fail(Reject::kJson, fmt::format("duplicate key {}", Quote(*dup)));
        }
        return simdjson::SUCCESS;
      }
      case od::json_type::array: {
        if (depth >= kMaxNesting) {
          pending_.Fail(Reject::kJson, fmt::format("nested deeper than {} levels", kMaxNesting));
          return simdjson::SUCCESS;
        }
        od::array array;
        INGEST_TRY(value.get_array().get(array));
        for (auto element_result : array) {
          od::value element;
          INGEST_TRY(std::move(element_result).get(element));
          INGEST_TRY(Skim(element, depth + 1));
        }
        return simdjson::SUCCESS;
      }
      case od::json_type::number: {
        double d;
        bool overflow;
        return ReadDouble(value, &d, &overflow);  // out of range is fine where ignored
      }
      case od::json_type::string: {
        std::string_view s;
        return value.get_string().get(s);
      }
      case od::json_type::boolean: {
        bool b;
        return value.get_bool().get(b) ? kSyntaxError : simdjson::SUCCESS;
      }
      case od::json_type::null: {
        bool is_null = false;
        if (value.is_null().get(is_null) || !is_null) return kSyntaxError;
        return simdjson::SUCCESS;
      }
    }
    return kSyntaxError;
  }

  // A JSON number as a double. `*overflow` is set (and SUCCESS returned) for a
  // well-formed number that does not fit a double, such as 1e400; a malformed token is a
  // syntax error.
  static error_code ReadDouble(od::value& value, double* out, bool* overflow) {
    *overflow = false;
    error_code e = value.get_double().get(*out);
    if (!e) return e;
    bool integer;
    if (!IsJsonNumber(TrimJsonWhitespace(value.raw_json_token()), &integer)) return kSyntaxError;
    *overflow = true;
    return simdjson::SUCCESS;
  }

  // Consumes a value of the wrong type (validating it) and records `reject`.
  error_code WrongType(od::value& value, Reject reject, std::string message) {
    INGEST_TRY(Skim(value, 1));
    pending_.Fail(reject, std::move(message));
    return simdjson::SUCCESS;
  }

  error_code ParseDeviceId(od::value& value) {
    od::json_type type;
    INGEST_TRY(value.type().get(type));
    if (type != od::json_type::string) {
      return WrongType(value, Reject::kDeviceId, "device_id: must be a string");
    }
    std::string_view id;
    INGEST_TRY(value.get_string().get(id));
    if (!ValidDeviceId(id)) {
      if (id.empty() || id.size() > kMaxDeviceIdLength) {
        pending_.Fail(Reject::kDeviceId, fmt::format("device_id: must be 1–{} characters, got {}",
                                                     kMaxDeviceIdLength, id.size()));
      } else if (IsDotSegment(id)) {
        pending_.Fail(Reject::kDeviceId,
                      fmt::format("device_id: {} is not allowed (\".\" and \"..\" cannot be "
                                  "reached by URL)",
                                  Quote(id)));
      } else {
        pending_.Fail(
            Reject::kDeviceId,
            fmt::format("device_id: {} has a character outside [A-Za-z0-9._:-]", Quote(id)));
      }
      return simdjson::SUCCESS;
    }
    if (!topic_device_id_.empty() && id != topic_device_id_) {
      pending_.Fail(Reject::kDeviceId,
                    fmt::format("device_id: {} does not match the topic's device {}", Quote(id),
                                Quote(topic_device_id_)));
      return simdjson::SUCCESS;
    }
    pending_.event->device_id.append(id);  // cleared in BeginEvent
    return simdjson::SUCCESS;
  }

  error_code ParseTimestamp(od::value& value, bool* ok) {
    *ok = false;
    od::json_type type;
    INGEST_TRY(value.type().get(type));
    if (type == od::json_type::string) {
      std::string_view s;
      INGEST_TRY(value.get_string().get(s));
      if (!ParseRfc3339(s, &pending_.event->timestamp_ns)) {
        int64_t secs, frac;
        if (ParseRfc3339Seconds(s, &secs, &frac)) {  // well-formed, outside 1677–2262
          pending_.Fail(Reject::kTimestampRange,
                        fmt::format("timestamp: {} is outside the times Joule can store "
                                    "(1677-09-21 to 2262-04-11)",
                                    Quote(s)));
          return simdjson::SUCCESS;
        }
        pending_.Fail(Reject::kTimestamp,
                      fmt::format("timestamp: {} is not an RFC 3339 date-time with Z or ±hh:mm "
                                  "and at most 9 fraction digits",
                                  Quote(s)));
        return simdjson::SUCCESS;
      }
      *ok = true;
      return simdjson::SUCCESS;
    }
    if (type == od::json_type::number) {
      int64_t millis;
      if (value.get_int64().get(millis)) {
        // Not an int64: a fraction, an exponent, too large, or malformed.
        bool integer;
        if (!IsJsonNumber(TrimJsonWhitespace(value.raw_json_token()), &integer)) {
          return kSyntaxError;
        }
        double ignored;
        bool overflow;
        INGEST_TRY(ReadDouble(value, &ignored, &overflow));  // consume
        if (integer) {
          pending_.Fail(Reject::kTimestampRange, "timestamp: epoch milliseconds out of range");
        } else {
          pending_.Fail(Reject::kTimestamp,
                        "timestamp: a number must be an integer of epoch milliseconds");
        }
        return simdjson::SUCCESS;
      }
      if (millis > kMaxEpochMillis || millis < -kMaxEpochMillis) {
        pending_.Fail(Reject::kTimestampRange, "timestamp: epoch milliseconds out of range");
        return simdjson::SUCCESS;
      }
      pending_.event->timestamp_ns = millis * kNanosPerMilli;
      *ok = true;
      return simdjson::SUCCESS;
    }
    return WrongType(value, Reject::kTimestamp,
                     "timestamp: must be an RFC 3339 string or an integer of epoch milliseconds");
  }

  error_code ParseMetrics(od::value& value) {
    od::json_type type;
    INGEST_TRY(value.type().get(type));
    std::vector<model::MetricSample>& metrics = pending_.event->metrics;
    if (type != od::json_type::object) {
      metrics.clear();
      return WrongType(value, Reject::kMetrics, "metrics: must be an object");
    }
    od::object object;
    INGEST_TRY(value.get_object().get(object));
    // The slot's previous samples are overwritten in place (names are mostly the same
    // from one event to the next) and the rest trimmed at the end.
    size_t stored = 0;
    auto store = [&](std::string_view name, double v) {
      if (stored < metrics.size()) {
        model::MetricSample& m = metrics[stored];
        if (m.name != name) {
          m.name.clear();
          m.name.append(name.data(), name.size());
        }
        m.value = v;
      } else {
        metrics.push_back(model::MetricSample{std::string(name), v});
      }
      ++stored;
    };
    size_t count = 0;
    const size_t mark = keys_.Mark();
    for (auto field_result : object) {
      od::field field;
      INGEST_TRY(std::move(field_result).get(field));
      std::string_view name;
      INGEST_TRY(field.unescaped_key().get(name));
      keys_.Add(name);
      ++count;
      od::value metric = field.value();
      if (!ValidMetricName(name)) {
        pending_.Fail(
            Reject::kMetrics,
            fmt::format("metrics: name {} does not match [a-z][a-z0-9_]{{0,63}}", Quote(name)));
      }
      double v;
      if (metric.get_double().get(v) == simdjson::SUCCESS) {  // the hot path
        if (!(std::fabs(v) <= kMaxMetricMagnitude)) [[unlikely]] {
          pending_.Fail(Reject::kMetrics,
                        fmt::format("metrics.{}: |value| must be at most {:g}, got {}",
                                    name.substr(0, 64), kMaxMetricMagnitude, v));
          continue;
        }
        if (count <= kMaxMetricsPerEvent) store(name, v);
        continue;
      }
      od::json_type metric_type;
      INGEST_TRY(metric.type().get(metric_type));
      if (metric_type != od::json_type::number) {
        INGEST_TRY(WrongType(metric, Reject::kMetrics,
                             fmt::format("metrics.{}: value must be a finite number, got {}",
                                         name.substr(0, 64), TypeName(metric_type))));
        continue;
      }
      bool overflow;
      INGEST_TRY(ReadDouble(metric, &v, &overflow));  // a syntax error, or out of range
      if (overflow) {
        pending_.Fail(
            Reject::kMetrics,
            fmt::format("metrics.{}: value is out of the range of a double", name.substr(0, 64)));
        continue;
      }
      if (count <= kMaxMetricsPerEvent) store(name, v);
    }
    metrics.resize(stored);
    if (auto dup = keys_.PopDuplicate(mark)) {
      pending_.Fail(Reject::kJson, fmt::format("metrics: duplicate key {}", Quote(*dup)));
    }
    if (count == 0) {
      pending_.Fail(Reject::kMetrics, "metrics: must have at least one entry");
    } else if (count > kMaxMetricsPerEvent) {
      pending_.Fail(Reject::kMetrics, fmt::format("metrics: {} entries, at most {} allowed", count,
                                                  kMaxMetricsPerEvent));
    }
    return simdjson::SUCCESS;
  }

  error_code ParseMeta(od::value& value) {
    od::json_type type;
    INGEST_TRY(value.type().get(type));
    if (type == od::json_type::null) return Skim(value, 1);  // null = absent
    if (type != od::json_type::object) {
      return WrongType(value, Reject::kMeta, "meta: must be an object");
    }
    od::object object;
    INGEST_TRY(value.get_object().get(object));
    MetaEncoder writer(&meta_scratch_);
    size_t count = 0;
    const size_t mark = keys_.Mark();
    for (auto field_result : object) {
      od::field field;
      INGEST_TRY(std::move(field_result).get(field));
      std::string_view key;
      INGEST_TRY(field.unescaped_key().get(key));
      keys_.Add(key);
      ++count;
      od::value entry = field.value();
      od::json_type entry_type;
      INGEST_TRY(entry.type().get(entry_type));
      switch (entry_type) {
        case od::json_type::string: {
          std::string_view s;
          INGEST_TRY(entry.get_string().get(s));
          writer.Key(key);
          writer.String(s);
          break;
        }
        case od::json_type::boolean: {
          bool b;
          if (entry.get_bool().get(b)) return kSyntaxError;
          writer.Key(key);
          writer.Bool(b);
          break;
        }
        case od::json_type::number: {
          std::string_view token = TrimJsonWhitespace(entry.raw_json_token());
          bool integer = false;
          bool negative;
          uint64_t magnitude;
          if (IsJsonNumber(token, &integer) && integer &&
              ParseIntegerToken(token, &negative, &magnitude)) {
            writer.Key(key);
            if (negative) {
              writer.Int(static_cast<int64_t>(0 - magnitude));
            } else {
              writer.Uint(magnitude);
            }
            break;
          }
          double d;
          bool overflow;
          INGEST_TRY(ReadDouble(entry, &d, &overflow));
          if (overflow) {
            pending_.Fail(Reject::kMeta, fmt::format("meta.{}: number is out of the range of a "
                                                     "double",
                                                     Quote(key)));
            break;
          }
          writer.Key(key);
          writer.Double(d);
          break;
        }
        case od::json_type::null:
        case od::json_type::object:
        case od::json_type::array:
          INGEST_TRY(
              WrongType(entry, Reject::kMeta,
                        fmt::format("meta.{}: value must be a string, number or bool, got {}",
                                    Quote(key), TypeName(entry_type))));
          break;
      }
    }
    writer.End();
    if (auto dup = keys_.PopDuplicate(mark)) {
      pending_.Fail(Reject::kJson, fmt::format("meta: duplicate key {}", Quote(*dup)));
    }
    if (count > kMaxMetaEntries) {
      pending_.Fail(Reject::kMeta,
                    fmt::format("meta: {} entries, at most {} allowed", count, kMaxMetaEntries));
    } else if (meta_scratch_.size() > kMaxMetaEncodedBytes) {
      pending_.Fail(Reject::kMeta, fmt::format("meta: {} bytes encoded, at most {} allowed",
                                               meta_scratch_.size(), kMaxMetaEncodedBytes));
    } else {
      pending_.event->meta_json.append(meta_scratch_);  // cleared in BeginEvent; scratch reused
    }
    return simdjson::SUCCESS;
  }

  error_code ParseEventId(od::value& value) {
    od::json_type type;
    INGEST_TRY(value.type().get(type));
    if (type == od::json_type::null) return Skim(value, 1);  // null = absent
    if (type != od::json_type::string) {
      return WrongType(value, Reject::kEventId, "event_id: must be a string");
    }
    std::string_view id;
    INGEST_TRY(value.get_string().get(id));
    const size_t length = Utf8Length(id);
    if (length == 0 || length > kMaxEventIdLength) {
      pending_.Fail(Reject::kEventId,
                    fmt::format("event_id: must be 1–{} characters, got {} (omit it when there "
                                "is none)",
                                kMaxEventIdLength, length));
      return simdjson::SUCCESS;
    }
    pending_.event->event_id.append(id);  // cleared in BeginEvent
    return simdjson::SUCCESS;
  }

  // `schema` is reserved for a payload version: a string, number or null is accepted and
  // ignored; anything else is rejected so the field keeps its meaning.
  error_code ParseSchema(od::value& value) {
    od::json_type type;
    INGEST_TRY(value.type().get(type));
    if (type == od::json_type::string || type == od::json_type::number ||
        type == od::json_type::null) {
      return Skim(value, 1);
    }
    return WrongType(value, Reject::kJson, "schema: must be a string or number");
  }

  static std::string_view TypeName(od::json_type type) {
    switch (type) {
      case od::json_type::array:
        return "an array";
      case od::json_type::object:
        return "an object";
      case od::json_type::number:
        return "a number";
      case od::json_type::string:
        return "a string";
      case od::json_type::boolean:
        return "a bool";
      case od::json_type::null:
        return "null";
    }
    return "?";
  }

  IngestLimits limits_;
  od::parser parser_;
  std::unique_ptr<char[]> buffer_;
  size_t buffer_capacity_ = 0;
  KeyStack keys_;
  PendingEvent pending_;
  std::string meta_scratch_;

 public:
  void set_scan_common_shape(bool enabled) { scan_common_shape_ = enabled; }

 private:
  bool scan_common_shape_ = true;
  // Per call.
  int64_t now_ns_ = 0;
  int64_t latest_ns_ = 0;
  int64_t earliest_ns_ = 0;
  std::string_view topic_device_id_;
  ScanBounds bounds_;
  ParsedBody* out_ = nullptr;
  size_t accepted_ = 0;  // accepted events in out_->events (see BeginEvent)
};

TelemetryParser::TelemetryParser(IngestLimits limits)
    : limits_(limits), impl_(std::make_unique<Impl>(limits)) {}

TelemetryParser::~TelemetryParser() = default;

void TelemetryParser::SetCommonShapeScan(bool enabled) { impl_->set_scan_common_shape(enabled); }

Status TelemetryParser::ParseInto(std::string_view body, BodyFormat format, int64_t now_ns,
                                  std::string_view topic_device_id, ParsedBody* out) {
  // out->events is not cleared: its events are reused (Impl::BeginEvent).
  out->event_indices.clear();
  out->errors.clear();
  out->total = 0;
  if (body.size() > limits_.max_body_bytes) {
    out->events.clear();
    return Status::ResourceExhausted(fmt::format("{}: the body is {} bytes, at most {} allowed",
                                                 kPayloadTooLarge, body.size(),
                                                 limits_.max_body_bytes));
  }
  Status st = impl_->Parse(body, format, now_ns, topic_device_id, out);
  if (!st.ok()) {
    out->events.clear();
    out->event_indices.clear();
    out->errors.clear();
    out->total = 0;
  }
  return st;
}

Result<ParsedBody> TelemetryParser::Parse(std::string_view body, BodyFormat format, int64_t now_ns,
                                          std::string_view topic_device_id) {
  ParsedBody out;
  JOULE_RETURN_IF_ERROR(ParseInto(body, format, now_ns, topic_device_id, &out));
  return out;
}

}  // namespace joule::ingest

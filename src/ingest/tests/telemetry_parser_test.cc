#include "ingest/telemetry_parser.h"

#include <gtest/gtest.h>

#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/json_writer.h"
#include "common/time_format.h"
#include "ingest/error_codes.h"

namespace joule::ingest {
namespace {

int64_t Time(std::string_view rfc3339) {
  int64_t ns = 0;
  EXPECT_TRUE(ParseRfc3339(rfc3339, &ns)) << rfc3339;
  return ns;
}

const int64_t kNow = Time("2026-11-28T18:00:00Z");

// Fields of one event as raw JSON text; nullopt = omitted.
struct Fields {
  std::optional<std::string> device_id = R"("plug-42")";
  std::optional<std::string> timestamp = R"("2026-11-28T17:59:30.250Z")";
  std::optional<std::string> metrics = R"({"power_w":12.5})";
  std::optional<std::string> meta;
  std::optional<std::string> event_id;
  std::string extra;  // raw `"k":v` pairs appended at the end
};

std::string Json(const Fields& f) {
  std::string s = "{";
  auto add = [&](std::string_view key, const std::optional<std::string>& v) {
    if (!v) return;
    if (s.size() > 1) s += ',';
    s += '"';
    s += key;
    s += "\":";
    s += *v;
  };
  add("device_id", f.device_id);
  add("timestamp", f.timestamp);
  add("metrics", f.metrics);
  add("meta", f.meta);
  add("event_id", f.event_id);
  if (!f.extra.empty()) {
    if (s.size() > 1) s += ',';
    s += f.extra;
  }
  s += '}';
  return s;
}

std::string Str(std::string_view s) { return "\"" + std::string(s) + "\""; }

// {"m0":0,"m1":1,...} with n entries.
std::string MetricsObject(size_t n, std::string_view prefix = "m") {
  std::string s = "{";
  for (size_t i = 0; i < n; ++i) {
    if (i) s += ',';
    s += "\"" + std::string(prefix) + std::to_string(i) + "\":" + std::to_string(i);
  }
  return s + "}";
}

class TelemetryParserTest : public ::testing::Test {
 protected:
  ParsedBody ParseOk(std::string_view body, BodyFormat format = BodyFormat::kJson,
                     std::string_view topic = {}) {
    auto r = parser_.Parse(body, format, kNow, topic);
    EXPECT_TRUE(r.ok()) << r.status().ToString() << "\nbody: " << body.substr(0, 300);
    if (!r.ok()) return {};
    const ParsedBody& p = *r;
    EXPECT_EQ(p.events.size() + p.errors.size(), p.total);
    EXPECT_EQ(p.events.size(), p.event_indices.size());
    return std::move(r).value();
  }

  // The outcome of a body holding one event: "ok" or the error code.
  std::string Outcome(const std::string& body, std::string_view topic = {}) {
    ParsedBody p = ParseOk(body, BodyFormat::kJson, topic);
    if (p.total != 1) return "total=" + std::to_string(p.total);
    if (!p.events.empty()) return "ok";
    last_message_ = p.errors[0].message;
    EXPECT_EQ(p.errors[0].index, 0u);
    return p.errors[0].code;
  }
  std::string Outcome(const Fields& f, std::string_view topic = {}) {
    return Outcome(Json(f), topic);
  }

  model::Event Accepted(const std::string& body, std::string_view topic = {}) {
    ParsedBody p = ParseOk(body, BodyFormat::kJson, topic);
    EXPECT_EQ(p.events.size(), 1u) << (p.errors.empty() ? "" : p.errors[0].message);
    return p.events.empty() ? model::Event{} : p.events[0];
  }
  model::Event Accepted(const Fields& f) { return Accepted(Json(f)); }

  // The body-level failure of `body`.
  Status BodyError(std::string_view body, BodyFormat format = BodyFormat::kJson) {
    auto r = parser_.Parse(body, format, kNow);
    EXPECT_FALSE(r.ok()) << "body: " << body.substr(0, 300);
    return r.status();
  }
  static bool IsInvalidJson(const Status& st) {
    return st.code() == StatusCode::kInvalidArgument &&
           st.message().rfind("invalid_json: ", 0) == 0;
  }

  TelemetryParser parser_;
  std::string last_message_;
};

// ---------------------------------------------------------------------------------------
// A whole event

TEST_F(TelemetryParserTest, AcceptsTheContractExample) {
  const std::string body = R"({"device_id": "plug-42",
 "timestamp": "2026-11-28T19:00:05.250+01:00",
 "metrics": {"power_w": 12.3, "voltage_v": 230.1, "energy_wh": 10452.5},
 "meta": {"firmware": "1.0.3", "location": "kitchen"},
 "event_id": "optional, unique per device"})";
  model::Event e = Accepted(body);
  EXPECT_EQ(e.device_id, "plug-42");
  EXPECT_EQ(e.timestamp_ns, Time("2026-11-28T18:00:05.250Z"));
  EXPECT_EQ(e.received_at_ns, kNow);
  ASSERT_EQ(e.metrics.size(), 3u);
  EXPECT_EQ(e.metrics[0], (model::MetricSample{"power_w", 12.3}));
  EXPECT_EQ(e.metrics[1], (model::MetricSample{"voltage_v", 230.1}));
  EXPECT_EQ(e.metrics[2], (model::MetricSample{"energy_wh", 10452.5}));
  EXPECT_EQ(e.meta_json, R"({"firmware":"1.0.3","location":"kitchen"})");
  EXPECT_EQ(e.event_id, "optional, unique per device");
}

TEST_F(TelemetryParserTest, OptionalFieldsAbsent) {
  model::Event e = Accepted(Fields{});
  EXPECT_EQ(e.meta_json, "");
  EXPECT_EQ(e.event_id, "");
  EXPECT_EQ(e.timestamp_ns, Time("2026-11-28T17:59:30.250Z"));
}

TEST_F(TelemetryParserTest, FieldOrderDoesNotMatter) {
  model::Event e = Accepted(
      R"({"event_id":"e1","meta":{"a":1},"metrics":{"x":1},"timestamp":1795886370250,"device_id":"d"})");
  EXPECT_EQ(e.device_id, "d");
  EXPECT_EQ(e.event_id, "e1");
  EXPECT_EQ(e.timestamp_ns, 1795886370250 * kNanosPerMilli);
}

// ---------------------------------------------------------------------------------------
// device_id

TEST_F(TelemetryParserTest, DeviceIdLengthBoundaries) {
  Fields f;
  f.device_id = Str(std::string(128, 'a'));
  EXPECT_EQ(Outcome(f), "ok");
  f.device_id = Str(std::string(129, 'a'));
  EXPECT_EQ(Outcome(f), "invalid_device_id");
  f.device_id = Str("");
  EXPECT_EQ(Outcome(f), "invalid_device_id");
  f.device_id = Str("x");
  EXPECT_EQ(Outcome(f), "ok");
}

TEST_F(TelemetryParserTest, DeviceIdCharacters) {
  Fields f;
  f.device_id = Str("Az09._:-");
  EXPECT_EQ(Outcome(f), "ok");
  for (std::string bad : {"a b", "a/b", "caf\u00e9", "a\\nb", "a\\u0000b", "a#1"}) {
    f.device_id = Str(bad);
    EXPECT_EQ(Outcome(f), "invalid_device_id") << bad;
  }
  f.device_id = Str("plug\\u002d42");  // escapes are decoded first
  EXPECT_EQ(Accepted(f).device_id, "plug-42");
}

// Found by a black-box test: "." and ".." were accepted (202), but no URL reaches them.
TEST_F(TelemetryParserTest, DeviceIdDotSegmentsAreRefused) {
  Fields f;
  for (std::string bad : {".", "..", "\\u002e", "\\u002e."}) {
    f.device_id = Str(bad);
    EXPECT_EQ(Outcome(f), "invalid_device_id") << bad;
    EXPECT_NE(last_message_.find("cannot be reached by URL"), std::string::npos) << last_message_;
  }
  f.device_id = Str("...");
  EXPECT_EQ(Outcome(f), "ok");
}

TEST_F(TelemetryParserTest, DeviceIdMissingOrWrongType) {
  Fields f;
  f.device_id = std::nullopt;
  EXPECT_EQ(Outcome(f), "invalid_device_id");
  EXPECT_NE(last_message_.find("missing"), std::string::npos);
  for (std::string bad : {"42", "null", "true", "[\"a\"]", "{\"id\":\"a\"}"}) {
    f.device_id = bad;
    EXPECT_EQ(Outcome(f), "invalid_device_id") << bad;
  }
}

// ---------------------------------------------------------------------------------------
// timestamp

TEST_F(TelemetryParserTest, TimestampRfc3339Forms) {
  Fields f;
  f.timestamp = Str("2026-11-28T17:00:00Z");
  EXPECT_EQ(Accepted(f).timestamp_ns, Time("2026-11-28T17:00:00Z"));
  f.timestamp = Str("2026-11-28T18:30:00+01:00");
  EXPECT_EQ(Accepted(f).timestamp_ns, Time("2026-11-28T17:30:00Z"));
  f.timestamp = Str("2026-11-28T12:15:00-05:30");
  EXPECT_EQ(Accepted(f).timestamp_ns, Time("2026-11-28T17:45:00Z"));
  f.timestamp = Str("2026-11-28T17:00:00.123456789Z");  // 9 fraction digits
  EXPECT_EQ(Accepted(f).timestamp_ns, Time("2026-11-28T17:00:00Z") + 123456789);
  f.timestamp = Str("2026-11-28T17:00:00.5Z");
  EXPECT_EQ(Accepted(f).timestamp_ns, Time("2026-11-28T17:00:00Z") + 500000000);
}

TEST_F(TelemetryParserTest, TimestampInvalidStrings) {
  Fields f;
  for (std::string bad :
       {"2026-11-28T17:00:00.1234567891Z",  // 10 fraction digits
        "2026-11-28T17:00:00",              // no offset
        "2026-11-28T17:00:00+0100", "2026-11-28T17:00:00.Z", "2026-11-28", "2026-02-30T00:00:00Z",
        "2026-11-28T24:00:00Z", "1795886370250", "", "yesterday", "2026-11-28T17:00:00Z "}) {
    f.timestamp = Str(bad);
    EXPECT_EQ(Outcome(f), "invalid_timestamp") << bad;
  }
  // Well-formed, but outside 1677-09-21..2262-04-11 (int64 nanoseconds): a range error.
  for (std::string far : {"9999-12-31T23:59:59Z", "2262-04-12T00:00:00Z", "0001-01-01T00:00:00Z",
                          "1600-01-01T00:00:00.5+01:00"}) {
    f.timestamp = Str(far);
    EXPECT_EQ(Outcome(f), "timestamp_out_of_range") << far;
    EXPECT_NE(last_message_.find("2262"), std::string::npos) << last_message_;
  }
}

TEST_F(TelemetryParserTest, TimestampEpochMillis) {
  Fields f;
  const int64_t millis = (kNow - kNanosPerMinute) / kNanosPerMilli;
  f.timestamp = std::to_string(millis);
  EXPECT_EQ(Accepted(f).timestamp_ns, millis * kNanosPerMilli);
  for (std::string bad : {std::to_string(millis) + ".0", std::to_string(millis) + ".5",
                          std::string("1.7e12"), std::string("1e400")}) {
    f.timestamp = bad;
    EXPECT_EQ(Outcome(f), "invalid_timestamp") << bad;
  }
  // Integers, but past what int64 nanoseconds hold: well-formed, out of range.
  for (std::string far : {std::string("99999999999999999999"), std::string("9223372036854775807"),
                          std::string("-9223372036854")}) {
    f.timestamp = far;
    EXPECT_EQ(Outcome(f), "timestamp_out_of_range") << far;
  }
  f.timestamp = "-1";  // a valid instant, but long ago
  EXPECT_EQ(Outcome(f), "timestamp_out_of_range");
}

TEST_F(TelemetryParserTest, TimestampMissingOrWrongType) {
  Fields f;
  f.timestamp = std::nullopt;
  EXPECT_EQ(Outcome(f), "invalid_timestamp");
  for (std::string bad : {"null", "true", "[1]", "{\"ms\":1}"}) {
    f.timestamp = bad;
    EXPECT_EQ(Outcome(f), "invalid_timestamp") << bad;
  }
}

TEST_F(TelemetryParserTest, TimestampBounds) {
  Fields f;
  const int64_t latest_ms = (kNow + 5 * kNanosPerMinute) / kNanosPerMilli;
  const int64_t earliest_ms = (kNow - 7 * kNanosPerDay) / kNanosPerMilli;
  f.timestamp = std::to_string(latest_ms);
  EXPECT_EQ(Outcome(f), "ok");
  f.timestamp = std::to_string(latest_ms + 1);
  EXPECT_EQ(Outcome(f), "timestamp_out_of_range");
  EXPECT_NE(last_message_.find("future"), std::string::npos);
  f.timestamp = std::to_string(earliest_ms);
  EXPECT_EQ(Outcome(f), "ok");
  f.timestamp = std::to_string(earliest_ms - 1);
  EXPECT_EQ(Outcome(f), "timestamp_out_of_range");
  EXPECT_NE(last_message_.find("max_event_age"), std::string::npos);
  f.timestamp = Str("2026-11-28T18:05:00.000000001Z");
  EXPECT_EQ(Outcome(f), "timestamp_out_of_range");
  f.timestamp = Str("2026-11-28T19:05:00+01:00");  // = now + 5m exactly
  EXPECT_EQ(Outcome(f), "ok");
  f.timestamp = Str("2026-11-21T18:00:00Z");
  EXPECT_EQ(Outcome(f), "ok");
  f.timestamp = Str("2026-11-21T17:59:59.999999999Z");
  EXPECT_EQ(Outcome(f), "timestamp_out_of_range");
}

TEST_F(TelemetryParserTest, TimestampBoundsFollowLimits) {
  IngestLimits limits;
  limits.max_future_skew_ns = 0;
  limits.max_event_age_ns = kNanosPerHour;
  TelemetryParser parser(limits);
  auto outcome = [&](std::string ts) {
    Fields f;
    f.timestamp = Str(ts);
    auto r = parser.Parse(Json(f), BodyFormat::kJson, kNow);
    EXPECT_TRUE(r.ok());
    return r->events.empty() ? r->errors[0].code : "ok";
  };
  EXPECT_EQ(outcome("2026-11-28T18:00:00Z"), "ok");
  EXPECT_EQ(outcome("2026-11-28T18:00:00.001Z"), "timestamp_out_of_range");
  EXPECT_EQ(outcome("2026-11-28T17:00:00Z"), "ok");
  EXPECT_EQ(outcome("2026-11-28T16:59:59Z"), "timestamp_out_of_range");
}

// ---------------------------------------------------------------------------------------
// metrics

TEST_F(TelemetryParserTest, MetricsCountBoundaries) {
  Fields f;
  f.metrics = MetricsObject(64);
  model::Event e = Accepted(f);
  ASSERT_EQ(e.metrics.size(), 64u);
  EXPECT_EQ(e.metrics[63], (model::MetricSample{"m63", 63}));
  f.metrics = MetricsObject(65);
  EXPECT_EQ(Outcome(f), "invalid_metrics");
  f.metrics = "{}";
  EXPECT_EQ(Outcome(f), "invalid_metrics");
  f.metrics = MetricsObject(1);
  EXPECT_EQ(Outcome(f), "ok");
}

TEST_F(TelemetryParserTest, MetricNames) {
  Fields f;
  f.metrics = "{\"a" + std::string(63, 'b') + "\":1}";
  EXPECT_EQ(Outcome(f), "ok");
  f.metrics = "{\"a" + std::string(64, 'b') + "\":1}";
  EXPECT_EQ(Outcome(f), "invalid_metrics");
  for (std::string bad : {"Power_w", "1power", "_power", "power-w", "power w", "", "p\u00e9"}) {
    f.metrics = "{\"" + bad + "\":1}";
    EXPECT_EQ(Outcome(f), "invalid_metrics") << bad;
  }
}

TEST_F(TelemetryParserTest, MetricValues) {
  Fields f;
  f.metrics = R"({"a":-1,"b":0,"c":1.5e3,"d":123456789012345678901234567890,"e":-0.25,"f":1e-400})";
  model::Event e = Accepted(f);
  ASSERT_EQ(e.metrics.size(), 6u);
  EXPECT_EQ(e.metrics[0].value, -1);
  EXPECT_EQ(e.metrics[2].value, 1500);
  EXPECT_DOUBLE_EQ(e.metrics[3].value, 1.2345678901234568e29);
  EXPECT_EQ(e.metrics[4].value, -0.25);
  EXPECT_EQ(e.metrics[5].value, 0);
  for (std::string bad :
       std::vector<std::string>{"\"1\"", "true", "false", "null", "[1]", "{\"v\":1}", "1e400",
                                "-1e400", "1" + std::string(400, '0')}) {
    f.metrics = R"({"ok":1,"bad":)" + bad + "}";
    EXPECT_EQ(Outcome(f), "invalid_metrics") << bad;
  }
}

// Finite but past kMaxMetricMagnitude: refused, so that no aggregate overflows to null
// (three events of ±1.5e308 gave avg, sum and energy_wh null; found by a black-box test).
TEST_F(TelemetryParserTest, MetricMagnitudeBound) {
  Fields f;
  f.metrics = R"({"a":1e100,"b":-1e100,"c":9.99e99})";
  model::Event e = Accepted(f);
  ASSERT_EQ(e.metrics.size(), 3u);
  EXPECT_EQ(e.metrics[0].value, 1e100);
  EXPECT_EQ(e.metrics[1].value, -1e100);
  for (std::string bad : std::vector<std::string>{"1.000001e100", "1e101", "-1e101", "1.5e308",
                                                  "-1.7e308", "1" + std::string(101, '0')}) {
    f.metrics = R"({"ok":1,"bad":)" + bad + "}";
    EXPECT_EQ(Outcome(f), "invalid_metrics") << bad;
  }
}

TEST_F(TelemetryParserTest, MetricsMissingOrWrongType) {
  Fields f;
  f.metrics = std::nullopt;
  EXPECT_EQ(Outcome(f), "invalid_metrics");
  for (std::string bad : {"null", "[]", "[{\"power_w\":1}]", "1", "\"power_w\""}) {
    f.metrics = bad;
    EXPECT_EQ(Outcome(f), "invalid_metrics") << bad;
  }
}

// ---------------------------------------------------------------------------------------
// meta

TEST_F(TelemetryParserTest, MetaIsReencodedCanonically) {
  Fields f;
  f.meta = R"( { "b" : "x\u00e9\/" , "a":1.50, "n":-7, "big":18446744073709551615,
    "huge":123456789012345678901234567890, "t":true, "f":false, "e":2E2, "z":-0,
    "esc":"q\"\\\n\t" } )";
  EXPECT_EQ(Accepted(f).meta_json,
            "{\"b\":\"x\u00e9/\",\"a\":1.5,\"n\":-7,\"big\":18446744073709551615,"
            "\"huge\":1.2345678901234568e+29,\"t\":true,\"f\":false,\"e\":200,\"z\":0,"
            "\"esc\":\"q\\\"\\\\\\n\\t\"}");
  f.meta = "{}";
  EXPECT_EQ(Accepted(f).meta_json, "{}");
  f.meta = "null";  // null = absent
  EXPECT_EQ(Accepted(f).meta_json, "");
}

TEST_F(TelemetryParserTest, MetaEncodingMatchesJsonWriter) {
  Fields f;
  f.meta = R"({"plain":"kitchen","esc\"k":"a\"b\\c\u0001\u001f\/","uni":"\u00e9\ud83d\udd0c",)"
           R"("d":0.1,"e":-2.5e-7,"g":1e21,"h":123456789.125,"z":-0.0,"i":-9223372036854775808,)"
           R"("u":18446744073709551615,"t":true,"f":false})";
  JsonWriter w;
  w.BeginObject();
  w.Key("plain");
  w.String("kitchen");
  w.Key("esc\"k");
  w.String("a\"b\\c\x01\x1f/");
  w.Key("uni");
  w.String("\u00e9\U0001F50C");
  w.Key("d");
  w.Double(0.1);
  w.Key("e");
  w.Double(-2.5e-7);
  w.Key("g");
  w.Double(1e21);
  w.Key("h");
  w.Double(123456789.125);
  w.Key("z");
  w.Double(-0.0);
  w.Key("i");
  w.Int(std::numeric_limits<int64_t>::min());
  w.Key("u");
  w.Uint(std::numeric_limits<uint64_t>::max());
  w.Key("t");
  w.Bool(true);
  w.Key("f");
  w.Bool(false);
  w.EndObject();
  EXPECT_EQ(Accepted(f).meta_json, w.str());
}

TEST_F(TelemetryParserTest, MetaEntryCountBoundaries) {
  Fields f;
  f.meta = MetricsObject(32, "k");
  EXPECT_EQ(Outcome(f), "ok");
  f.meta = MetricsObject(33, "k");
  EXPECT_EQ(Outcome(f), "invalid_meta");
}

TEST_F(TelemetryParserTest, MetaEncodedSizeBoundary) {
  // {"k":"<v>"} is 8 bytes + |v|.
  Fields f;
  f.meta = R"({"k":")" + std::string(4096 - 8, 'v') + "\"}";
  EXPECT_EQ(Accepted(f).meta_json.size(), 4096u);
  f.meta = R"({"k":")" + std::string(4096 - 7, 'v') + "\"}";
  EXPECT_EQ(Outcome(f), "invalid_meta");
  // The encoded size counts, not the input size: whitespace does not count, escapes do.
  f.meta = R"({  "k"  :  ")" + std::string(4096 - 8, 'v') + "\"  }";
  EXPECT_EQ(Outcome(f), "ok");
  f.meta = R"({"k":")" + std::string(4096 - 9, 'v') + "\\n\"}";  // \n encodes as 2 bytes
  EXPECT_EQ(Outcome(f), "invalid_meta");
}

TEST_F(TelemetryParserTest, MetaWrongTypes) {
  Fields f;
  for (std::string bad : {"\"fw\"", "1", "[]", "true"}) {
    f.meta = bad;
    EXPECT_EQ(Outcome(f), "invalid_meta") << bad;
  }
  for (std::string bad : {"null", "{}", "[]", "[1]", "{\"a\":1}", "1e400"}) {
    f.meta = R"({"ok":"x","bad":)" + bad + "}";
    EXPECT_EQ(Outcome(f), "invalid_meta") << bad;
  }
}

// ---------------------------------------------------------------------------------------
// event_id

TEST_F(TelemetryParserTest, EventIdLengthBoundaries) {
  Fields f;
  f.event_id = Str(std::string(128, 'e'));
  EXPECT_EQ(Accepted(f).event_id, std::string(128, 'e'));
  f.event_id = Str(std::string(129, 'e'));
  EXPECT_EQ(Outcome(f), "invalid_event_id");
  std::string accents;
  for (int i = 0; i < 128; ++i) accents += "\u00e9";  // 128 characters, 256 bytes
  f.event_id = Str(accents);
  EXPECT_EQ(Outcome(f), "ok");
  f.event_id = Str(accents + "e");
  EXPECT_EQ(Outcome(f), "invalid_event_id");
  f.event_id = Str("");
  EXPECT_EQ(Outcome(f), "invalid_event_id");
}

TEST_F(TelemetryParserTest, EventIdWrongTypes) {
  Fields f;
  for (std::string bad : {"1", "true", "[\"a\"]", "{}"}) {
    f.event_id = bad;
    EXPECT_EQ(Outcome(f), "invalid_event_id") << bad;
  }
  f.event_id = "null";  // null = absent
  EXPECT_EQ(Accepted(f).event_id, "");
}

// ---------------------------------------------------------------------------------------
// Duplicate keys, unknown fields, schema, precedence

TEST_F(TelemetryParserTest, DuplicateKeysAnywhereAreInvalidJson) {
  const std::string ok = Json(Fields{});
  auto with = [&](std::string extra) { return ok.substr(0, ok.size() - 1) + "," + extra + "}"; };
  EXPECT_EQ(Outcome(with(R"("device_id":"plug-42")")), "invalid_json");
  EXPECT_EQ(Outcome(with(R"("metrics":{"power_w":1})")), "invalid_json");
  EXPECT_EQ(Outcome(with(R"("x":1,"x":1)")), "invalid_json");
  EXPECT_EQ(Outcome(with(R"("x":{"a":1,"b":{"c":1,"c":2}})")), "invalid_json");
  EXPECT_EQ(Outcome(with(R"("x":[{"a":1},{"a":1,"a":1}])")), "invalid_json");
  EXPECT_EQ(Outcome(with(R"("\u0064evice_id":"plug-42")")), "invalid_json");  // same key escaped
  EXPECT_EQ(Outcome(with(R"("x":{"a":1},"y":{"a":1})")), "ok");  // same key, other objects

  Fields f;
  f.metrics = R"({"power_w":1,"power_w":2})";
  EXPECT_EQ(Outcome(f), "invalid_json");
  EXPECT_NE(last_message_.find("power_w"), std::string::npos);
  f.metrics = R"({"a":1,"\u0061":2})";
  EXPECT_EQ(Outcome(f), "invalid_json");
  f.metrics = MetricsObject(40) + "";
  f.metrics->pop_back();
  *f.metrics += R"(,"m7":1})";  // duplicate among many keys
  EXPECT_EQ(Outcome(f), "invalid_json");
  f.metrics = R"({"power_w":1})";
  f.meta = R"({"fw":"1","fw":"2"})";
  EXPECT_EQ(Outcome(f), "invalid_json");
  f.meta = R"({"a":{"b":1,"b":1}})";  // also an invalid meta value: invalid_json first
  EXPECT_EQ(Outcome(f), "invalid_json");
}

TEST_F(TelemetryParserTest, ManyKeysAreCheckedInLinearithmicTime) {
  std::string big = "{";
  for (int i = 0; i < 50000; ++i) {
    if (i) big += ',';
    big += "\"k" + std::to_string(i) + "\":" + std::to_string(i);
  }
  Fields f;
  f.extra = "\"x\":" + big + "}";
  EXPECT_EQ(Outcome(f), "ok");
  f.extra = "\"x\":" + big + ",\"k49999\":0}";
  EXPECT_EQ(Outcome(f), "invalid_json");
  f.extra.clear();
  f.metrics = big + "}";
  EXPECT_EQ(Outcome(f), "invalid_metrics");  // too many
  f.metrics = big + ",\"k0\":1}";
  EXPECT_EQ(Outcome(f), "invalid_json");  // and a duplicate: invalid_json first
}

TEST_F(TelemetryParserTest, UnknownFieldsAreIgnored) {
  Fields f;
  f.extra = R"("firmware":"2.0","tags":["a",{"b":[1,2.5,null,true]}],"n":null,"big":1e400)";
  model::Event e = Accepted(f);
  EXPECT_EQ(e.device_id, "plug-42");
  EXPECT_EQ(e.meta_json, "");
}

TEST_F(TelemetryParserTest, UnknownFieldsNestedTooDeepAreRejected) {
  Fields f;
  // SECURITY.md: 32 levels, the event's own object included; one more is refused.
  f.extra = "\"x\":" + std::string(31, '[') + std::string(31, ']');
  EXPECT_EQ(Outcome(f), "ok");
  f.extra = "\"x\":" + std::string(32, '[') + std::string(32, ']');
  EXPECT_EQ(Outcome(f), "invalid_json");
  f.extra = "\"x\":" + std::string(40, '[') + std::string(40, ']');
  EXPECT_EQ(Outcome(f), "invalid_json");
}

TEST_F(TelemetryParserTest, SchemaIsReserved) {
  Fields f;
  for (std::string ok : {"1", "\"v1\"", "2.5", "null"}) {
    f.extra = "\"schema\":" + ok;
    EXPECT_EQ(Outcome(f), "ok") << ok;
  }
  for (std::string bad : {"{\"v\":1}", "[1]", "true"}) {
    f.extra = "\"schema\":" + bad;
    EXPECT_EQ(Outcome(f), "invalid_json") << bad;
  }
  f.extra = R"("schema":1,"schema":1)";
  EXPECT_EQ(Outcome(f), "invalid_json");
}

TEST_F(TelemetryParserTest, PrecedenceDoesNotDependOnFieldOrder) {
  EXPECT_EQ(Outcome(R"({"timestamp":"bad","device_id":"a b","metrics":{}})"), "invalid_device_id");
  EXPECT_EQ(Outcome(R"({"device_id":"a b","timestamp":"bad","metrics":{}})"), "invalid_device_id");
  EXPECT_EQ(Outcome(R"({"metrics":{},"meta":1,"event_id":1,"timestamp":"bad","device_id":"d"})"),
            "invalid_timestamp");
  EXPECT_EQ(Outcome(R"({"event_id":1,"meta":1,"metrics":{},"timestamp":0,"device_id":"d"})"),
            "timestamp_out_of_range");
  EXPECT_EQ(Outcome(R"({"event_id":1,"meta":1,"metrics":{},"device_id":"d",)"
                    R"("timestamp":"2026-11-28T17:00:00Z"})"),
            "invalid_metrics");
  EXPECT_EQ(Outcome(R"({"event_id":1,"meta":1,"metrics":{"a":1},"device_id":"d",)"
                    R"("timestamp":"2026-11-28T17:00:00Z"})"),
            "invalid_meta");
  EXPECT_EQ(Outcome(R"({"device_id":"a b","x":1,"x":2})"), "invalid_json");
}

// ---------------------------------------------------------------------------------------
// Bodies: arrays, indices, body-level failures

TEST_F(TelemetryParserTest, ArrayPartialAcceptanceKeepsIndices) {
  Fields bad_ts;
  bad_ts.timestamp = Str("nope");
  Fields bad_metrics;
  bad_metrics.metrics = "{}";
  Fields second;
  second.device_id = Str("second");
  const std::string body = "[" + Json(Fields{}) + "," + Json(bad_ts) + "," + Json(second) +
                           ", 1 ," + Json(bad_metrics) + ",[1,2],\"x\",null," + Json(Fields{}) +
                           "]";
  ParsedBody p = ParseOk(body);
  EXPECT_EQ(p.total, 9u);
  EXPECT_EQ(p.event_indices, (std::vector<size_t>{0, 2, 8}));
  ASSERT_EQ(p.events.size(), 3u);
  EXPECT_EQ(p.events[1].device_id, "second");
  std::vector<std::pair<size_t, std::string>> errors;
  for (const EventError& e : p.errors) errors.emplace_back(e.index, e.code);
  EXPECT_EQ(errors, (std::vector<std::pair<size_t, std::string>>{{1, "invalid_timestamp"},
                                                                 {3, "invalid_json"},
                                                                 {4, "invalid_metrics"},
                                                                 {5, "invalid_json"},
                                                                 {6, "invalid_json"},
                                                                 {7, "invalid_json"}}));
  for (const EventError& e : p.errors) EXPECT_FALSE(e.message.empty());
}

TEST_F(TelemetryParserTest, EveryEventRejectedIsNotABodyError) {
  ParsedBody p = ParseOk(R"([{"device_id":1},{}])");
  EXPECT_EQ(p.total, 2u);
  EXPECT_TRUE(p.events.empty());
  EXPECT_EQ(p.errors.size(), 2u);
}

TEST_F(TelemetryParserTest, BodyLevelInvalidJson) {
  const std::string ok = Json(Fields{});
  const std::vector<std::string> bad = {
      "",
      "   \n ",
      "[]",
      " [ ] ",
      "1",
      "\"event\"",
      "null",
      "[" + ok + "," + R"({"device_id":"a",,"x":1})" + "]",  // syntax error in element 1
      "[" + ok + " " + ok + "]",                             // missing comma
      "[" + ok + ",]",
      "[" + ok,
      ok.substr(0, ok.size() - 1),
      ok + " x",  // trailing garbage
      ok + ok,    // two objects
      ok + "}",
      "[" + ok + "]]",
      "[" + ok + "] 1",
      "{\"device_id\":\"a\xff\"}",          // invalid UTF-8
      "[" + ok + ",{\"x\":\"\xc3\x28\"}]",  // invalid UTF-8 in element 1
      "{\"\xed\xa0\x80\":1}",               // UTF-8-encoded surrogate
      "[{\"meta\":{\"a\":\"\\ud800\"}}]",   // lone surrogate escape
      "[{\"meta\":{\"a\":\"x\x01y\"}}]",    // unescaped control character
      "[{\"meta\":{\"a\":tru}}]",           // bad literal
      "[{\"metrics\":{\"a\":01}}]",         // bad number
      "[{\"metrics\":{\"a\":-}}]",
      "[{\"metrics\":{\"a\":1.}}]",
      "[{\"x\":nul}]",
      "[{\"x\":[1 2]}]",
      "{'device_id':'a'}",
  };
  for (const std::string& body : bad) {
    Status st = BodyError(body);
    EXPECT_TRUE(IsInvalidJson(st)) << st.ToString() << " for " << body.substr(0, 200);
  }
  EXPECT_NE(BodyError("[]").message().find("empty array"), std::string::npos);
  EXPECT_NE(BodyError("").message().find("empty body"), std::string::npos);
  EXPECT_NE(BodyError(ok + "x").message().find("trailing"), std::string::npos);
  // Two events as two objects: the message says how to send several (found by a black-box
  // test).
  const std::string one = Json(Fields{});
  EXPECT_NE(BodyError(one + one).message().find("send a JSON array, or one object per line"),
            std::string::npos)
      << BodyError(one + one).ToString();
}

TEST_F(TelemetryParserTest, SingleObjectIsIndexZero) {
  ParsedBody p = ParseOk("\n " + Json(Fields{}) + " \n");
  EXPECT_EQ(p.total, 1u);
  EXPECT_EQ(p.event_indices, (std::vector<size_t>{0}));
}

TEST_F(TelemetryParserTest, LeadingByteOrderMarkIsIgnored) {
  const std::string bom = "\xEF\xBB\xBF";
  EXPECT_EQ(ParseOk(bom + Json(Fields{})).events.size(), 1u);
  EXPECT_EQ(ParseOk(bom + "[" + Json(Fields{}) + "]").events.size(), 1u);
  EXPECT_EQ(
      ParseOk(bom + Json(Fields{}) + "\n" + Json(Fields{}), BodyFormat::kNdjson).events.size(), 2u);
  // Only at the start of the body.
  ParsedBody p = ParseOk(Json(Fields{}) + "\n" + bom + Json(Fields{}), BodyFormat::kNdjson);
  EXPECT_EQ(p.event_indices, (std::vector<size_t>{0}));
  EXPECT_TRUE(IsInvalidJson(BodyError("[" + Json(Fields{}) + "," + bom + Json(Fields{}) + "]")));
}

TEST_F(TelemetryParserTest, TooManyEvents) {
  IngestLimits limits;
  limits.max_events_per_request = 3;
  TelemetryParser parser(limits);
  const std::string ev = Json(Fields{});
  auto r = parser.Parse("[" + ev + "," + ev + "," + ev + "]", BodyFormat::kJson, kNow);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->events.size(), 3u);
  r = parser.Parse("[" + ev + "," + ev + "," + ev + ",1]", BodyFormat::kJson, kNow);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(r.status().message().rfind("too_many_events: ", 0), 0u) << r.status().ToString();

  r = parser.Parse("\n" + ev + "\n\n" + ev + "\n  \n" + ev + "\n\n", BodyFormat::kNdjson, kNow);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->events.size(), 3u);
  r = parser.Parse(ev + "\n" + ev + "\n" + ev + "\nbad\n", BodyFormat::kNdjson, kNow);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(r.status().message().rfind("too_many_events: ", 0), 0u);
}

TEST_F(TelemetryParserTest, BodyTooLarge) {
  IngestLimits limits;
  limits.max_body_bytes = 200;
  TelemetryParser parser(limits);
  std::string body = Json(Fields{});
  body.resize(200, ' ');
  EXPECT_TRUE(parser.Parse(body, BodyFormat::kJson, kNow).ok());
  EXPECT_TRUE(parser.Parse(body, BodyFormat::kNdjson, kNow).ok());
  body += ' ';
  for (BodyFormat format : {BodyFormat::kJson, BodyFormat::kNdjson}) {
    auto r = parser.Parse(body, format, kNow);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
    // The message starts with the wire code (an MQTT 5 reason string passes it on whole;
    // found by a black-box test: it said "body_too_large", documented nowhere).
    EXPECT_EQ(r.status().message().rfind("payload_too_large: ", 0), 0u);
    EXPECT_EQ(BodyErrorCode(r.status()), "payload_too_large");
  }
}

// ---------------------------------------------------------------------------------------
// NDJSON

TEST_F(TelemetryParserTest, NdjsonBlankLinesAndOneBadLine) {
  Fields second;
  second.device_id = Str("second");
  const std::string body = "\n" + Json(Fields{}) + "\r\n  \n\t\r\n" + "{\"device_id\":,}\n" +
                           Json(second) + "\n\n" + "{\"device_id\":\"a\xff\"}\n" + Json(Fields{}) +
                           " " + Json(Fields{}) + "\n" + "[" + Json(Fields{}) + "]\n" + "42\n" +
                           R"({"device_id":"x"})" + "\n" +
                           Json(Fields{});  // last line without a newline
  ParsedBody p = ParseOk(body, BodyFormat::kNdjson);
  EXPECT_EQ(p.total, 9u);
  EXPECT_EQ(p.event_indices, (std::vector<size_t>{0, 2, 8}));
  ASSERT_EQ(p.events.size(), 3u);
  EXPECT_EQ(p.events[1].device_id, "second");
  std::vector<std::pair<size_t, std::string>> errors;
  for (const EventError& e : p.errors) errors.emplace_back(e.index, e.code);
  EXPECT_EQ(errors, (std::vector<std::pair<size_t, std::string>>{{1, "invalid_json"},
                                                                 {3, "invalid_json"},
                                                                 {4, "invalid_json"},
                                                                 {5, "invalid_json"},
                                                                 {6, "invalid_json"},
                                                                 {7, "invalid_timestamp"}}));
}

TEST_F(TelemetryParserTest, NdjsonRulesMatchJson) {
  Fields f;
  f.metrics = R"({"a":1,"a":2})";
  ParsedBody p = ParseOk(Json(f) + "\n", BodyFormat::kNdjson);
  ASSERT_EQ(p.errors.size(), 1u);
  EXPECT_EQ(p.errors[0].code, "invalid_json");
  f.metrics = R"({"a":1e400})";
  p = ParseOk(Json(f), BodyFormat::kNdjson);
  ASSERT_EQ(p.errors.size(), 1u);
  EXPECT_EQ(p.errors[0].code, "invalid_metrics");
}

TEST_F(TelemetryParserTest, NdjsonWithoutEventsIsInvalidJson) {
  EXPECT_TRUE(IsInvalidJson(BodyError("", BodyFormat::kNdjson)));
  EXPECT_TRUE(IsInvalidJson(BodyError("\n \r\n\t\n", BodyFormat::kNdjson)));
}

// ---------------------------------------------------------------------------------------
// MQTT topic device id

TEST_F(TelemetryParserTest, TopicDeviceIdFillsAndMustMatch) {
  Fields f;
  f.device_id = std::nullopt;
  ParsedBody p = ParseOk(Json(f), BodyFormat::kJson, "plug-7");
  ASSERT_EQ(p.events.size(), 1u);
  EXPECT_EQ(p.events[0].device_id, "plug-7");
  f.device_id = Str("plug-7");
  EXPECT_EQ(Outcome(f, "plug-7"), "ok");
  f.device_id = Str("plug-8");
  EXPECT_EQ(Outcome(f, "plug-7"), "invalid_device_id");
  EXPECT_NE(last_message_.find("topic"), std::string::npos);
  f.device_id = std::nullopt;
  EXPECT_EQ(Outcome(f, "bad topic"), "invalid_device_id");
  EXPECT_EQ(Outcome(f, ".."), "invalid_device_id");  // joule/devices/../telemetry
  f.device_id = Str("a b");
  EXPECT_EQ(Outcome(f, "plug-7"), "invalid_device_id");
  // An array payload.
  Fields g;
  g.device_id = std::nullopt;
  p = ParseOk("[" + Json(g) + "," + Json(Fields{}) + "]", BodyFormat::kJson, "plug-7");
  EXPECT_EQ(p.event_indices, (std::vector<size_t>{0}));
  ASSERT_EQ(p.errors.size(), 1u);
  EXPECT_EQ(p.errors[0].code, "invalid_device_id");
}

// ---------------------------------------------------------------------------------------
// Reuse and API details

TEST_F(TelemetryParserTest, ParserIsReusableAcrossBodiesOfAnySize) {
  std::string big = "[";
  for (int i = 0; i < 2000; ++i) {
    Fields f;
    f.event_id = Str("e" + std::to_string(i));
    big += (i ? "," : "") + Json(f);
  }
  big += "]";
  std::vector<model::Event> kept;
  for (int round = 0; round < 3; ++round) {
    ParsedBody p = ParseOk(big);
    ASSERT_EQ(p.events.size(), 2000u);
    EXPECT_EQ(p.events[1999].event_id, "e1999");
    kept.push_back(p.events[5]);
    ParsedBody small = ParseOk(Json(Fields{}));
    EXPECT_EQ(small.events.size(), 1u);
    ParsedBody nd = ParseOk(Json(Fields{}) + "\n" + Json(Fields{}), BodyFormat::kNdjson);
    EXPECT_EQ(nd.events.size(), 2u);
  }
  for (const auto& e : kept) EXPECT_EQ(e.event_id, "e5");  // events own their strings
}

TEST_F(TelemetryParserTest, ParseIntoClearsOutputAndReusesIt) {
  ParsedBody out;
  ASSERT_TRUE(
      parser_.ParseInto("[" + Json(Fields{}) + ",1]", BodyFormat::kJson, kNow, {}, &out).ok());
  EXPECT_EQ(out.events.size(), 1u);
  EXPECT_EQ(out.errors.size(), 1u);
  ASSERT_TRUE(parser_.ParseInto(Json(Fields{}), BodyFormat::kJson, kNow, {}, &out).ok());
  EXPECT_EQ(out.events.size(), 1u);
  EXPECT_EQ(out.errors.size(), 0u);
  EXPECT_EQ(out.total, 1u);
  Status st = parser_.ParseInto("[" + Json(Fields{}) + ",", BodyFormat::kJson, kNow, {}, &out);
  EXPECT_FALSE(st.ok());
  EXPECT_TRUE(out.events.empty());
  EXPECT_EQ(out.total, 0u);
}

TEST_F(TelemetryParserTest, ErrorMessagesAreBounded) {
  Fields f;
  f.device_id = Str(std::string(100000, '#'));
  EXPECT_EQ(Outcome(f), "invalid_device_id");
  EXPECT_LT(last_message_.size(), 200u);
  f.device_id = Str("plug-42");
  f.timestamp = Str(std::string(100000, 'x'));
  EXPECT_EQ(Outcome(f), "invalid_timestamp");
  EXPECT_LT(last_message_.size(), 300u);
}

TEST(FormatFromContentTypeTest, Accepted) {
  BodyFormat f;
  ASSERT_TRUE(FormatFromContentType("application/json", &f));
  EXPECT_EQ(f, BodyFormat::kJson);
  ASSERT_TRUE(FormatFromContentType("Application/JSON; charset=UTF-8", &f));
  EXPECT_EQ(f, BodyFormat::kJson);
  ASSERT_TRUE(FormatFromContentType("application/json;charset=\"utf-8\"", &f));
  EXPECT_EQ(f, BodyFormat::kJson);
  ASSERT_TRUE(FormatFromContentType(" application/x-ndjson ", &f));
  EXPECT_EQ(f, BodyFormat::kNdjson);
  ASSERT_TRUE(FormatFromContentType("application/ndjson; foo=bar", &f));
  EXPECT_EQ(f, BodyFormat::kNdjson);
}

TEST(FormatFromContentTypeTest, Rejected) {
  BodyFormat f;
  for (std::string_view ct : {"", "text/plain", "application/xml", "application/json-seq",
                              "application/jsonx", "application/json; charset=latin1",
                              "application/x-www-form-urlencoded", "multipart/form-data"}) {
    EXPECT_FALSE(FormatFromContentType(ct, &f)) << ct;
  }
}

}  // namespace
}  // namespace joule::ingest

namespace joule::ingest {
namespace {

// ParseInto reuses the events of the ParsedBody it is given (their strings and vectors):
// a sequence of bodies parsed into one ParsedBody gives exactly what fresh ones get.
TEST(TelemetryParserReuseTest, ParseIntoReusedBodyEqualsFreshParse) {
  auto line = [](std::string_view id, std::string_view metrics, std::string_view more = "") {
    return "{\"device_id\":\"" + std::string(id) +
           "\",\"timestamp\":\"2026-11-28T17:59:30Z\",\"metrics\":" + std::string(metrics) +
           std::string(more) + "}\n";
  };
  const std::string big_metrics =
      R"({"a_rather_long_metric_name_beyond_sso":1,"b":2,"c":3,"d":4,"e":5})";
  const std::vector<std::pair<BodyFormat, std::string>> bodies = {
      {BodyFormat::kNdjson, line("a", big_metrics, R"(,"meta":{"fw":"1.2"},"event_id":"e-1")") +
                                line("b", R"({"power_w":1})") +
                                line("c", R"({"x":1,"y":2,"z":3})")},
      {BodyFormat::kNdjson,  // fewer metrics, no meta/event_id: nothing left over
       line("dd", R"({"power_w":2})") + line("bad id!", R"({"power_w":3})") +
           line("e", R"({"x":9})")},
      {BodyFormat::kNdjson, "{not json\n"},
      {BodyFormat::kJson, "[" + line("f", R"({"Bad":1})") + "," + line("g", big_metrics) + "]"},
      {BodyFormat::kJson, "{\"device_id\":\"h\"}"},  // rejected: no timestamp, no metrics
      {BodyFormat::kJson, "[1, " + line("i", R"({"q":1})") + "]"},
      {BodyFormat::kJson, "[{]"},  // body-level failure
      {BodyFormat::kNdjson, line("j", R"({"power_w":1,"power_w":2})") + line("k", "{}") +
                                line("l", R"({"v":"str"})") + line("m", R"({"w":7})")},
      {BodyFormat::kNdjson, line("n", big_metrics) + line("o", big_metrics)},
  };
  TelemetryParser fresh_parser, reused_parser;
  ParsedBody reused;
  for (int round = 0; round < 2; ++round) {
    for (size_t i = 0; i < bodies.size(); ++i) {
      SCOPED_TRACE(testing::Message() << "round " << round << " body " << i);
      Result<ParsedBody> fresh = fresh_parser.Parse(bodies[i].second, bodies[i].first, kNow);
      Status st = reused_parser.ParseInto(bodies[i].second, bodies[i].first, kNow, {}, &reused);
      ASSERT_EQ(st.ok(), fresh.ok());
      if (!st.ok()) {
        EXPECT_TRUE(reused.events.empty());
        EXPECT_TRUE(reused.errors.empty());
        continue;
      }
      EXPECT_EQ(reused.events, fresh->events);
      EXPECT_EQ(reused.event_indices, fresh->event_indices);
      EXPECT_EQ(reused.errors, fresh->errors);
      EXPECT_EQ(reused.total, fresh->total);
    }
  }
}

// Keys are read as views of the input unless they hold an escape; escaped keys mean the
// same as their unescaped text, for field names, metric names and meta keys alike.
TEST(TelemetryParserReuseTest, EscapedKeysMeanTheirUnescapedText) {
  TelemetryParser parser;
  const std::string body =
      R"({"device\u005fid":"p-1","timestamp":"2026-11-28T17:59:30Z",)"
      R"("metr\u0069cs":{"p\u006fwer_w":1.5,"energy_wh":2},"meta":{"k\u0031":"v","k2":1}})";
  Result<ParsedBody> r = parser.Parse(body, BodyFormat::kJson, kNow);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->events.size(), 1u) << (r->errors.empty() ? "" : r->errors[0].message);
  const model::Event& e = r->events[0];
  EXPECT_EQ(e.device_id, "p-1");
  ASSERT_EQ(e.metrics.size(), 2u);
  EXPECT_EQ(e.metrics[0].name, "power_w");
  EXPECT_EQ(e.metrics[1].name, "energy_wh");
  EXPECT_EQ(e.meta_json, R"({"k1":"v","k2":1})");
}

}  // namespace
}  // namespace joule::ingest

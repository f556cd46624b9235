// The common-shape scanner against the full simdjson parser: on generated and mutated
// bodies, a TelemetryParser with the scanner and one without it must give the same
// ParsedBody (events, indices, errors with their messages) and the same Status.
#include "ingest/common_shape_scanner.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "common/time_format.h"
#include "ingest/telemetry_parser.h"
#include "ingest/validation.h"

namespace joule::ingest {
namespace {

int64_t Time(std::string_view rfc3339) {
  int64_t ns = 0;
  EXPECT_TRUE(ParseRfc3339(rfc3339, &ns)) << rfc3339;
  return ns;
}

const int64_t kNow = Time("2026-11-28T18:00:00Z");
const ScanBounds kBounds{kNow - 7 * 86400 * 1'000'000'000LL, kNow + 300 * 1'000'000'000LL, {}};

const model::Event* Scan(std::string_view line, model::Event* ev, ScanBounds b = kBounds) {
  const char* end = line.data() + line.size();
  const char* p = ScanCommonEvent(line.data(), end, b, ev);
  if (p == nullptr || SkipJsonWhitespace(p, end) != end) return nullptr;
  return ev;
}

TEST(CommonShapeScanner, ReadsTheCommonShape) {
  model::Event ev;
  ASSERT_TRUE(Scan(R"({"device_id":"dev-00001","timestamp":1795888790000,)"
                   R"("metrics":{"power_w":236.69,"voltage_v":227.8,"current_a":1.039,)"
                   R"("energy_wh":86349.146}})",
                   &ev));
  EXPECT_EQ(ev.device_id, "dev-00001");
  EXPECT_EQ(ev.timestamp_ns, 1795888790000LL * 1'000'000);
  ASSERT_EQ(ev.metrics.size(), 4u);
  EXPECT_EQ(ev.metrics[0].name, "power_w");
  EXPECT_EQ(ev.metrics[0].value, 236.69);
  EXPECT_EQ(ev.metrics[3].name, "energy_wh");
  EXPECT_EQ(ev.metrics[3].value, 86349.146);
}

TEST(CommonShapeScanner, ReadsAnyKeyOrderWhitespaceAndRfc3339) {
  model::Event ev;
  ASSERT_TRUE(
      Scan(" {\t\"metrics\" : { \"a\" : -0.5e1 } ,\r\n \"timestamp\":"
           "\"2026-11-28T17:59:30.250+01:00\", \"device_id\" : \"A.b:c-_9\" } ",
           &ev));
  EXPECT_EQ(ev.device_id, "A.b:c-_9");
  EXPECT_EQ(ev.timestamp_ns, Time("2026-11-28T16:59:30.250Z"));
  ASSERT_EQ(ev.metrics.size(), 1u);
  EXPECT_EQ(ev.metrics[0].value, -5.0);
}

TEST(CommonShapeScanner, DeclinesWhatTheFullParserDecides) {
  const char* declined[] = {
      R"({"device_id":"d","timestamp":1795888790000,"metrics":{"a":1},"meta":{}})",
      R"({"device_id":"d","timestamp":1795888790000,"metrics":{"a":1},"event_id":null})",
      R"({"device_id":"d","timestamp":1795888790000,"metrics":{"a":1},"event_id":""})",
      R"({"device_id":"d","timestamp":1795888790000,"metrics":{"a":1},"event_id":"\u0041"})",
      R"({"device_id":"d","timestamp":1795888790000,"metrics":{"a":1},"event_id":7})",
      R"({"device_id":"d\u0041","timestamp":1795888790000,"metrics":{"a":1}})",
      R"({"device_id":"d","timestamp":1795888790000,"metrics":{"a":1,"a":2}})",
      R"({"device_id":"d","timestamp":1795888790000,"metrics":{}})",
      R"({"device_id":"d","timestamp":1795888790000,"metrics":{"A":1}})",
      R"({"device_id":"d","timestamp":1795888790000,"metrics":{"a":01}})",
      R"({"device_id":"d","timestamp":1795888790000,"metrics":{"a":1.}})",
      R"({"device_id":"d","timestamp":1795888790000,"metrics":{"a":1e400}})",
      R"({"device_id":"d","timestamp":1795888790000,"metrics":{"a":12345678901234567890}})",
      R"({"device_id":"d","timestamp":1795888790000,"metrics":{"a":"1"}})",
      R"({"device_id":"d","timestamp":1795888790000.5,"metrics":{"a":1}})",
      R"({"device_id":"d","timestamp":1,"metrics":{"a":1}})",  // out of range
      R"({"device_id":"","timestamp":1795888790000,"metrics":{"a":1}})",
      R"({"device_id":"d d","timestamp":1795888790000,"metrics":{"a":1}})",
      R"({"device_id":".","timestamp":1795888790000,"metrics":{"a":1}})",
      R"({"device_id":"..","timestamp":1795888790000,"metrics":{"a":1}})",
      R"({"timestamp":1795888790000,"metrics":{"a":1}})",  // no device, no topic
      R"({"device_id":"d","device_id":"d","timestamp":1795888790000,"metrics":{"a":1}})",
      R"({"device_id":"d","timestamp":1795888790000,"metrics":{"a":1}} x)",
      R"({"device_id":"d","timestamp":1795888790000,"metrics":{"a":1},})",
      R"({"device_id":"d","timestamp":"yesterday","metrics":{"a":1}})",
  };
  for (const char* line : declined) {
    model::Event ev;
    EXPECT_EQ(Scan(line, &ev), nullptr) << line;
  }
}

TEST(CommonShapeScanner, ReadsAnEventId) {
  model::Event ev;
  ASSERT_TRUE(Scan(R"({"event_id":"42-a b","device_id":"d","timestamp":1795888790000,)"
                   R"("metrics":{"a":1}})",
                   &ev));
  EXPECT_EQ(ev.event_id, "42-a b");
}

TEST(CommonShapeScanner, TopicDeviceId) {
  ScanBounds b = kBounds;
  b.topic_device_id = "plug-1";
  model::Event ev;
  ASSERT_TRUE(Scan(R"({"timestamp":1795888790000,"metrics":{"a":1}})", &ev, b));
  EXPECT_EQ(ev.device_id, "plug-1");
  EXPECT_TRUE(
      Scan(R"({"device_id":"plug-1","timestamp":1795888790000,"metrics":{"a":1}})", &ev, b));
  EXPECT_FALSE(
      Scan(R"({"device_id":"plug-2","timestamp":1795888790000,"metrics":{"a":1}})", &ev, b));
}

// The scanner's byte classes agree with validation.h for every byte.
TEST(CommonShapeScanner, CharacterClassesAgreeWithValidation) {
  for (int c = 0; c < 256; ++c) {
    const std::string ch(1, static_cast<char>(c));
    if (ch == "\"" || ch == "\\") continue;  // would end or escape the string
    model::Event ev;
    const std::string id = "a" + ch + "b";
    EXPECT_EQ(Scan(R"({"device_id":")" + id + R"(","timestamp":1795888790000,"metrics":{"a":1}})",
                   &ev) != nullptr,
              ValidDeviceId(id))
        << c;
    for (const std::string& name : {ch, "a" + ch}) {
      EXPECT_EQ(
          Scan(R"({"device_id":"d","timestamp":1795888790000,"metrics":{")" + name + R"(":1}})",
               &ev) != nullptr,
          ValidMetricName(name))
          << c;
    }
  }
}

// Every number the scanner converts equals the correctly rounded value (glibc strtod).
TEST(CommonShapeScanner, NumbersAreCorrectlyRounded) {
  std::mt19937_64 rng(7);
  int converted = 0;
  for (int i = 0; i < 200000; ++i) {
    std::string num;
    if (rng() % 4 == 0) num += '-';
    const int int_digits = static_cast<int>(rng() % 12);
    if (int_digits == 0) {
      num += '0';
    } else {
      num += static_cast<char>('1' + rng() % 9);
      for (int d = 1; d < int_digits; ++d) num += static_cast<char>('0' + rng() % 10);
    }
    if (rng() % 3 != 0) {
      num += '.';
      const int frac = 1 + static_cast<int>(rng() % 12);
      for (int d = 0; d < frac; ++d) num += static_cast<char>('0' + rng() % 10);
    }
    if (rng() % 4 == 0) {
      num += (rng() % 2) ? 'e' : 'E';
      if (rng() % 2) num += (rng() % 2) ? '-' : '+';
      num += std::to_string(rng() % 30);
    }
    const std::string line =
        R"({"device_id":"d","timestamp":1795888790000,"metrics":{"x":)" + num + "}}";
    model::Event ev;
    if (!Scan(line, &ev)) continue;
    ++converted;
    const double expected = std::strtod(num.c_str(), nullptr);
    ASSERT_EQ(std::signbit(ev.metrics[0].value), std::signbit(expected)) << num;
    ASSERT_EQ(ev.metrics[0].value, expected) << num;
  }
  EXPECT_GT(converted, 100000);
}

// ---- Differential: bodies through both paths -------------------------------------------

class BodyGenerator {
 public:
  explicit BodyGenerator(uint64_t seed) : rng_(seed) {}

  std::string Event() {
    std::vector<std::string> fields;
    if (!Chance(8)) fields.push_back(Key("device_id") + DeviceId());
    if (!Chance(8)) fields.push_back(Key("timestamp") + Timestamp());
    if (!Chance(8)) fields.push_back(Key("metrics") + Metrics());
    if (Chance(5)) fields.push_back(Key("meta") + R"({"room":"kitchen"})");
    if (Chance(30)) fields.push_back(Key("event_id") + EventId());
    if (Chance(5)) fields.push_back(Key(Pick({"device_id", "timestamp", "metrics", "x"})) + "1");
    std::shuffle(fields.begin(), fields.end(), rng_);
    std::string s = Ws() + "{";
    for (size_t i = 0; i < fields.size(); ++i) {
      if (i > 0) s += Ws() + ",";
      s += Ws() + fields[i];
    }
    s += Ws() + "}" + Ws();
    if (Chance(5)) Mutate(&s);
    return s;
  }

  bool Chance(int percent) { return static_cast<int>(rng_() % 100) < percent; }
  uint64_t Below(uint64_t n) { return rng_() % n; }

 private:
  std::string Pick(std::initializer_list<const char*> options) {
    auto it = options.begin();
    std::advance(it, static_cast<ptrdiff_t>(Below(options.size())));
    return *it;
  }
  std::string Ws() {
    if (!Chance(10)) return "";
    return Pick({" ", "\t", "  ", "\r", " \r "});
  }
  std::string Key(const std::string& k) { return "\"" + k + "\"" + Ws() + ":" + Ws(); }
  std::string DeviceId() {
    if (Chance(5)) return "42";
    if (Chance(5)) return "\"dev\\u002d1\"";
    if (Chance(3)) return "\"\"";
    if (Chance(3)) return "\"" + std::string(128 + Below(2), 'a') + "\"";
    if (Chance(3)) return "\"d\xc3\xa9v\"";
    static const char kChars[] = "abcXYZ019._:-";
    std::string id = "\"";
    const size_t n = 1 + Below(12);
    for (size_t i = 0; i < n; ++i) id += kChars[Below(sizeof kChars - 1)];
    if (Chance(3)) id += Pick({" ", "/", "#"});
    return id + "\"";
  }
  std::string EventId() {
    if (Chance(10)) {
      return Pick(
          {"null", "\"\"", "7", "\"e\\u0041\"", "\"\xc3\xa9t\xc3\xa9\"", "\"a\tb\"", "\"a\\\"b\""});
    }
    if (Chance(5)) return "\"" + std::string(128 + Below(2), 'e') + "\"";
    return "\"" + std::to_string(Below(1000000)) + "\"";
  }
  std::string Timestamp() {
    const int64_t ms = kNow / 1'000'000;
    switch (Below(10)) {
      case 0:
        return "\"2026-11-28T17:59:30.250Z\"";
      case 1:
        return Pick({"\"2026-11-28T17:59:30+05:30\"", "\"2026-02-30T00:00:00Z\"", "\"now\"",
                     "\"2026-11-28T17:59:30.1234567891Z\"", "\"2026-11-28T17:59:30Z\\n\""});
      case 2:
        return Pick({"1795888790000.0", "1.79588879e12", "-1795888790000", "01795888790000", "0",
                     "-0", "99999999999999999999", "true", "null", "\"1795888790000\""});
      case 3:  // around the bounds
        return std::to_string(ms + 300'000 + static_cast<int64_t>(Below(3)) - 1);
      case 4:
        return std::to_string(ms - 7 * 86'400'000 + static_cast<int64_t>(Below(3)) - 1);
      default:
        return std::to_string(ms - static_cast<int64_t>(Below(86'400'000)));
    }
  }
  std::string Number() {
    switch (Below(40)) {
      case 0:
        return Pick({"1e400", "-1e400", "1e-400", "01", "1.", ".5", "-", "+1", "1e", "0x10", "NaN",
                     "Infinity", "\"1\"", "true", "null", "[1]", "{}", "1.5.5"});
      case 1:
        return Pick({"0", "-0", "0.0", "-0.0", "0e5", "0E-5", "9007199254740993",
                     "9007199254740992", "12345678901234567890", "1234567890123456789", "1e22",
                     "1e23", "1e-22", "1e-23", "4.9e-324", "1.7976931348623157e308"});
      default: {
        std::string n;
        if (Chance(20)) n += '-';
        n += std::to_string(Below(100000));
        if (Chance(70)) n += "." + std::to_string(Below(1000000));
        if (Chance(10)) n += "e" + std::to_string(static_cast<int>(Below(50)) - 25);
        return n;
      }
    }
  }
  std::string Name() {
    if (Chance(3)) return Pick({"A", "1a", "_a", "a-b", "a\\u0062", "", "\xc3\xa9"});
    if (Chance(3)) return std::string(64 + Below(2), 'n');
    return Pick({"power_w", "voltage_v", "current_a", "energy_wh", "t", "p2", "a_b_c"});
  }
  std::string Metrics() {
    if (Chance(3)) return Pick({"{}", "[]", "1", "null"});
    size_t n = 1 + Below(5);
    if (Chance(2)) n = 63 + Below(3);
    std::string s = "{";
    for (size_t i = 0; i < n; ++i) {
      if (i > 0) s += Ws() + ",";
      std::string name = n > 8 ? "m" + std::to_string(i) : Name();
      s += Ws() + "\"" + name + "\"" + Ws() + ":" + Ws() + Number() + Ws();
    }
    return s + "}";
  }
  void Mutate(std::string* s) {
    if (s->empty()) return;
    const size_t at = Below(s->size());
    switch (Below(3)) {
      case 0:
        s->erase(at, 1);
        break;
      case 1:
        s->insert(at, 1, "{}[]\",:\\ 0a\x80\n"[Below(14)]);
        break;
      default:
        (*s)[at] = "{}[]\",:\\ 0a\x80"[Below(13)];
    }
  }

  std::mt19937_64 rng_;
};

void ExpectSame(TelemetryParser& fast, TelemetryParser& full, ParsedBody& a, ParsedBody& b,
                const std::string& body, BodyFormat format, std::string_view topic) {
  const Status sa = fast.ParseInto(body, format, kNow, topic, &a);
  const Status sb = full.ParseInto(body, format, kNow, topic, &b);
  ASSERT_EQ(sa.ToString(), sb.ToString()) << body;
  ASSERT_EQ(a.total, b.total) << body;
  ASSERT_EQ(a.event_indices, b.event_indices) << body;
  ASSERT_EQ(a.errors, b.errors) << body;
  ASSERT_EQ(a.events.size(), b.events.size()) << body;
  for (size_t i = 0; i < a.events.size(); ++i) {
    ASSERT_EQ(a.events[i].device_id, b.events[i].device_id) << body;
    ASSERT_EQ(a.events[i].timestamp_ns, b.events[i].timestamp_ns) << body;
    ASSERT_EQ(a.events[i].metrics.size(), b.events[i].metrics.size()) << body;
    for (size_t k = 0; k < a.events[i].metrics.size(); ++k) {
      const auto& ma = a.events[i].metrics[k];
      const auto& mb = b.events[i].metrics[k];
      ASSERT_EQ(ma.name, mb.name) << body;
      ASSERT_EQ(std::signbit(ma.value), std::signbit(mb.value)) << body;
      ASSERT_EQ(ma.value, mb.value) << body;
    }
    ASSERT_EQ(a.events[i], b.events[i]) << body;
  }
}

TEST(CommonShapeScanner, SameResultsAsTheFullParser) {
  IngestLimits limits;
  limits.max_events_per_request = 6;
  TelemetryParser fast(limits);
  TelemetryParser full(limits);
  full.SetCommonShapeScan(false);
  // One ParsedBody per parser across all bodies: slots reused from earlier bodies must
  // not leak into later ones on either path.
  ParsedBody a, b;
  BodyGenerator gen(20261130);
  size_t generated = 0, scanned = 0;  // events, and those the scanner takes on its own
  for (int i = 0; i < 30000; ++i) {
    const size_t n = 1 + gen.Below(7);
    std::vector<std::string> events;
    for (size_t k = 0; k < n; ++k) {
      events.push_back(gen.Event());
      model::Event ev;
      ++generated;
      scanned += Scan(events.back(), &ev) != nullptr;
    }
    const std::string_view topic = gen.Chance(20) ? "abc" : "";
    // NDJSON, with blank lines and CRLF now and then.
    std::string nd;
    for (const auto& e : events) {
      nd += e;
      nd += gen.Chance(10) ? "\r\n" : "\n";
      if (gen.Chance(5)) nd += " \n";
    }
    ExpectSame(fast, full, a, b, nd, BodyFormat::kNdjson, topic);
    // A JSON array of the same events (with newlines inside the events removed by
    // nothing: CR and tabs are JSON whitespace too), and the first event alone.
    std::string arr = gen.Chance(5) ? "" : "[";
    for (size_t k = 0; k < events.size(); ++k) {
      if (k > 0) arr += gen.Chance(2) ? " , " : ",";
      arr += events[k];
    }
    if (!gen.Chance(5)) arr += "]";
    if (gen.Chance(3)) arr += " x";
    ExpectSame(fast, full, a, b, arr, BodyFormat::kJson, topic);
    ExpectSame(fast, full, a, b, events[0], BodyFormat::kJson, topic);
    if (HasFailure()) {
      ADD_FAILURE() << "stopped at body " << i;
      return;
    }
  }
  // Both paths were exercised: a good share of the events in the common shape, the rest not.
  EXPECT_GT(scanned, generated / 10) << "of " << generated << " events";
  EXPECT_LT(scanned, generated * 9 / 10);
}

}  // namespace
}  // namespace joule::ingest

#include "store/archive/archive_row.h"

#include <fmt/format.h>

#include <cmath>

#include "common/clock.h"
#include "common/json_writer.h"
#include "common/time_format.h"

namespace joule::store {
namespace {

// As FormatRfc3339Exact: milliseconds, then 3 or 6 more digits when the time has them.
void AppendExactTime(std::string* out, int64_t nanos) {
  AppendRfc3339Millis(out, nanos);
  int64_t sub_milli = nanos % kNanosPerMilli;
  if (sub_milli < 0) sub_milli += kNanosPerMilli;
  if (sub_milli == 0) return;
  out->pop_back();  // 'Z'
  char buf[16];
  char* end = sub_milli % kNanosPerMicro == 0
                  ? fmt::format_to(buf, "{:03d}Z", sub_milli / kNanosPerMicro)
                  : fmt::format_to(buf, "{:06d}Z", sub_milli);
  out->append(buf, static_cast<size_t>(end - buf));
}

// As JsonWriter::Double: shortest round trip, no "-0", non-finite as null.
void AppendNumber(std::string* out, double v) {
  if (!std::isfinite(v)) {
    out->append("null");
    return;
  }
  if (v == 0) v = 0;
  char buf[40];
  char* end = fmt::format_to(buf, "{}", v);
  out->append(buf, static_cast<size_t>(end - buf));
}

}  // namespace

void AppendArchiveRow(const model::Event& e, std::string* out) {
  out->append("{\"device_id\":");
  JsonWriter::AppendEscaped(out, e.device_id);
  out->append(",\"timestamp\":\"");
  AppendExactTime(out, e.timestamp_ns);
  out->push_back('"');
  if (!e.event_id.empty()) {
    out->append(",\"event_id\":");
    JsonWriter::AppendEscaped(out, e.event_id);
  }
  out->append(",\"metrics\":{");
  for (size_t i = 0; i < e.metrics.size(); ++i) {
    if (i > 0) out->push_back(',');
    JsonWriter::AppendEscaped(out, e.metrics[i].name);
    out->push_back(':');
    AppendNumber(out, e.metrics[i].value);
  }
  out->push_back('}');
  if (!e.meta_json.empty()) {
    out->append(",\"meta\":");
    out->append(e.meta_json);
  }
  out->append(",\"received_at\":\"");
  AppendRfc3339Millis(out, e.received_at_ns);
  out->append("\"}\n");
}

}  // namespace joule::store

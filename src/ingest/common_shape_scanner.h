// CommonShapeScanner: a byte scanner for the event shape devices send,
//
//   {"device_id":"…","timestamp":<epoch ms, or "RFC 3339">,"metrics":{"<name>":<number>,…}}
//
// with an optional "event_id":"…" (the keys in any order, JSON whitespace anywhere between
// tokens), which the TelemetryParser tries before its full simdjson walk. It accepts only
// events the full parser accepts, and fills them with exactly the values the full parser
// gives. On anything else it declines, and the full parser decides the event (and words
// its error): another key (meta, schema, unknown), a backslash, a non-ASCII byte, a null, a
// number outside the exactly converted range, any rule broken.
// tests/common_shape_scanner_test.cc and the parser's fuzz target hold the two paths
// together.
//
// Why: in the full walk simdjson's structural indexing alone costs ~870 instructions per
// harness event and the whole parse ~4,030; with this scanner the parse costs ~2,200
// (callgrind, bench/ingest_bench BM_ParseNdjsonHarnessShape; docs/benchmarks/HISTORY.md).
#pragma once

#include <cstdint>
#include <string_view>

#include "model/event.h"

namespace joule::ingest {

struct ScanBounds {
  int64_t earliest_ns = 0;  // accepted timestamps: [earliest_ns, latest_ns]
  int64_t latest_ns = 0;
  std::string_view topic_device_id;  // MQTT: see TelemetryParser::Parse
};

// Scans one event object starting at `p` (JSON whitespace before it is skipped). On
// success writes the event's device_id, timestamp_ns, metrics and event_id (when present)
// into `*event` and returns the position just after the closing brace. The metrics are
// overwritten in place and trimmed, as the full parser does; the other fields of `*event`
// are left as they are. Returns nullptr when the event is not in the common shape or
// breaks a rule; `*event` may then be partly written. Reads only bytes in [p, end).
const char* ScanCommonEvent(const char* p, const char* end, const ScanBounds& bounds,
                            model::Event* event);

// The position of the first byte in [p, end) that is not JSON whitespace (end if none).
const char* SkipJsonWhitespace(const char* p, const char* end);

}  // namespace joule::ingest

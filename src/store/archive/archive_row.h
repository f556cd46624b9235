// ArchiveRowEncoder: one raw-archive row — the canonical JSON of an event
// (model::EventToJson, docs/formats/archive.md) followed by '\n' — appended to a buffer.
// The archiver writes every ingested event, so this is the hot path of archiving: the
// bytes are identical to EventToJson's (archive_row_test checks it, also over millions of
// random numbers), written straight into the buffer (one size check per row), without
// temporaries or per-event allocations. What makes it fast (src/store/archive/README.md):
//  * numbers with at most 7 decimals below 10^15 (every sensor reading we have seen) are
//    printed by a short exact check instead of the general shortest-round-trip algorithm,
//    which is still used for every other number;
//  * the "YYYY-MM-DDTHH:" prefix of both times is formatted once per hour;
//  * the `"name":` keys of the metrics are escaped once and reused while consecutive
//    events carry the same names in the same order (the usual case: one device type).
// An encoder keeps those caches; use one per thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/event.h"
#include "store/archive/event_view.h"

namespace joule::store {

class ArchiveRowEncoder {
 public:
  void Append(const EventView& event, std::string* out);
  void Append(const model::Event& event, std::string* out);

 private:
  struct HourCache {
    int64_t hour = INT64_MIN;  // hours since the epoch of `prefix`
    char prefix[14];           // "YYYY-MM-DDTHH:"
  };
  static char* PutTime(HourCache* cache, int64_t nanos, bool exact, char* p);

  EventView scratch_;  // Append(model::Event)
  HourCache timestamp_hour_;
  HourCache received_hour_;
  std::vector<std::string> key_names_;  // metric names of the previous event, in order
  // Their encodings, "\"name\":", padded to at least kKeyCopy bytes so that a short one
  // is copied with one fixed-size copy; key_lens_ holds the real lengths.
  static constexpr size_t kKeyCopy = 32;
  std::vector<std::string> keys_;
  std::vector<size_t> key_lens_;
};

// One row with a fresh encoder (no caches carried over; tests and tools).
void AppendArchiveRow(const model::Event& event, std::string* out);

// The shortest decimal that reads back as `v` (JsonWriter::AppendDouble's bytes) when `v`
// has at most 7 decimals and |v| is in [1e-3, 1e15), written at `p`; nullptr otherwise
// (the caller falls back to JsonWriter::AppendDouble). Exposed for tests.
char* PutSimpleDouble(double v, char* p);

}  // namespace joule::store

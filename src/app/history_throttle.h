// HistoryThrottle: which of a processor's emitted records go to the history store now
// (src/app/README.md, "History and early firings"). Final records go at once; a partial
// (final:false) record goes at once when its key (device, resolution, window start) has not
// reached history for `partial_interval_ns` of processing time, else it is held — a newer
// partial of the key replaces it, a final record of the key drops it, a final record of any
// window of the device releases the device's held partials — and released by Release once
// the interval has passed (or at once with `all`).
//
// Held keys live per device in a flat table (common/flat_string_map.h): one hash lookup per
// record and a scan of the device's few keys (its open 1m, 1h and 1d windows), instead of
// an ordered map of every key (a tree walk of string compares per record, which took ~11 %
// of the processors' CPU at 10k devices). A device's entry stays after its keys are gone
// (as the processor's per-device reading does). Not thread-safe (the processor's thread).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/flat_string_map.h"
#include "model/aggregate_record.h"

namespace joule::app {

class HistoryThrottle {
 public:
  // 0 (or less): every record goes to history at once.
  explicit HistoryThrottle(int64_t partial_interval_ns) : interval_ns_(partial_interval_ns) {}

  // Appends to `out` what goes to history now (the record and/or released partials).
  // Returns the number of held partials this record made obsolete without them reaching
  // history (joule_history_partials_superseded_total).
  uint64_t Offer(const model::AggregateRecord& record, int64_t now_ns,
                 std::vector<model::AggregateRecord>* out);

  // Moves held partials whose key was last written `partial_interval_ns` ago or more (every
  // held one when `all`) to `out`, and forgets keys that were quiet for that long.
  void Release(int64_t now_ns, bool all, std::vector<model::AggregateRecord>* out);

  // Keys known (held or recently written), as the ordered map's size was.
  size_t held() const { return keys_; }

 private:
  struct Key {
    int64_t window_start_ns = 0;
    int64_t written_ns = 0;  // when a partial of this key last went to history
    model::Resolution resolution = model::Resolution::kBase;
    bool dirty = false;  // `record` is newer than what history has
    model::AggregateRecord record;
  };
  struct Device {
    std::vector<Key> keys;  // a handful: the device's open windows
  };

  const int64_t interval_ns_;
  FlatStringMap<Device> devices_;
  size_t keys_ = 0;
};

}  // namespace joule::app

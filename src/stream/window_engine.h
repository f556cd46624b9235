// WindowEngine: the event-time window engine (CONTRACT §2). Pure computation: events
// and processing-time ticks in, versioned AggregateRecords out. No I/O, no threads.
//
// Thread-safety: none. One engine per processor thread; it owns the devices of the
// partitions that thread owns. Every call runs to completion and emits records
// synchronously into the given sink before returning.
//
// Semantics (details and rationale in src/stream/README.md):
//  - Base windows (EngineOptions::window_ns, epoch-aligned) per device, rolled up to 1h
//    (UTC) and 1d (the device's local calendar day, from TimezoneProvider).
//  - Per-device watermark = max event time − out_of_orderness. Events at or below the
//    watermark are late: applied (with re-emission, version+1) while within
//    allowed_lateness of the watermark, dropped and counted otherwise.
//  - Every emission of a record key carries a strictly higher version than the previous
//    one (early firings included), so "keep the highest version" keeps the newest.
//  - Within the out-of-orderness bound the final records are bit-identical to those of
//    in-order input: samples are folded into the aggregates in event-time order only
//    once the watermark has passed them.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/clock.h"
#include "common/status.h"
#include "model/aggregate_record.h"
#include "model/event.h"
#include "stream/state_sink.h"

namespace joule::stream {

struct EngineOptions {
  int64_t window_ns = 60 * kNanosPerSecond;
  int64_t out_of_orderness_ns = 10 * kNanosPerSecond;
  int64_t allowed_lateness_ns = kNanosPerHour;
  int64_t idle_timeout_ns = 60 * kNanosPerSecond;
  int64_t early_fire_interval_ns = 5 * kNanosPerSecond;
  int64_t max_gap_ns = 300 * kNanosPerSecond;
  std::map<std::string, model::MetricKind, std::less<>> kinds;  // overrides of DefaultMetricKind
  int64_t dedup_horizon_ns = 0;  // 0 = allowed_lateness + out_of_orderness
};

class RecordSink {
 public:
  virtual ~RecordSink() = default;
  // The record is only valid during the call (the engine reuses its storage).
  virtual void Emit(const model::AggregateRecord& record) = 0;
};

// Supplies each device's IANA timezone (default "UTC"); called when a device is first
// seen and on each local-day roll. An unknown zone name falls back to UTC. std::nullopt:
// the source cannot say now (the metadata store unreachable). A device the engine has then
// keeps the zone it has; an event of a device the engine has not seen is not processed
// (ProcessBatch stops before it, Process returns false), so that no local day is ever
// computed in a guessed zone.
class TimezoneProvider {
 public:
  virtual ~TimezoneProvider() = default;
  virtual std::optional<std::string> TimezoneOf(std::string_view device_id) = 0;
};

class WindowEngine {
 public:
  // REQUIRES: options.window_ns > 0; other durations >= 0. `timezones` (may be null: all
  // devices are UTC) must outlive the engine.
  explicit WindowEngine(EngineOptions options, TimezoneProvider* timezones = nullptr);
  ~WindowEngine();
  WindowEngine(const WindowEngine&) = delete;
  WindowEngine& operator=(const WindowEngine&) = delete;

  // Feeds one event (already validated; Event::received_at_ns is its ingest time).
  // now_ns = processing time (non-decreasing across calls). False (nothing changed) when
  // the event's device is new and the TimezoneProvider cannot say its zone now.
  bool Process(const model::Event& event, int64_t now_ns, RecordSink* sink);

  // Process(events[i], now_ns, sink) for i = 0 … n−1, in order (identical results). While
  // processing one event it prefetches the state of the devices of the next few, whose
  // state is usually not in cache when many devices interleave.
  // `duplicate` (may be null; n entries): 1 where the event was a duplicate, dropped.
  // Returns how many events it processed: n, or the index of the first event whose device
  // is new while the TimezoneProvider cannot say its zone (that event and the ones after
  // it are untouched: the caller hands them over again later).
  size_t ProcessBatch(const model::Event* events, size_t n, int64_t now_ns, RecordSink* sink,
                      uint8_t* duplicate = nullptr);

  // Processing-time progress: early firings of open windows every early_fire_interval,
  // finalization of silent devices' windows after idle_timeout, eviction of state older
  // than the lateness horizon. Call every ~100 ms – 1 s.
  void Tick(int64_t now_ns, RecordSink* sink);

  struct DeviceHealth {
    int64_t last_event_time_ns = 0;  // max event time seen
    int64_t last_seen_ns = 0;        // ingest time (received_at) of the latest-received event
    int64_t watermark_ns = 0;
    int64_t clock_skew_ns = 0;  // median of recent (received_at − event time)
    uint64_t events = 0, late_updates = 0, late_dropped = 0, duplicates = 0;
  };
  bool Health(std::string_view device_id, DeviceHealth* out) const;

  struct Stats {
    uint64_t devices = 0, open_windows = 0, state_bytes_estimate = 0, events = 0, duplicates = 0,
             late_updates = 0, late_dropped = 0, records_emitted = 0;
    // Events not later than their device's latest, late ones included (since the engine
    // started or restored a checkpoint; not saved in checkpoints).
    uint64_t out_of_order = 0;
    // Device visits by Tick (since the engine started; not saved in checkpoints).
    uint64_t tick_visits = 0;
  };
  // Walks the whole state (open windows, bytes): O(devices + windows).
  Stats stats() const;
  // The device count and the counters of stats(), without the walk (open_windows and
  // state_bytes_estimate are 0): O(1).
  Stats counters() const;

  // Replay (docs/formats/archive.md, "Replay"): a settled base window of a device changed
  // from `before` (the record this engine emitted; count 0 and no metrics if it emitted
  // none) to `after` (recomputed from the archive: every event of `before` and the too-late
  // ones). The difference goes into the device's 1h and 1d windows still held — rollups the
  // replay leaves to this engine because they are not settled yet — which are re-emitted as
  // after a late update (final ones at once, open ones at their next early firing). Returns
  // whether a rollup was held.
  bool CorrectBaseWindow(const model::AggregateRecord& before, const model::AggregateRecord& after,
                         RecordSink* sink);

  // Serializes all state (windows, samples within the lateness horizon, pending events,
  // de-duplication keys, versions, counters) — docs/formats/checkpoint.md.
  Status SaveState(std::string* out) const;
  // The same bytes, streamed: sink.Begin(their exact size) — found by a first, counting walk
  // of the state — then sink.Write for pieces of about `chunk` bytes, assembled in `buffer`
  // (its capacity is reused between calls). Memory: one piece, not a copy of the state.
  // The engine must not change between the two walks (the caller holds it).
  Status SaveStateTo(StateSink& sink, std::string* buffer, size_t chunk = size_t{1} << 20) const;
  // Replaces all state. On error the engine is left empty. `now_ns`: the processing time of
  // the restore; the state's processing-time stamps later than it (a device's last event,
  // its next early firing, the last tick: the data dir was written while the clock was
  // ahead) are clamped to it, so a restart with an earlier clock does not stall idle
  // finalization and early firings until the clock is back there. The default clamps none.
  Status RestoreState(std::string_view data, int64_t now_ns = std::numeric_limits<int64_t>::max());

  // Starts a recovery epoch; call after RestoreState when resuming after a restart, before
  // processing anything. Early firings depend on processing time, so the run that crashed
  // may have emitted, after its last checkpoint, versions of a key that the replay would
  // emit again with other content (sinks ignore an equal or lower version). From here on
  // every key's versions are above epoch << 32 (epoch = restored epoch + 1, saved in
  // checkpoints), i.e. above anything a previous run emitted (< 2^32 emissions per key per
  // run). The caller must persist a checkpoint carrying the new epoch before it emits.
  //
  // `at_least`: the new epoch is at least this (a data dir's highest epoch so far, when the
  // state is rebuilt from the log without a checkpoint: app/engine_epoch.h).
  void BeginRecoveryEpoch(uint32_t at_least = 0);
  uint32_t version_epoch() const;

  const EngineOptions& options() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace joule::stream

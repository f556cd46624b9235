// Internal state of the WindowEngine, shared by window_engine.cc and checkpoint.cc.
// Not part of the public API.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "model/aggregate_record.h"
#include "stream/chunked_log.h"
#include "stream/flat_key_set.h"
#include "stream/local_day.h"
#include "stream/window_engine.h"

namespace joule::stream {

inline constexpr int64_t kMinTime = std::numeric_limits<int64_t>::min() / 4;
inline constexpr int64_t kMaxTime = std::numeric_limits<int64_t>::max() / 4;

// Event ids: FNV-1a, finalized with a 64-bit mixer. Checkpoints store these hashes
// (docs/formats/checkpoint.md): the function must never change.
inline uint64_t HashEventId(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  return h;
}

// Device ids, for the in-memory device index only (rebuilt when a checkpoint is read):
// eight bytes per step instead of one (FNV-1a was ~65 instructions per event).
inline uint64_t HashDeviceId(std::string_view s) {
  const char* p = s.data();
  size_t n = s.size();
  auto word = [](const char* q) {
    uint64_t w;
    std::memcpy(&w, q, 8);
    return w;
  };
  auto mix = [](uint64_t h, uint64_t w) {
    h = (h ^ w) * 0xbf58476d1ce4e5b9ULL;
    return h ^ (h >> 31);
  };
  // The length goes through the mixer first: xored straight into the first word it could
  // cancel a difference in that word's low byte ("abaaa" and "abaaaa").
  uint64_t h = mix(0x9e3779b97f4a7c15ULL, n);
  if (n >= 8) {
    const char* end = p + n;
    for (; n >= 8; p += 8, n -= 8) h = mix(h, word(p));
    if (n > 0) h = mix(h, word(end - 8));  // the last bytes, overlapping the word before
  } else if (n >= 4) {
    uint32_t a, b;
    std::memcpy(&a, p, 4);
    std::memcpy(&b, p + n - 4, 4);
    h = mix(h, (uint64_t{a} << 32) | b);
  } else if (n > 0) {
    h = mix(h, (uint64_t{static_cast<unsigned char>(p[0])} << 16) |
                   (uint64_t{static_cast<unsigned char>(p[n / 2])} << 8) |
                   static_cast<unsigned char>(p[n - 1]));
  }
  h *= 0x94d049bb133111ebULL;
  return h ^ (h >> 32);
}

// An interned metric name as BytesEqual compares it: its length and its first and last
// word (8 bytes for 8–16-byte names, 4 for 4–7), loaded once. Matches(s) is BytesEqual of s
// and the name without loading the name's bytes; names of other lengths compare in full.
struct NameKey {
  uint64_t head = 0, tail = 0;
  size_t len = 0;

  static NameKey Of(std::string_view s) {
    NameKey k;
    k.len = s.size();
    const char* p = s.data();
    if (k.len >= 8 && k.len <= 16) {
      std::memcpy(&k.head, p, 8);
      std::memcpy(&k.tail, p + k.len - 8, 8);
    } else if (k.len >= 4 && k.len < 8) {
      uint32_t a, b;
      std::memcpy(&a, p, 4);
      std::memcpy(&b, p + k.len - 4, 4);
      k.head = a;
      k.tail = b;
    }
    return k;
  }
  // s equals `full`, the name this key was made of.
  [[gnu::always_inline]] bool Matches(std::string_view s, const std::string& full) const {
    const size_t n = s.size();
    if (n != len) return false;
    const char* p = s.data();
    if (n >= 8 && n <= 16) {
      uint64_t a, b;
      std::memcpy(&a, p, 8);
      std::memcpy(&b, p + n - 8, 8);
      return ((a ^ head) | (b ^ tail)) == 0;
    }
    if (n >= 4 && n < 8) {
      uint32_t a, b;
      std::memcpy(&a, p, 4);
      std::memcpy(&b, p + n - 4, 4);
      return ((a ^ head) | (b ^ tail)) == 0;
    }
    return std::memcmp(p, full.data(), n) == 0;
  }
};

enum ResIndex : int { kBaseRes = 0, kHourRes = 1, kDayRes = 2, kNumRes = 3 };

// Accumulator of one metric in one window (88 bytes). The interval-derived pair depends on
// the metric's kind: power → (x = energy_wh, y = covered_ns), counter → (x = delta,
// y = resets), gauge → unused (0, 0).
struct Acc {
  uint64_t count = 0;
  double min = 0, max = 0, sum = 0, first = 0, last = 0;
  int64_t first_t = 0, last_t = 0;
  double x = 0;
  int64_t y = 0;
  bool present = false;  // the metric appears in the record
  // Open base windows that received an out-of-order sample: `sum` (sum_stale) or the
  // interval pair (iv_stale) is to be recomputed from the history before it is read
  // (WindowEngine::Impl::CleanWindow). Always false in final windows and rollups.
  bool sum_stale = false;
  bool iv_stale = false;

  void AddSample(int64_t t, double v) {
    if (count == 0) {
      min = max = first = last = v;
      first_t = last_t = t;
    } else {
      if (v < min) min = v;
      if (v > max) max = v;
      // Equal times are ordered by value (SampleBefore), whatever the arrival order.
      if (t < first_t || (t == first_t && v < first)) {
        first_t = t;
        first = v;
      }
      if (t > last_t || (t == last_t && v >= last)) {
        last_t = t;
        last = v;
      }
    }
    sum += v;
    ++count;
    present = true;
  }
  bool operator==(const Acc&) const = default;
};

struct DayLabel {
  std::string local_date;
  std::string timezone;
};

// One cache line of what every access reads first (bounds, version, count, accumulators),
// then what emission and rollups need.
struct alignas(64) Window {
  int64_t start = 0, end = 0;
  uint64_t version = 0;  // version of the last emission (0 = never emitted)
  uint64_t count = 0;    // events
  std::vector<Acc> acc;  // by device metric id
  uint8_t res = kBaseRes;
  bool final = false;        // a final record has been emitted
  bool dirty_final = false;  // final and changed since its last emission
  bool stale = false;        // some accumulator is sum_stale or iv_stale
  // Open windows: whether an early (non-final) record was emitted, and the fingerprint of
  // its content, to emit only when the content changed (EarlyFingerprint).
  bool has_early = false;
  // Scratch during early firing: the window's index among its device's open rollups
  // (a handful; the pass gives at most 32,767 an index), -1 = none. 16 bits keep the
  // window in two cache lines.
  int16_t view_slot = -1;
  uint64_t early_fp = 0;
  Window* hour = nullptr;  // base windows: their rollups
  Window* day = nullptr;
  // Final windows being changed (Touch → EmitDirty): the content before the change.
  uint64_t snapshot_count = 0;
  std::vector<Acc> snapshot;
  // Day windows: their local date and the zone it was taken in (null in base and hour
  // windows, which are nearly all of them: 64 bytes of strings each otherwise).
  std::unique_ptr<DayLabel> day_label;

  std::string_view local_date() const {
    return day_label ? std::string_view(day_label->local_date) : std::string_view();
  }
  std::string_view timezone() const {
    return day_label ? std::string_view(day_label->timezone) : std::string_view();
  }
};
// Two cache lines (with the strings inline it was three; the final windows kept for
// allowed_lateness are most of a slow device's state: docs/OPERATIONS.md, "Memory").
static_assert(sizeof(Window) == 128);

// A 64-bit fingerprint of a window's content (event count and accumulators, compared as
// Acc::operator== compares them: +0.0 and -0.0 alike). Early firings emit a window only
// when its fingerprint changed; two different contents share one with probability 2^-64.
uint64_t EarlyFingerprint(uint64_t count, const Acc* acc, size_t n);

struct Sample {
  int64_t t;
  double v;
};

struct MetricState {
  uint32_t name = 0;  // WindowEngine::Impl::metric_names index
  model::MetricKind kind = model::MetricKind::kGauge;
  // Samples in event-time order (equal times: by value). Power and counter metrics keep
  // them back to the eviction horizon plus one before it (interval recomputation for late
  // events); gauges back to the start of the watermark's window (the open windows, whose
  // sample statistics are recomputed in time order when an event arrives out of order).
  // Counters: the baseline after each sample (CONTRACT §2: the last accepted reading). It
  // equals the sample's own value except after "noise" (a reading below the baseline but
  // within 10 % of it, which leaves the baseline where it was), so `baseline` stays empty
  // — baseline j is hist[j].v, 8 bytes a sample saved — until one differs or an event
  // arrives out of order; from then on it parallels `hist` (BaselineAt).
  ChunkedLog<Sample> hist;
  ChunkedLog<double> baseline;  // counters only (empty otherwise)

  double BaselineAt(size_t j) const { return baseline.empty() ? hist[j].v : baseline[j]; }
  double BaselineBack() const { return baseline.empty() ? hist.back().v : baseline.back(); }
  // After hist.push_back: records `b`, the baseline after the newest sample.
  void PushBaseline(double b) {
    if (!baseline.empty()) {
      baseline.push_back(b);
    } else if (std::bit_cast<uint64_t>(b) != std::bit_cast<uint64_t>(hist.back().v)) {
      MaterializeBaseline(hist.size() - 1);
      baseline.push_back(b);
    }
  }
  // Stores the baselines of the first n samples (each its sample's value), so that
  // `baseline` parallels hist[0, n). REQUIRES: baseline is empty.
  void MaterializeBaseline(size_t n) {
    for (size_t j = 0; j < n; ++j) baseline.push_back(hist[j].v);
  }
  // Before a sample is inserted into hist: stores every baseline (the insertion's
  // recomputation edits them in the middle).
  void StoreBaselines() {
    if (baseline.empty()) MaterializeBaseline(hist.size());
  }
  // After a restore: forgets the stored baselines when each is its sample's value.
  void CompactBaselines() {
    if (baseline.size() != hist.size()) return;
    for (size_t j = 0; j < baseline.size(); ++j) {
      if (std::bit_cast<uint64_t>(baseline[j]) != std::bit_cast<uint64_t>(hist[j].v)) return;
    }
    baseline.clear();
  }
};
// Read on every event, one entry per metric of the event: 4 metrics in 3.5 cache lines.
static_assert(sizeof(MetricState) == 56);

// The order of samples in a history: by time, equal times by value (so that the order, and
// every sum folded in it, does not depend on arrival order).
inline bool SampleBefore(int64_t t, double v, const Sample& s) {
  return t < s.t || (t == s.t && v < s.v);
}

// An in-order event kept back instead of being folded at once (Device::pend): its time,
// its ingest time (for the clock-skew ring) and its values, by metric id. One cache line.
struct alignas(64) PendingRow {
  int64_t t;
  int64_t received_at;
  static constexpr size_t kMaxValues = 6;
  double v[kMaxValues];
};

// Cache-line-aligned, fields grouped by line: lines 0 and 1 are read by every event (and
// line 0 by every Tick); lines 2–4 by every event that is folded (line 5 too for events
// with an event_id); the rest only by emission, early firings, idle ticks and day rolls.
// WindowEngine::ProcessBatch prefetches them a few events ahead.
//
// Pending rows (README "Tenth pass"): an event later than every earlier one of its device,
// inside the base window of the device's latest event, with the device's metrics in the
// device's order, whose folding would emit nothing (no window reaches the watermark, no
// early firing is due), is written as one PendingRow on line 1's neighbours instead of
// being folded into the metric table, the histories and the window's accumulators (~20
// lines scattered over the heap). Up to kPendRows rows are folded together, in arrival
// order and by the same code, before anything reads or changes the device's state
// otherwise (FlushPending: the device's next other event, Tick's visit, Health, a
// checkpoint, a correction). The fields that decide later events (max_t, wm, last_seen,
// the counters, the event-id set) are updated at once, so every record is the one folding
// at once would emit.
struct alignas(64) Device {
  // Line 0.
  int64_t max_t = kMinTime;
  int64_t wm = kMinTime;            // max_t − out_of_orderness (or max_t after an idle flush)
  int64_t fin_wm = kMinTime;        // idle finalization threshold
  int64_t last_seen = 0;            // processing time of the last event
  int64_t next_early = 0;           // processing time of the next early firing
  int64_t next_evict = 0;           // processing time of the next eviction pass (not saved)
  int64_t min_open_end = kMinTime;  // lower bound of the ends of non-final windows
  bool has_events = false;
  // Parked by Tick (silent, idle-finalized): due at the next idle closing of an open
  // window instead of at its silence deadline, until an event un-parks it (ProcessOn).
  // On line 0 (padding), which every event reads anyway.
  bool parked = false;
  uint32_t skew_n = 0;
  // Line 1.
  std::string id;
  // Whether the next in-order event may be pended (shape_n > 0): the device's metrics'
  // name ids (Impl::metric_names) in id order, and the start of the base window holding
  // max_t (d.last_base, open). Set by the slow path after an in-order event that carried
  // every metric of the device in id order; cleared by everything else.
  static constexpr size_t kPendRows = 8;
  int64_t cur_start = 0;
  uint16_t shape[PendingRow::kMaxValues] = {};
  uint8_t shape_n = 0;
  uint8_t pend_n = 0;      // rows in pend
  uint8_t pend_no_id = 0;  // bit k: row k's event had no event_id (its time goes to seen_ts)
  uint64_t events = 0;     // on this line: every event counts, a pended one too
  // Line 2.
  alignas(64) std::vector<MetricState> metrics;  // by metric id (order of first appearance)
  Window* last_base = nullptr;                   // lookup cache
  // Every metric's history holds all of its samples at or after this time (the sample
  // statistics of a base window starting here or later can be recomputed from them).
  int64_t complete_from = kMinTime;
  // Eviction has freed the windows ending at or before this time and the samples before
  // it (Evict). An out-of-order event that would need them is too late however near the
  // watermark it is (after an outage the idle finalization evicts by processing time).
  int64_t evicted_to = kMinTime;
  // Line 3. De-duplication of events without an event_id: their timestamps, sorted (in
  // chunks, like the histories: growing never copies it, expiry frees whole chunks).
  alignas(64) ChunkedLog<int64_t> seen_ts;
  std::vector<Window*> dirty;  // final windows changed since emission
  uint64_t duplicates = 0;
  // Line 4. De-duplication of events with an event_id: a hash of it, with the event time
  // (for expiry).
  alignas(64) FlatKeySet dedup;
  uint64_t late_updates = 0, late_dropped = 0;
  size_t first_open[kNumRes] = {0, 0, 0};  // per resolution, the first non-final window
  std::vector<Window*> win[kNumRes];       // sorted by start

  // Pending rows (see above), folded in order by FlushPending.
  PendingRow pend[kPendRows];

  // Colder: emission order, clock-skew ring, timezone.
  std::vector<uint32_t> by_name;  // metric ids sorted by name (emission order)
  static constexpr int kSkewRing = 16;
  // Ingest time (received_at) of the latest-received event, written with the skew ring: the
  // "last seen" of Health (last_seen is processing time, which for events replayed from the
  // log after a restart is the restart; found by a black-box test). The last one in log
  // (arrival) order, not the largest: after the server's clock stepped back, the largest
  // stayed in the future, and silent_seconds 0, for the step's length. 0 = none recorded.
  int64_t last_received = 0;
  int64_t skew[kSkewRing] = {};
  std::string timezone = "UTC";
  const date::time_zone* zone = nullptr;
  int64_t latest_day_end = kMinTime;
  // Its position in Impl::devices, set by Tick when it parks the device (`parked`).
  uint32_t tick_index = 0;

  // Device blocks come from huge-page slabs (ChunkPool, as the histories' chunks): at 10k
  // devices an event's device block is never in cache, and on 4 KB pages neither is its
  // page's TLB entry (README "Tenth pass").
  static void* operator new(size_t bytes);
  static void* operator new(size_t bytes, std::align_val_t);
  static void operator delete(void* p);
  static void operator delete(void* p, std::align_val_t);
};
using DevicePool = ChunkPool<sizeof(Device)>;
inline void* Device::operator new(size_t) { return DevicePool::Alloc(); }
inline void* Device::operator new(size_t, std::align_val_t) { return DevicePool::Alloc(); }
inline void Device::operator delete(void* p) { DevicePool::Free(p); }
inline void Device::operator delete(void* p, std::align_val_t) { DevicePool::Free(p); }

struct WindowEngine::Impl {
  Impl(EngineOptions o, TimezoneProvider* tz);
  ~Impl();

  EngineOptions opt;
  TimezoneProvider* tzp;
  ZoneCache zones;
  std::vector<std::unique_ptr<Device>> devices;
  // By device index: the processing time from which Tick must visit the device (the
  // earliest of its idle, early-firing and eviction deadlines when last visited; kMinTime
  // for devices not visited yet). Tick reads 8 bytes per device that is not due instead of
  // a line of it.
  std::vector<int64_t> tick_due;
  // Scratch of Tick: the indices of the devices it visits, so that its prefetches run a
  // number of visits ahead (a number of indices ahead was a fraction of a visit when a
  // fifth of the devices were due).
  std::vector<uint32_t> tick_visits;
  // device id → index into `devices`: open addressing over (hash, index + 1) slots, so a
  // lookup touches one slot and the device itself.
  struct Slot {
    uint64_t hash = 0;
    uint32_t index = 0;  // 0 = empty, else devices index + 1
  };
  std::vector<Slot> index;
  Device* FindDevice(std::string_view id, uint64_t hash) const;
  void IndexDevice(uint64_t hash, uint32_t i);
  Device* last_device = nullptr;

  // Window pool. (Windows are allocated one by one, each next to its accumulators, which
  // are allocated right after it: slabs of 64 windows cost ~15 % more time in the engine
  // step of bench/core_throughput, with fewer instructions — see README "Fifth pass".)
  std::vector<Window*> free_windows;
  Window* NewWindow();
  void FreeWindow(Window* w);

  uint64_t events = 0, duplicates = 0, late_updates = 0, late_dropped = 0, emitted = 0;
  // Events not later than their device's latest (late ones included). Not checkpointed:
  // counts from the engine's start or restore.
  uint64_t out_of_order = 0;
  uint64_t tick_visit_count = 0;  // Stats::tick_visits (not checkpointed)
  int64_t last_tick = kMinTime;
  // Recovery epoch (BeginRecoveryEpoch): every window's version is at least epoch << 32.
  uint32_t version_epoch = 0;
  uint64_t VersionFloor() const { return static_cast<uint64_t>(version_epoch) << 32; }

  // Scratch.
  model::AggregateRecord rec;
  // rec.metrics[k].name is metric_names[rec_names[k]] (kNoName: not known), so emission
  // compares name ids instead of strings.
  static constexpr uint32_t kNoName = UINT32_MAX;
  std::vector<uint32_t> rec_names;
  struct ViewSlot {
    Window* w;
    uint64_t count;
    size_t n;              // accumulators in use (the window's, grown by what lands in it)
    std::vector<Acc> acc;  // sized to the device's metric count
  };
  std::vector<ViewSlot> view;
  size_t view_n = 0;

  // Metric names, interned: devices refer to them by index, so a device's metric table is
  // small and name comparisons read these (shared, cache-resident) strings.
  std::vector<std::string> metric_names;
  // By name index: the name's length and first and last word, so that checking an event's
  // metric name against a device's loads only the event's bytes (NameKey::Matches).
  std::vector<NameKey> name_keys;
  std::map<std::string, uint32_t, std::less<>> metric_name_ids;
  // By name index: the metric kind a new metric of that name gets (EngineOptions::kinds,
  // else model::DefaultMetricKind), resolved once per name.
  std::vector<model::MetricKind> metric_kinds;
  uint32_t InternMetricName(std::string_view name);
  const std::string& NameOf(const MetricState& ms) const { return metric_names[ms.name]; }

  // nullptr: a new device whose zone the TimezoneProvider cannot say now.
  Device* GetDevice(std::string_view id);
  // Folds an event later than every earlier event of the device into its windows (samples
  // by metric id). The checkpoint reader replays a format-3 file's pending events with it.
  void FoldInOrder(Device& d, int64_t t, size_t n, const uint32_t* ids, const double* values);
  // Pending rows (Device::pend). TryPend keeps an event back when it may: kPended (the
  // event is applied), kDuplicate (dropped and counted, as ProcessOn would), kNotPended
  // (nothing changed: the slow path must process it). FlushPending folds the device's
  // rows; FlushAll every device's. Neither emits: a row is pended only when folding it
  // would not.
  enum PendResult { kNotPended, kPended, kDuplicate };
  PendResult TryPend(Device& d, const model::Event& ev, int64_t now_ns);
  void FlushPending(Device& d);
  void FlushAll();
  // After the slow path folded an in-order event: whether the next may be pended.
  void UpdatePendable(Device& d, const model::Event& ev, const uint32_t* ids);
  // Recomputes what out-of-order samples left stale in an open base window (Acc::sum_stale,
  // Acc::iv_stale); every reader of a base window's accumulators calls it first.
  void CleanWindow(Device& d, Window* w);
  // WindowEngine::Process for an event of device d.
  // Returns false for a duplicate (dropped and counted).
  bool ProcessOn(Device& d, const model::Event& ev, int64_t now_ns, RecordSink* sink);
  // The device's id for a metric name (registered on first sight). `guess` is tried first:
  // the event's position of the metric, which is its id when events keep one order.
  uint32_t MetricId(Device& d, size_t guess, std::string_view name);
  void ResetState();
  int64_t DedupHorizon() const {
    return opt.dedup_horizon_ns > 0 ? opt.dedup_horizon_ns
                                    : opt.allowed_lateness_ns + opt.out_of_orderness_ns;
  }
  // An event at or before its device's latest is too late before this time: past
  // allowed_lateness behind the device's own watermark (CONTRACT §2; not the idle
  // watermark, which runs on with processing time while the device is silent), or where
  // its interval (max_gap back) could need a window or sample eviction freed.
  int64_t LateBefore(const Device& d) const {
    return std::max(d.wm - opt.allowed_lateness_ns, d.evicted_to + opt.max_gap_ns);
  }
  // De-duplication keys older than this are not needed: their events would be too late
  // (the de-duplication horizon behind the watermark, or what eviction freed).
  int64_t DedupBefore(const Device& d) const {
    return std::max(d.wm - DedupHorizon(), d.evicted_to + opt.max_gap_ns);
  }
};

}  // namespace joule::stream

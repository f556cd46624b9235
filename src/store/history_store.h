// HistoryStore: every aggregated record of every resolution, for the history API
// (CONTRACT §3) and as the realtime fallback when the latest store is empty.
// Backends: RocksDB (`rocksdb/`, the production store; format in docs/formats/history.md)
// and memory (`history_memory/`, a fake for unit tests of its users).
//
// Contract of every backend:
// - Thread-safe: any number of threads may call any method concurrently.
// - Versioned upserts: per (device, resolution, window_start) the record with the highest
//   version is kept; a Put of a lower or equal version is ignored (and counted). Re-delivery
//   is therefore idempotent.
// - Retention (HistoryRetention): a record whose window_start < now − retention of its
//   resolution is expired. Reads never return expired records and Put skips them; backends
//   reclaim their space in the background.
// - Durability (RocksDB): after Put returns, records survive a process crash; after Flush
//   returns, they survive power loss.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/crc32c.h"
#include "common/status.h"
#include "model/aggregate_record.h"

namespace joule::store {

struct HistoryQuery {
  std::string device_id;
  model::Resolution resolution = model::Resolution::kBase;
  int64_t from_ns = 0;  // inclusive: window_start >= from_ns
  int64_t to_ns = 0;    // exclusive: window_start < to_ns
  size_t limit = 0;     // REQUIRES: >= 1; records per page
  std::string cursor;   // opaque, from a previous page's next_cursor; empty = first page
};

struct HistoryPage {
  std::vector<model::AggregateRecord> records;  // oldest first
  std::string next_cursor;                      // empty = no more
};

// What a sum of energies needs from one record (the owner energy route), read without
// decoding the rest. `local_date` points into the stored value or the record: valid only
// during the visit.
struct HistoryEnergyFields {
  int64_t window_end_ns = 0;
  std::string_view local_date;  // 1d records; empty otherwise
  bool metric_found = false;    // the record has the metric asked for
  model::MetricKind kind = model::MetricKind::kGauge;
  double energy_wh = 0;
  double delta = 0;
};

// One record of a Scan before it is decoded: the window start and the version are read
// without decoding the rest (the key and the value's first bytes). Valid only during the
// visit.
class HistoryEntry {
 public:
  int64_t window_start_ns = 0;
  uint64_t version = 0;
  // The whole record. Corruption when the stored value is malformed.
  virtual Result<model::AggregateRecord> Decode() const = 0;
  // Decode()'s window end, local date and, of the metric named `metric`, its kind,
  // energy_wh and delta; the rest is checked as Decode() checks it (Corruption exactly
  // when Decode() would fail) but not kept. This default decodes the whole record into
  // `*scratch`, which `local_date` then points into.
  virtual Status DecodeEnergy(std::string_view metric, HistoryEnergyFields* out,
                              model::AggregateRecord* scratch) const {
    Result<model::AggregateRecord> r = Decode();
    if (!r.ok()) return r.status();
    *scratch = std::move(r).value();
    *out = HistoryEnergyFields{};
    out->window_end_ns = scratch->window_end_ns;
    out->local_date = scratch->local_date;
    if (const model::MetricAggregate* m = scratch->FindMetric(metric)) {
      out->metric_found = true;
      out->kind = m->kind;
      out->energy_wh = m->energy_wh;
      out->delta = m->delta;
    }
    return Status::Ok();
  }

 protected:
  ~HistoryEntry() = default;
};
// Returns a non-OK status to stop the scan with that status.
using HistoryVisitor = std::function<Status(const HistoryEntry&)>;

// Retention per resolution in nanoseconds; 0 = keep forever.
struct HistoryRetention {
  int64_t base_ns = 30 * kNanosPerDay;
  int64_t hour_ns = 730 * kNanosPerDay;
  int64_t day_ns = 0;

  static HistoryRetention Forever() { return {0, 0, 0}; }
  int64_t For(model::Resolution r) const {
    switch (r) {
      case model::Resolution::kBase:
        return base_ns;
      case model::Resolution::kHour:
        return hour_ns;
      case model::Resolution::kDay:
        return day_ns;
    }
    return 0;
  }
  // The smallest window_start that is not expired at `now_ns`.
  int64_t Horizon(model::Resolution r, int64_t now_ns) const {
    const int64_t keep = For(r);
    if (keep <= 0) return std::numeric_limits<int64_t>::min();
    if (now_ns < std::numeric_limits<int64_t>::min() + keep) {
      return std::numeric_limits<int64_t>::min();
    }
    return now_ns - keep;
  }
};

class HistoryStore {
 public:
  virtual ~HistoryStore() = default;
  // Versioned upserts: a record with a lower or equal version than the stored one for the
  // same (device, resolution, window_start) is ignored. Batched for throughput; thread-safe.
  // Within one call, records are applied in order. InvalidArgument (and nothing written)
  // when a record has an empty or over-long (> 255 bytes) device_id.
  virtual Status Put(const std::vector<model::AggregateRecord>& records) = 0;
  // Records of q.device_id and q.resolution with window_start in [from_ns, to_ns), oldest
  // first, at most q.limit, and a cursor for the rest. InvalidArgument for limit 0, an empty
  // device id, or a cursor that is malformed or belongs to another query.
  virtual Result<HistoryPage> Range(const HistoryQuery& q) = 0;
  // The page Range would return, handed to `visit` record by record (oldest first) without
  // decoding what the caller does not ask for: for callers that keep their own encoding of
  // a (window_start, version), such as the API's record JSON cache. Returns the page's
  // next_cursor (empty = no more). `visit` must not call into the store.
  virtual Result<std::string> Scan(const HistoryQuery& q, const HistoryVisitor& visit) = 0;
  virtual Result<std::optional<model::AggregateRecord>> Get(std::string_view device_id,
                                                            model::Resolution r,
                                                            int64_t window_start_ns) = 0;
  // Latest N records of a resolution for a device, newest first (realtime fallback when the
  // latest store is empty).
  virtual Result<std::vector<model::AggregateRecord>> Latest(std::string_view device_id,
                                                             model::Resolution r, size_t n) = 0;
  virtual Status Flush() = 0;  // make everything Put so far durable (WAL sync)

  // Called by Put, after its records are written and visible to reads and before Put
  // returns, with each record it wrote (not those ignored as stale or expired). For
  // readers that keep what they read (the API's record JSON cache) and must see every
  // later write. One observer; set it before the store is shared between threads. It must
  // not call into the store and may run on any writer's thread, concurrently.
  using WriteObserver = std::function<void(const model::AggregateRecord&)>;
  virtual void SetWriteObserver(WriteObserver observer) = 0;
  // The smallest window_start of resolution `r` that reads return now (retention).
  virtual int64_t ReadHorizon(model::Resolution r) const = 0;
};

// The pagination cursor shared by all backends (docs/formats/history.md, "Pagination
// cursor"): 14 bytes as 28 hex characters.
namespace history_cursor {

inline uint32_t DeviceTag(std::string_view device_id) { return crc32c::Value(device_id); }

inline std::string Encode(const HistoryQuery& q, int64_t next_window_start_ns) {
  unsigned char b[14];
  b[0] = 1;
  b[1] = static_cast<unsigned char>(q.resolution);
  const uint32_t tag = DeviceTag(q.device_id);
  for (int i = 0; i < 4; ++i) b[2 + i] = static_cast<unsigned char>(tag >> (24 - 8 * i));
  const auto u = static_cast<uint64_t>(next_window_start_ns);
  for (int i = 0; i < 8; ++i) b[6 + i] = static_cast<unsigned char>(u >> (56 - 8 * i));
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(28);
  for (unsigned char c : b) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

// The first window_start of the page q asks for: q.from_ns without a cursor.
inline Result<int64_t> Start(const HistoryQuery& q) {
  if (q.cursor.empty()) return q.from_ns;
  auto bad = [] { return Status::InvalidArgument("invalid history cursor"); };
  if (q.cursor.size() != 28) return bad();
  unsigned char b[14];
  for (size_t i = 0; i < 14; ++i) {
    int v = 0;
    for (size_t j = 0; j < 2; ++j) {
      const char c = q.cursor[2 * i + j];
      int d;
      if (c >= '0' && c <= '9') {
        d = c - '0';
      } else if (c >= 'a' && c <= 'f') {
        d = c - 'a' + 10;
      } else {
        return bad();
      }
      v = v * 16 + d;
    }
    b[i] = static_cast<unsigned char>(v);
  }
  if (b[0] != 1 || b[1] != static_cast<unsigned char>(q.resolution)) return bad();
  uint32_t tag = 0;
  for (int i = 0; i < 4; ++i) tag = (tag << 8) | b[2 + i];
  if (tag != DeviceTag(q.device_id)) return bad();
  uint64_t u = 0;
  for (int i = 0; i < 8; ++i) u = (u << 8) | b[6 + i];
  const auto start = static_cast<int64_t>(u);
  if (start < q.from_ns || start >= q.to_ns) return bad();
  return start;
}

}  // namespace history_cursor

// Checks the arguments every backend rejects the same way.
inline Status ValidateHistoryQuery(const HistoryQuery& q) {
  if (q.device_id.empty() || q.device_id.size() > 255) {
    return Status::InvalidArgument("history query: device_id must be 1..255 bytes");
  }
  if (q.limit == 0) return Status::InvalidArgument("history query: limit must be >= 1");
  if (static_cast<uint8_t>(q.resolution) > 2) {
    return Status::InvalidArgument("history query: unknown resolution");
  }
  return Status::Ok();
}

}  // namespace joule::store

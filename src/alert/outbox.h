// Outbox: the durable queue of webhook deliveries, so that an alert that fired is
// delivered at least once even across SIGKILL. An append-only file
// ({data_dir}/alerts/outbox.log, format in docs/formats/alert_outbox.md):
//   one line per entry: "<crc32c of the JSON, 8 hex> <JSON>\n"
//   {"op":"add", "id", "alert_id", "event", "url", "secret", "body", "created_ns", "trigger_ns"}
//   {"op":"attempt", "id", "attempts", "error"}
//   {"op":"done", "id", "result": "delivered" | "dead"}
// Recovery reads until the first damaged line (a torn tail from a crash) and truncates
// it. Add() returns after the entry is fsynced, so the caller may then commit the alert
// state: a crash in between re-derives the same transition, whose webhook-id is
// deterministic, and Add() of a known id is a no-op. When most of the file is finished
// entries it is rewritten (temp file, fsync, rename, fsync dir).
//
// Bounded: at most `capacity` pending (unfinished) deliveries. When full, Add() refuses
// the new delivery with ResourceExhausted and counts it for its alert (`dropped`); the
// caller counts it in joule_alert_deliveries_dropped_total. The alert's state, SSE event
// and API view are unaffected; nothing is dropped silently.
//
// A write that fails (a full disk: ENOSPC) loses nothing: the outbox is then *behind* —
// memory holds the truth (the delivery is accepted, pending, handed to its worker and sent;
// attempts and finishes are recorded in memory) and nothing more is appended to the file;
// CatchUp() (the engine: every tick) rewrites the file from memory as a compaction does, and
// once that succeeds appends go on. Memory stays bounded by `capacity`. While behind, a
// kill -9 loses the deliveries accepted since (re-sent only if the replay re-derives them)
// and re-sends those finished since (at-least-once). A failed fsync is still fatal. Until
// session 34 such a delivery was dropped for good: never sent, not even after space came
// back (found by a black-box test).
//
// Thread-safe (one mutex; appends are short).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/status.h"

namespace joule::alert {

struct Delivery {
  std::string id;  // webhook-id, the same on every attempt
  std::string alert_id;
  std::string event;
  std::string url;
  std::string secret;
  std::string body;
  int64_t created_ns = 0;
  int64_t trigger_ns = 0;  // receipt (processing) time of what triggered it
  int attempts = 0;
  std::string last_error;
};

// What GET /v1/alerts shows about an alert's deliveries.
struct DeliveryStatus {
  int pending = 0;
  int delivered = 0;
  int dead = 0;
  int dropped = 0;  // refused because the outbox was full (since start; not durable)
  int attempts = 0;
  std::string last_error;
};

class Outbox {
 public:
  // Opens (creating the directory and file) and recovers pending deliveries.
  static Result<std::unique_ptr<Outbox>> Open(std::string dir, bool fsync = true,
                                              size_t capacity = kDefaultCapacity);
  static constexpr size_t kDefaultCapacity = 100000;
  ~Outbox();

  // Durable once it returns ok, unless the outbox is behind (above: kept in memory until
  // CatchUp writes it). Returns false (and writes nothing) for a known id;
  // ResourceExhausted (and writes nothing) when `capacity` deliveries are pending.
  Result<bool> Add(const Delivery& delivery);
  // While behind: rewrites the file from memory (temp file, fsync, rename). Ok when the
  // file holds everything again (or was not behind).
  Status CatchUp();
  // Whether the file lacks changes kept in memory (a write failed).
  bool behind() const;
  Status RecordAttempt(const std::string& id, int attempts, const std::string& error);
  // `attempts`: how many this delivery took, the last one included (0: not counted). A
  // delivered one clears its alert's last_error unless another of its deliveries is still
  // failing.
  Status Finish(const std::string& id, bool delivered, int attempts = 0);

  std::vector<Delivery> Pending() const;
  std::optional<DeliveryStatus> StatusOf(const std::string& alert_id) const;
  size_t pending_count() const;
  size_t capacity() const { return capacity_; }
  uint64_t dead_count() const;

  // Tests: called before each write to the file; a nonzero result is the errno the write
  // fails with (nothing written). Unset: no fault.
  void SetWriteFaultForTest(std::function<int()> fault);

 private:
  Outbox(std::string path, bool fsync, size_t capacity)
      : path_(std::move(path)), fsync_(fsync), capacity_(capacity) {}
  Status Recover();
  // Appends a line (fsynced when `sync`). A failed write puts the outbox behind, as does
  // any append while behind (nothing is written then): memory is the truth until CatchUp.
  void AppendLocked(const std::string& json, bool sync = true);
  Status WriteLocked(int fd, const std::string& data);
  Status CompactLocked();
  void NoteLocked(const std::string& alert_id, int dpending, int ddelivered, int ddead);
  void NoteFinishLocked(const std::string& id, const std::string& alert_id, bool delivered,
                        int attempts);

  std::string path_;
  bool fsync_;
  size_t capacity_;
  int fd_ = -1;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Delivery> pending_;
  std::unordered_set<std::string> finished_ids_;
  std::unordered_map<std::string, DeliveryStatus> by_alert_;
  uint64_t dead_ = 0;
  uint64_t lines_ = 0;
  bool behind_ = false;  // the file lacks changes kept in memory (a write failed)
  std::function<int()> write_fault_;
};

}  // namespace joule::alert

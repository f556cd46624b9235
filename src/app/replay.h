// Replay: recomputes the 1m/1h/1d records of a time range from the raw archive with the
// window engine and writes those that differ from the stored ones, so events that arrived
// later than stream.allowed_lateness are folded in (docs/formats/archive.md, "Replay").
// Used by `joule replay` on a stopped server's data dir (replay_cli.h) and by the running
// server's replay jobs (replay_jobs.h, POST /v1/admin/replay).
//
// Which windows replay may write ("settled" windows). Let H(d) be the watermark of device
// d implied by the archive (its largest archived event time − out_of_orderness; or the
// live engine's watermark when that is larger). The live engine applies an event at time t
// only if t ≥ H − allowed_lateness, and such an event changes windows ending after
// t − max_gap at the earliest. Every event acknowledged after the archive snapshot is
// processed after all archived ones (one device = one log partition, read in order), when
// the engine's watermark is at least H(d). So a window with
//     window_end ≤ H(d) − allowed_lateness − max_gap
// can never be changed by the live engine again, and replay may write it; any other
// window is left to the live engine ("live"). The caller makes sure the archive holds
// every event acknowledged before the replay began (the server seals the archiver's open
// files first; `joule replay` on a stopped data dir runs the archiver over the log tail).
//
// Versions. For a settled window whose recomputed content differs from the stored record:
// version = max(stored + 1, kReplayVersionBase = 2^52). The live engine cannot change a
// settled window; it can only emit one again after a restart from a checkpoint older than
// the replay (re-emitting it without the folded-in events), and then with a version below
// (recovery epoch + 1) << 32 (stream README, "Recovery epochs"): 2^52 stays above that for
// 2^20 restarts, so the replayed record keeps winning under the sinks' keep-highest rule.
// 2^52 + n is still an exact JSON number in every reader (< 2^53). A later replay that
// finds new events writes stored + 1. Equal content (all fields but the version) →
// nothing is written, so a second replay of the same range is a no-op.
//
// Also left alone (counted): a recomputed record with less than the stored one — fewer
// events, a stored metric missing or with fewer samples, less covered time of a power metric:
// the archive lacks events the live engine saw (archive disabled or expired), in the window or
// in a neighbour within max_gap — "incomplete";
// and a record whose window starts past the history store's retention for its resolution —
// the store would drop the write and cannot say what the live engine had, so a difference
// handed to the rollups could count the window twice — "expired".
//
// Writes are collected over devices and committed in batches (journal, history, hand-over;
// see ReplayRequest::journal_dir); a cancelled replay commits nothing more, so what it
// wrote is complete per batch.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "app/checkpoint_correction.h"
#include "common/json_writer.h"
#include "common/status.h"
#include "store/history_store.h"
#include "store/latest_store.h"
#include "store/metadata_store.h"
#include "stream/window_engine.h"

namespace joule::app {

// Versions written by replay start here (see above).
inline constexpr uint64_t kReplayVersionBase = uint64_t{1} << 52;

struct ReplayRequest {
  std::string archive_dir;
  // Records whose window overlaps [from_ns − max_gap, to_ns + max_gap): a too-late event's
  // energy interval reaches up to max_gap into the neighbouring windows.
  int64_t from_ns = 0;
  int64_t to_ns = 0;
  std::set<std::string, std::less<>> devices;  // empty = every device in the archive
  stream::EngineOptions engine;
  bool dry_run = false;
  // The live engine's watermark of a device, when a server runs (false = unknown).
  std::function<bool(std::string_view device_id, int64_t* watermark_ns)> live_watermark;
  // The 1h/1d rollups above a settled base window written with new content that are not
  // settled are the live engine's (a running server's processors, or a stopped data dir's
  // checkpoints), which gets the difference (WindowEngine::CorrectBaseWindow): `hand_over`
  // gets a batch's corrections (`before` = the stored record, empty if there was none) once
  // the batch is in history. It returns true when the engines hold them durably (in a
  // written checkpoint), false when not yet; an error stops the replay.
  //
  // Crash safety (app/replay_journal.h): with `journal_dir` set, a batch with corrections is
  // first written to a journal there (fsynced), then to history, then handed over; the
  // journal is removed when `hand_over` returned true. A journal left by a crash (or by
  // false) is finished by RecoverReplayJournals at the next start.
  std::string journal_dir;
  std::function<Result<bool>(uint64_t journal_seq, const std::vector<BaseCorrection>&)> hand_over;
  // Restoring from the archive alone (app/restore_seed.h): when set, the archive is read to
  // its end (past to_ns + the usual tail), and this gets every device's events,
  // de-duplicated and in event-time order, with the end of its settled windows (the ones
  // this replay may write). Not called in a dry run.
  std::function<void(std::string_view device_id, const std::vector<model::Event>& events,
                     int64_t settled_end_ns)>
      device_events;
  // Writes are committed in batches of about this many records (memory bound).
  size_t batch_records = 100'000;
  // Checked between files and between devices: when set, the replay stops with
  // Unavailable (the batches committed so far stay; the one being collected is dropped).
  const std::atomic<bool>* cancel = nullptr;
};

struct ReplayStats {
  uint64_t events_read = 0;  // archive rows in the padded range, selected devices
  uint64_t duplicates = 0;   // dropped by identity (first copy wins)
  uint64_t devices = 0;
  uint64_t records_computed = 0;  // final records overlapping the range
  uint64_t records_written = 0;   // new versions
  uint64_t records_unchanged = 0;
  uint64_t records_live = 0;        // not settled: the live engine may still change them
  uint64_t records_incomplete = 0;  // less than stored (LacksStoredContent): left alone
  // window_start past the history store's retention (HistoryStore::ReadHorizon): neither
  // written nor handed to the rollups as a correction
  uint64_t records_expired = 0;
};

// Where a replay is, for progress reports (CLI lines, GET /v1/admin/replay/{id}).
struct ReplayProgress {
  std::string phase;  // "sealing", "reading", "computing", "done"
  uint64_t files_done = 0, files_total = 0;
  uint64_t devices_done = 0, devices_total = 0;
  ReplayStats stats;
};

// `latest` and `timezones` may be null. `progress` (may be empty) is called at phase
// changes and at most about once a second within a phase.
Result<ReplayStats> ReplayArchive(const ReplayRequest& request, store::HistoryStore* history,
                                  store::LatestStore* latest, stream::TimezoneProvider* timezones,
                                  const std::function<void(const ReplayProgress&)>& progress);

// The devices a replay selects: {device_id}, or every device of owner_id (from the
// metadata store; NotFound when it has none), or none (= all) when both are empty.
// NotFound too for a device_id the metadata store has never known (neither registered nor
// deleted), unless `unregistered_ids_archived` (auth.mode = "disabled": ingest then takes
// any id, so the archive may hold ids never registered).
Result<std::set<std::string, std::less<>>> ReplayDevices(store::MetadataStore* metadata,
                                                         const std::string& device_id,
                                                         const std::string& owner_id,
                                                         bool unregistered_ids_archived);

// The summary fields of a replay (events_read, …, records_expired) into an open JSON
// object (CLI stdout, the job's "result").
void WriteReplayStats(JsonWriter& w, const ReplayStats& stats);
// A one-line human-readable progress report.
std::string ReplayProgressLine(const ReplayProgress& progress);

}  // namespace joule::app

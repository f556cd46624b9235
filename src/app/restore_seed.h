// Restoring from the archive alone (docs/formats/archive.md, "A data dir whose log never held a
// record"; docs/OPERATIONS.md "Restore"): a new data dir's log never held a record, so its
// processors have no engine state, and the windows still open at the end of the archive (each
// device's last allowed_lateness + max_gap, its open hour and local day) would belong to no
// engine. `joule replay` of such a data dir writes the settled windows itself and seeds the
// processors' checkpoints with the engine state the archive's events give: every device's
// archive tail is processed, in event-time order, by one WindowEngine per processor (partition
// p → processor p % threads, as `joule serve` lays them out), and the state is written as
// processor-N.ckpt at log offset 0 of each partition, with each device's newest reading. The
// server then continues those windows: events arriving after the restore are added to them,
// every event counted once (the de-duplication keys are in the state), and the windows that
// ended meanwhile are finalized at its start (idle finalization). What the seeded engines
// emitted for the windows not settled is written to history with their (low) versions, so
// history shows them at once and every later emission of the server (a recovery epoch above)
// replaces them.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "model/event.h"
#include "store/history_store.h"
#include "store/latest_store.h"
#include "stream/window_engine.h"

namespace joule::app {

struct SeedStats {
  uint64_t devices = 0;          // devices whose state was seeded
  uint64_t events = 0;           // archived events processed (each device's tail)
  uint64_t records_written = 0;  // records of windows not settled, into history
  uint64_t checkpoints = 0;      // processor-N.ckpt files written
};

class EngineSeed {
 public:
  // `log_partitions`, `threads`: as `joule serve` resolves them (storage.log_partitions,
  // min(stream.processor_threads, partitions)). `timezones` (may be null) must outlive it.
  EngineSeed(stream::EngineOptions engine, uint32_t log_partitions, int threads,
             stream::TimezoneProvider* timezones);

  // How far back from a device's newest event its events matter to the engine state and to
  // the windows not settled: a local day (≤ 25 h) ending after the settled bound with the
  // samples max_gap before it, the lateness state, the de-duplication keys.
  int64_t TailNanos() const;

  // One device's archived events, de-duplicated and in event-time order (ReplayArchive's
  // `device_events`); `settled_end_ns`: the end of its windows the replay writes itself.
  void AddDevice(std::string_view device_id, const std::vector<model::Event>& events,
                 int64_t settled_end_ns);

  // Processes the tails, writes the not-settled records to `history` (base ones to `latest`
  // too; may be null) and {checkpoints_dir}/processor-N.ckpt for every processor (replacing
  // what is there: it holds no engine state, the caller checked).
  Result<SeedStats> Finish(const std::string& checkpoints_dir, store::HistoryStore* history,
                           store::LatestStore* latest);

 private:
  struct Device {
    std::vector<model::Event> tail;
    int64_t settled_end_ns = 0;
  };
  stream::EngineOptions engine_;
  uint32_t log_partitions_;
  int threads_;
  stream::TimezoneProvider* timezones_;
  std::map<std::string, Device, std::less<>> devices_;
};

// Whether any processor-N.ckpt in `checkpoints_dir` holds engine state (a device or a
// reading). A checkpoint that cannot be read or restored counts as holding state. False when
// a processor-N.ckpt.seed is left: a seed was killed while it renamed its files, so the
// checkpoints are partly seeded, and the replay seeds them again.
bool CheckpointsHoldEngineState(const std::string& checkpoints_dir,
                                const stream::EngineOptions& engine,
                                stream::TimezoneProvider* timezones);

}  // namespace joule::app

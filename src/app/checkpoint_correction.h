// Replay of a stopped data dir and the rollups that are not settled (docs/formats/archive.md,
// "Rollups still open"): they exist only in the processors' checkpointed engine states, which
// never saw the too-late events. This hands each checkpointed engine the difference of every
// base window the replay rewrote (WindowEngine::CorrectBaseWindow), as a running server's
// processors get it, and writes the checkpoints back; a rollup that is final there is
// re-emitted at once (into history), an open one at its next early firing after the start.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "model/aggregate_record.h"
#include "store/history_store.h"
#include "stream/window_engine.h"

namespace joule::app {

struct BaseCorrection {
  model::AggregateRecord before;  // the stored (live) record; empty if there was none
  model::AggregateRecord after;   // what the replay wrote
};

struct CheckpointCorrectionStats {
  uint64_t checkpoints = 0;      // checkpoint files rewritten
  uint64_t corrections = 0;      // base windows whose 1h/1d rollups were still held
  uint64_t records_written = 0;  // final rollups re-emitted into history
};

// `checkpoints_dir` = {data_dir}/checkpoints (processor-N.ckpt; absent or empty: nothing to
// do; its parent holds `engine_epoch`, app/engine_epoch.h). `log_partitions` = the log's partition
// count (a device's partition selects the checkpoint whose offsets list it). Each engine starts a
// recovery epoch first, so what it emits outranks anything its crashed run may have emitted after
// the checkpoint. `journal_seq` = the replay journal holding `corrections`
// (app/replay_journal.h): a checkpoint that has it already (ProcessorCheckpoint::replay_applied
// ≥ journal_seq) is left alone, and one rewritten records it, so a second call with the same
// journal (after a crash) changes nothing twice. REQUIRES: no server runs on the data dir (the
// caller holds its lock).
Result<CheckpointCorrectionStats> CorrectCheckpointedRollups(
    const std::string& checkpoints_dir, uint32_t log_partitions,
    const stream::EngineOptions& engine, stream::TimezoneProvider* timezones,
    store::HistoryStore* history, const std::vector<BaseCorrection>& corrections,
    uint64_t journal_seq);

}  // namespace joule::app

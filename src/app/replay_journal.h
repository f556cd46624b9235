// Replay journal: what makes a replay's hand-over to the 1h/1d rollups crash-safe
// (docs/formats/archive.md, "Replay journal").
//
// A replay writes rewritten base windows to history and hands the difference of each to the
// engine that still holds its 1h/1d rollups (a running server's processors, or a stopped data
// dir's checkpoints). Both must happen or neither: once history has the new minute, a second
// replay finds it unchanged and hands nothing over, so a crash between the two lost the
// difference for good (found by a black-box test). So a replay commits each batch of writes
// in three steps:
//
//   1. the journal `{data_dir}/replay_journal/{seq}.journal`: every record the batch writes
//      and the (before, after) pair of every base window with new content — written to a temp
//      file, fsynced, renamed, the directory fsynced;
//   2. the history writes (and latest store), history flushed;
//   3. the corrections handed to the engines, which record `seq` in the checkpoint that first
//      holds them (ProcessorCheckpoint::replay_applied) — then the journal is removed.
//
// After a crash anywhere, the next `joule replay` or `joule serve` (before anything else
// touches history or checkpoints) redoes step 2 (history keeps the highest version: an equal
// one is ignored) and step 3 for every engine whose checkpoint's `replay_applied` is below the
// journal's seq, then removes the journal. Sequence numbers grow
// across runs (`last_seq` in the same directory), and each engine applies journals in order,
// so `replay_applied ≥ seq` means "has it": nothing is applied twice.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "app/checkpoint_correction.h"
#include "common/status.h"
#include "model/aggregate_record.h"
#include "store/history_store.h"
#include "store/latest_store.h"
#include "stream/window_engine.h"

namespace joule::app {

struct ReplayJournal {
  uint64_t seq = 0;
  std::vector<model::AggregateRecord> writes;  // every record the batch writes to history
  std::vector<BaseCorrection> corrections;     // its base windows with new content
};

// {data_dir}/replay_journal
std::string ReplayJournalDir(const std::string& data_dir);

std::string EncodeReplayJournal(const ReplayJournal& journal);
Status DecodeReplayJournal(std::string_view data, ReplayJournal* out);

// A sequence number above every one used so far in `dir` (the `last_seq` file and the
// journals present), recorded in `last_seq` (atomically) before it is returned.
Result<uint64_t> AllocateReplayJournalSeq(const std::string& dir);
// Step 1: durable when it returns (creates `dir`).
Status WriteReplayJournal(const std::string& dir, const ReplayJournal& journal);
// The journals present, by sequence number.
Result<std::vector<std::string>> ListReplayJournals(const std::string& dir);
// Corruption when the file fails its checks.
Result<ReplayJournal> ReadReplayJournal(const std::string& path);
// Removes a journal whose corrections every engine holds (the directory is fsynced).
Status RemoveReplayJournal(const std::string& dir, uint64_t seq);

struct ReplayRecoveryStats {
  uint64_t journals = 0;                  // interrupted replays finished
  uint64_t records = 0;                   // history writes redone (those already there are ignored)
  CheckpointCorrectionStats checkpoints;  // corrections still missing in checkpoints
};

// Step 2 of every journal of the data dir again, in order; returns them for step 3.
// `latest` may be null (its writes are best effort: the latest store is a cache of history).
Result<std::vector<ReplayJournal>> RedoReplayJournals(const std::string& data_dir,
                                                      store::HistoryStore* history,
                                                      store::LatestStore* latest);

// `joule serve` hands the journals RedoReplayJournals returned to its processors, which apply
// them once they have caught up with the log (PartitionProcessor::CorrectBaseWindows), and
// removes them once every processor has checkpointed them. `joule replay` instead:
//
// Finishes every interrupted replay of the data dir (see above), step 3 on the checkpoint
// files (CorrectCheckpointedRollups). REQUIRES: the caller holds
// the data dir (its lock) and no processor runs yet. `latest` may be null. An error (a
// damaged journal or checkpoint) leaves the journal in place.
Result<ReplayRecoveryStats> RecoverReplayJournals(
    const std::string& data_dir, uint32_t log_partitions, const stream::EngineOptions& engine,
    stream::TimezoneProvider* timezones, store::HistoryStore* history, store::LatestStore* latest);

}  // namespace joule::app

#include "app/checkpoint_correction.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "app/engine_epoch.h"
#include "app/processor_checkpoint.h"
#include "model/partition.h"

namespace joule::app {
namespace {

class CollectingSink final : public stream::RecordSink {
 public:
  void Emit(const model::AggregateRecord& record) override { records.push_back(record); }
  std::vector<model::AggregateRecord> records;
};

}  // namespace

Result<CheckpointCorrectionStats> CorrectCheckpointedRollups(
    const std::string& checkpoints_dir, uint32_t log_partitions,
    const stream::EngineOptions& engine, stream::TimezoneProvider* timezones,
    store::HistoryStore* history, const std::vector<BaseCorrection>& corrections,
    uint64_t journal_seq) {
  CheckpointCorrectionStats stats;
  std::error_code ec;
  if (corrections.empty() || !std::filesystem::is_directory(checkpoints_dir, ec)) return stats;
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(checkpoints_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with("processor-") && name.ends_with(".ckpt")) {
      files.push_back(entry.path().string());
    }
  }
  if (ec) return Status::IoError(fmt::format("cannot list {}: {}", checkpoints_dir, ec.message()));
  std::sort(files.begin(), files.end());
  const std::string epoch_path =
      (std::filesystem::path(checkpoints_dir).parent_path() / "engine_epoch").string();
  for (const std::string& path : files) {
    JOULE_ASSIGN_OR_RETURN(std::optional<ProcessorCheckpoint> ckpt, ReadCheckpointFile(path));
    if (!ckpt) continue;
    if (journal_seq != 0 && ckpt->replay_applied >= journal_seq) continue;  // has them
    std::set<uint32_t> partitions;
    for (const auto& [p, offset] : ckpt->offsets) partitions.insert(p);
    std::vector<const BaseCorrection*> mine;
    for (const BaseCorrection& c : corrections) {
      if (partitions.contains(model::PartitionOf(c.after.device_id, log_partitions))) {
        mine.push_back(&c);
      }
    }
    if (mine.empty()) continue;
    stream::WindowEngine e(engine, timezones);
    Status restored = e.RestoreState(ckpt->engine_state);
    if (!restored.ok()) {
      return Status::Corruption(fmt::format("{}: {}", path, restored.ToString()));
    }
    JOULE_ASSIGN_OR_RETURN(uint32_t dir_epoch, ReadEngineEpoch(epoch_path));
    e.BeginRecoveryEpoch(dir_epoch + 1);
    JOULE_RETURN_IF_ERROR(WriteEngineEpoch(epoch_path, e.version_epoch()));
    CollectingSink sink;
    uint64_t held = 0;
    for (const BaseCorrection* c : mine) held += e.CorrectBaseWindow(c->before, c->after, &sink);
    if (held == 0) continue;  // no rollup of these windows is held any more: nothing changed
    if (!sink.records.empty()) {
      JOULE_RETURN_IF_ERROR(history->Put(sink.records));
      JOULE_RETURN_IF_ERROR(history->Flush());  // before the checkpoint that needs it
    }
    ckpt->engine_state.clear();
    JOULE_RETURN_IF_ERROR(e.SaveState(&ckpt->engine_state));
    ckpt->replay_applied = std::max(ckpt->replay_applied, journal_seq);
    JOULE_ASSIGN_OR_RETURN(uint64_t bytes, WriteCheckpointFile(path, *ckpt));
    (void)bytes;
    ++stats.checkpoints;
    stats.corrections += held;
    stats.records_written += sink.records.size();
  }
  return stats;
}

}  // namespace joule::app

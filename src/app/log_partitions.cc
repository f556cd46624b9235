#include "app/log_partitions.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <string>

#include "app/processor_checkpoint.h"
#include "log/log.h"
#include "store/archive/archive_layout.h"
#include "store/archive/archive_writer.h"

namespace joule::app {

Result<uint32_t> ResolveLogPartitions(const Config& config) {
  const std::string dir = (std::filesystem::path(config.data_dir) / "log").string();
  JOULE_ASSIGN_OR_RETURN(uint32_t existing, log::ExistingPartitions(dir));
  if (config.log_partitions == 0) {
    if (existing > 0) return existing;
    return static_cast<uint32_t>(std::max(1, config.processor_threads));
  }
  if (existing > 0 && existing != config.log_partitions) {
    return Status::InvalidArgument(fmt::format(
        "the log in {} has {} partitions but storage.log_partitions = {}: its records were "
        "placed by hash(device_id) % {}; set storage.log_partitions = {} (or 0 = use the "
        "existing log's count)",
        dir, existing, config.log_partitions, existing, existing));
  }
  return config.log_partitions;
}

void SetLogRecoveryOptions(const Config& config, uint32_t partitions, log::LogOptions* options) {
  namespace fs = std::filesystem;
  options->tail_damage = config.log_damage == "cut" ? log::LogOptions::TailDamage::kCut
                                                    : log::LogOptions::TailDamage::kRefuse;
  options->checkpoints.clear();
  std::error_code ec;
  const fs::path checkpoints = fs::path(config.data_dir) / "checkpoints";
  for (const auto& entry : fs::directory_iterator(checkpoints, ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.starts_with("processor-") || !name.ends_with(".ckpt")) continue;
    log::LogOptions::ConsumerCheckpoint c;
    c.name = entry.path().string();
    c.offsets.assign(partitions, 0);
    for (const auto& [partition, next] : PeekCheckpointOffsets(c.name)) {
      if (partition < partitions) c.offsets[partition] = next;
    }
    options->checkpoints.push_back(std::move(c));
  }
  const fs::path archive = fs::path(config.data_dir) / "archive";
  if (Result<std::optional<store::ArchiveCheckpoint>> a =
          store::ReadArchiveCheckpoint(archive.string());
      a.ok() && a->has_value()) {
    log::LogOptions::ConsumerCheckpoint c;
    c.name = (archive / store::kArchiveCheckpointFile).string();
    c.offsets = (*a)->offsets;
    options->checkpoints.push_back(std::move(c));
  }
}

}  // namespace joule::app

#include "app/log_partitions.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <string>

#include "app/processor_checkpoint.h"
#include "log/log.h"
#include "log/segment_format.h"
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

Status CheckLogPresent(const Config& config) {
  namespace fs = std::filesystem;
  const fs::path data = config.data_dir;
  const std::string dir = (data / "log").string();
  JOULE_ASSIGN_OR_RETURN(uint32_t existing, log::ExistingPartitions(dir));
  // A partition directory that holds no segment file, where a consumer's checkpoint had
  // read records, lost them as much as a missing log (`rm log/p-*/*.seg`: the refusals
  // blamed the archive's checkpoint, or said "log partition 0 has no offset N (end 0)", and
  // the opener created empty segments: found by a black-box test). A restore's seeded data
  // dir has empty partition directories and checkpoints at offset 0: it passes.
  std::string empty_partition;
  std::vector<std::string> found;
  std::error_code ec;
  if (existing > 0) {
    log::LogOptions consumers;
    SetLogRecoveryOptions(config, existing, &consumers);
    for (uint32_t p = 0; p < existing && empty_partition.empty(); ++p) {
      const fs::path pdir = fs::path(dir) / log::PartitionDirName(p);
      bool segment = false;
      for (const auto& entry : fs::directory_iterator(pdir, ec)) {
        if (log::ParseSegmentFileName(entry.path().filename().string())) {
          segment = true;
          break;
        }
      }
      if (segment) continue;
      for (const auto& c : consumers.checkpoints) {
        if (p < c.offsets.size() && c.offsets[p] > 0) found.push_back(c.name);
      }
      if (!found.empty()) empty_partition = pdir.string();
    }
    if (empty_partition.empty()) return Status::Ok();
  }
  // No log: what marks a data dir whose log held records, or was read: the files of its
  // consumers.
  if (empty_partition.empty()) {
    for (const auto& entry : fs::directory_iterator(data / "checkpoints", ec)) {
      const std::string name = entry.path().filename().string();
      if (name.starts_with("processor-") && name.ends_with(".ckpt")) {
        found.push_back(entry.path().string());
        break;
      }
    }
    for (const fs::path& f :
         {data / "archive" / store::kArchiveCheckpointFile, data / "engine_epoch"}) {
      if (fs::exists(f, ec)) found.push_back(f.string());
    }
  }
  if (found.empty()) return Status::Ok();
  std::string named;
  for (const std::string& f : found) named += fmt::format("{}{}", named.empty() ? "" : ", ", f);
  const std::string what =
      empty_partition.empty()
          ? fmt::format("the log directory {} is missing or holds no partition", dir)
          : fmt::format("the log partition directory {} holds no segment file (*.seg)",
                        empty_partition);
  return Status::InvalidArgument(fmt::format(
      "{} (moved or deleted?), but this data dir has run ({}): restore the log directory "
      "{} with its segment files to its place and start again — without it, acknowledged "
      "events not yet in history are lost. Nothing was changed. If it is lost for good, "
      "restore the data dir from a backup or rebuild it from the archive "
      "(docs/OPERATIONS.md, \"Restore\")",
      what, named, dir));
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

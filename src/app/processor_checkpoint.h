// ProcessorCheckpoint: what a PartitionProcessor persists so that a restart resumes
// exactly where it left off — each owned partition's next log offset, the window
// engine's state at that point, and each device's latest raw reading — written
// atomically (temp file, fsync, rename, directory fsync). Format:
// docs/formats/checkpoint.md ("Processor checkpoint file").
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "model/event.h"

namespace joule::app {

struct ProcessorCheckpoint {
  std::vector<std::pair<uint32_t, uint64_t>> offsets;  // partition → next offset to process
  std::string engine_state;                            // WindowEngine::SaveState
  std::vector<model::Event> readings;                  // latest reading per device
};

std::string EncodeCheckpoint(const ProcessorCheckpoint& checkpoint);
Status DecodeCheckpoint(std::string_view data, ProcessorCheckpoint* out);

// Atomically replaces `path`. Returns the number of bytes written.
Result<uint64_t> WriteCheckpointFile(const std::string& path,
                                     const ProcessorCheckpoint& checkpoint);
// nullopt when the file does not exist; Corruption when it fails its checks.
Result<std::optional<ProcessorCheckpoint>> ReadCheckpointFile(const std::string& path);

}  // namespace joule::app

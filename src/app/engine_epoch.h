// The data dir's highest recovery epoch (WindowEngine::BeginRecoveryEpoch), in
// `{data_dir}/engine_epoch`, outside `checkpoints/`: when the checkpoints are moved away to
// rebuild the state from the log (RELIABILITY.md), the rebuilt engines start above every
// epoch an earlier run emitted in, so their records outrank what history and the latest store
// already hold (a rebuilt engine starting at epoch 0 had every write refused as stale).
// Format: the epoch in decimal and a newline; written atomically (temp file, fsync, rename,
// directory fsync) before anything is emitted in the epoch.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace joule::app {

// 0 when the file does not exist; Corruption when it is not a number.
Result<uint32_t> ReadEngineEpoch(const std::string& path);
Status WriteEngineEpoch(const std::string& path, uint32_t epoch);

}  // namespace joule::app

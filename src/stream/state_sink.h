// StateSink: where WindowEngine::SaveStateTo streams the engine's checkpoint bytes — the
// same bytes as SaveState — piece by piece, so that a large state never sits in memory
// twice (a processor checkpoint writes them straight into its file).
#pragma once

#include <cstdint>
#include <string_view>

#include "common/status.h"

namespace joule::stream {

class StateSink {
 public:
  virtual ~StateSink() = default;
  // Called once, before the first piece, with the exact number of bytes that will follow.
  virtual Status Begin(uint64_t total_bytes) = 0;
  // The next piece. An error stops the save, and SaveStateTo returns it.
  virtual Status Write(std::string_view piece) = 0;
};

}  // namespace joule::stream

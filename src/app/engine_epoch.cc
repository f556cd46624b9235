#include "app/engine_epoch.h"

#include <fmt/format.h>

#include <charconv>
#include <fstream>
#include <sstream>
#include <system_error>

#include "app/processor_checkpoint.h"

namespace joule::app {

Result<uint32_t> ReadEngineEpoch(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return uint32_t{0};
  std::stringstream text;
  text << in.rdbuf();
  const std::string s = text.str();
  uint32_t epoch = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), epoch);
  if (ec != std::errc() || end == s.data() || (end != s.data() + s.size() && *end != '\n')) {
    return Status::Corruption(fmt::format("{} does not hold an epoch number", path));
  }
  return epoch;
}

Status WriteEngineEpoch(const std::string& path, uint32_t epoch) {
  return WriteFileAtomically(path, fmt::format("{}\n", epoch));
}

}  // namespace joule::app

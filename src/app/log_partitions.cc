#include "app/log_partitions.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <string>

#include "log/log.h"

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

}  // namespace joule::app

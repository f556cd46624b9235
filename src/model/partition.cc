#include "model/partition.h"

#include <xxhash.h>

namespace joule::model {

uint32_t PartitionOf(std::string_view device_id, uint32_t partitions) {
  return static_cast<uint32_t>(XXH64(device_id.data(), device_id.size(), 0) % partitions);
}

}  // namespace joule::model

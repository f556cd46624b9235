// Which log partition a device's events go to: xxh64(device_id) % partitions.
// Stable across versions: changing it would reorder a device's events across partitions.
#pragma once

#include <cstdint>
#include <string_view>

namespace joule::model {

uint32_t PartitionOf(std::string_view device_id, uint32_t partitions);

}  // namespace joule::model

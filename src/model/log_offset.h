// LogOffset: the position of a record in one log partition (0, 1, 2, … per partition).
// A strong type so that an offset is never mixed up with a time or a count.
#pragma once

#include <compare>
#include <cstdint>

namespace joule::model {

struct LogOffset {
  uint64_t value = 0;
  auto operator<=>(const LogOffset&) const = default;
  LogOffset Next() const { return LogOffset{value + 1}; }
};

}  // namespace joule::model

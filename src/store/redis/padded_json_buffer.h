// PaddedJsonBuffer: simdjson reads up to SIMDJSON_PADDING bytes past the end of its
// input, and values from Redis come without that slack, so they are copied here first.
// The buffer only grows. Thread-compatible.
#pragma once

#include <simdjson.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string_view>

namespace joule::store {

class PaddedJsonBuffer {
 public:
  // The copy stays valid until the next call.
  simdjson::simdjson_result<simdjson::ondemand::document> Iterate(
      simdjson::ondemand::parser& parser, std::string_view json) {
    const size_t need = json.size() + simdjson::SIMDJSON_PADDING;
    if (need > capacity_) {
      capacity_ = std::max(need, capacity_ * 2);
      buffer_ = std::make_unique<char[]>(capacity_);
    }
    if (!json.empty()) std::memcpy(buffer_.get(), json.data(), json.size());
    std::memset(buffer_.get() + json.size(), ' ', simdjson::SIMDJSON_PADDING);
    return parser.iterate(buffer_.get(), json.size(), capacity_);
  }

 private:
  std::unique_ptr<char[]> buffer_;
  size_t capacity_ = 0;
};

}  // namespace joule::store

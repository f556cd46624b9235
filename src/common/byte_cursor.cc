#include "common/byte_cursor.h"

#include <fmt/format.h>

#include "common/crc32c.h"

namespace joule {

Status OpenFramed(std::string_view data, std::string_view magic, std::string_view what,
                  uint32_t* version, std::string_view* body) {
  if (data.size() < kFramedHeaderBytes || data.substr(0, 8) != magic) {
    return Status::Corruption(fmt::format("not a Joule {}", what));
  }
  ByteCursor head(data.substr(8, 16));
  uint64_t size;
  uint32_t crc;
  head.U32(version);
  head.U64(&size);
  head.U32(&crc);
  *body = data.substr(kFramedHeaderBytes);
  if (body->size() != size) return Status::Corruption(fmt::format("{} has the wrong length", what));
  if (crc32c::Unmask(crc) != crc32c::Value(*body)) {
    return Status::Corruption(fmt::format("{} CRC mismatch", what));
  }
  return Status::Ok();
}

}  // namespace joule

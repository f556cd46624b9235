#include "ingest/validation.h"

#include <array>
#include <cstdint>

namespace joule::ingest {
namespace {

constexpr std::array<bool, 256> MakeDeviceIdTable() {
  std::array<bool, 256> t{};
  for (int c = 'a'; c <= 'z'; ++c) t[c] = true;
  for (int c = 'A'; c <= 'Z'; ++c) t[c] = true;
  for (int c = '0'; c <= '9'; ++c) t[c] = true;
  t['.'] = t['_'] = t[':'] = t['-'] = true;
  return t;
}
constexpr std::array<bool, 256> kDeviceIdChar = MakeDeviceIdTable();

constexpr std::array<bool, 256> MakeMetricTailTable() {
  std::array<bool, 256> t{};
  for (int c = 'a'; c <= 'z'; ++c) t[c] = true;
  for (int c = '0'; c <= '9'; ++c) t[c] = true;
  t['_'] = true;
  return t;
}
constexpr std::array<bool, 256> kMetricTailChar = MakeMetricTailTable();

}  // namespace

bool ValidDeviceId(std::string_view device_id) {
  if (device_id.empty() || device_id.size() > kMaxDeviceIdLength) return false;
  for (char c : device_id) {
    if (!kDeviceIdChar[static_cast<uint8_t>(c)]) return false;
  }
  return true;
}

bool ValidMetricName(std::string_view name) {
  if (name.empty() || name.size() > kMaxMetricNameLength) return false;
  if (name[0] < 'a' || name[0] > 'z') return false;
  for (char c : name.substr(1)) {
    if (!kMetricTailChar[static_cast<uint8_t>(c)]) return false;
  }
  return true;
}

size_t Utf8Length(std::string_view s) {
  size_t n = 0;
  for (char c : s) n += (static_cast<uint8_t>(c) & 0xC0) != 0x80;
  return n;
}

}  // namespace joule::ingest

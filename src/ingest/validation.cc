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

// Both checks run for every event (and every metric) ingested: a branch-free AND over the
// bytes, as the valid case is the common one.
bool ValidDeviceId(std::string_view device_id) {
  if (device_id.empty() || device_id.size() > kMaxDeviceIdLength) return false;
  const auto* p = reinterpret_cast<const uint8_t*>(device_id.data());
  bool ok = true;
  for (size_t i = 0; i < device_id.size(); ++i) ok &= kDeviceIdChar[p[i]];
  return ok && !IsDotSegment(device_id);
}

bool ValidMetricName(std::string_view name) {
  if (name.empty() || name.size() > kMaxMetricNameLength) return false;
  const auto* p = reinterpret_cast<const uint8_t*>(name.data());
  bool ok = static_cast<uint8_t>(p[0] - 'a') < 26;
  for (size_t i = 1; i < name.size(); ++i) ok &= kMetricTailChar[p[i]];
  return ok;
}

size_t Utf8Length(std::string_view s) {
  size_t n = 0;
  for (char c : s) n += (static_cast<uint8_t>(c) & 0xC0) != 0x80;
  return n;
}

}  // namespace joule::ingest

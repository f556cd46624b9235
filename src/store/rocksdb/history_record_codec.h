// The keys and values of the RocksDB history store, exactly as specified in
// docs/formats/history.md. Pure functions, no I/O; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"
#include "model/aggregate_record.h"
#include "store/history_store.h"

namespace joule::store::history_codec {

// The format written; DecodeRecord, DecodeEnergy and DecodeVersion read formats 1 and 2.
inline constexpr uint8_t kValueFormat = 2;
inline constexpr size_t kMaxDeviceIdBytes = 255;

// REQUIRES: 1 <= device_id.size() <= kMaxDeviceIdBytes.
// (resolution, device_id) — every key of one device and resolution starts with it.
std::string EncodeKeyPrefix(model::Resolution r, std::string_view device_id);
std::string EncodeKey(model::Resolution r, std::string_view device_id, int64_t window_start_ns);

struct DecodedKey {
  model::Resolution resolution;
  std::string_view device_id;  // points into the key
  int64_t window_start_ns;
};
Result<DecodedKey> DecodeKey(std::string_view key);
// Only the window start (the last 8 bytes); for the retention compaction filter.
bool DecodeKeyWindowStart(std::string_view key, int64_t* window_start_ns);

// The value: everything of the record except the key's fields.
std::string EncodeValue(const model::AggregateRecord& record);
void AppendValue(const model::AggregateRecord& record, std::string* out);
// Corruption when `value` is not a well-formed value.
Result<model::AggregateRecord> DecodeRecord(std::string_view key, std::string_view value);
// DecodeRecord's window end, local date and the kind, energy_wh and delta of `metric`,
// without building the record; Corruption exactly when DecodeRecord fails. `local_date`
// points into `value`.
Status DecodeEnergy(std::string_view key, std::string_view value, std::string_view metric,
                    HistoryEnergyFields* out);
// Reads only the format byte and the version (the read-before-write of Put).
Result<uint64_t> DecodeVersion(std::string_view value);

}  // namespace joule::store::history_codec

// RecordJsonDecoder: CONTRACT §2 record JSON → model::AggregateRecord, the inverse of
// model::RecordToJson for everything RecordToJson writes. Used by the Redis latest store,
// which keeps records as their wire JSON.
//
// What is decoded and how:
//  - avg, twa and the flat avg_power_w/max_power_w/sum_energy_wh/coverage fields are
//    derived in RecordToJson, so they are ignored here.
//  - A metric's kind comes from the fields present: energy_wh → power, delta → counter,
//    else gauge. covered_ns = round(coverage × window length), exact for every window up
//    to 2^53 ns (104 days).
//  - resolution: "1d" with local_date/timezone → kDay; "1h" → kHour; anything else →
//    kBase. A base window of exactly 1h is indistinguishable from kHour on the wire:
//    callers that know the resolution (the latest store only holds base records) set it.
//  - Numbers that RecordToJson wrote as null (non-finite) decode as NaN.
// Thread-compatible: one decoder per thread (it owns a simdjson parser and buffer).
#pragma once

#include <cstddef>
#include <memory>
#include <string_view>

#include "common/status.h"
#include "model/aggregate_record.h"

namespace joule::store {

class RecordJsonDecoder {
 public:
  RecordJsonDecoder();
  ~RecordJsonDecoder();
  RecordJsonDecoder(const RecordJsonDecoder&) = delete;
  RecordJsonDecoder& operator=(const RecordJsonDecoder&) = delete;

  // Replaces *out. Returns Corruption on malformed JSON or a missing/mistyped field.
  Status Decode(std::string_view json, model::AggregateRecord* out);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace joule::store

#include "store/redis/reading_json.h"

#include <fmt/format.h>
#include <simdjson.h>

#include "common/json_writer.h"
#include "common/time_format.h"
#include "store/redis/padded_json_buffer.h"

namespace joule::store {

std::string ReadingToJson(const model::Event& e) {
  JsonWriter w;
  w.BeginObject();
  w.Key("timestamp");
  w.String(FormatRfc3339Millis(e.timestamp_ns));
  w.Key("received_at");
  w.String(FormatRfc3339Millis(e.received_at_ns));
  w.Key("metrics");
  w.BeginObject();
  for (const auto& m : e.metrics) {
    w.Key(m.name);
    w.Double(m.value);
  }
  w.EndObject();
  if (!e.meta_json.empty()) {
    w.Key("meta");
    w.Raw(e.meta_json);
  }
  w.EndObject();
  return w.Take();
}

namespace {

namespace od = simdjson::ondemand;
using simdjson::error_code;

#define READING_TRY(expr)                                   \
  do {                                                      \
    error_code _reading_e = (expr);                         \
    if (_reading_e != simdjson::SUCCESS) return _reading_e; \
  } while (0)

error_code GetTime(od::value value, int64_t* out) {
  std::string_view text;
  READING_TRY(value.get_string().get(text));
  return ParseRfc3339(text, out) ? simdjson::SUCCESS : simdjson::INCORRECT_TYPE;
}

}  // namespace

struct ReadingJsonDecoder::Impl {
  od::parser parser;
  PaddedJsonBuffer buffer;

  error_code Decode(std::string_view json, LatestReading* r) {
    od::document doc;
    READING_TRY(buffer.Iterate(parser, json).get(doc));
    od::object object;
    READING_TRY(doc.get_object().get(object));
    bool has_timestamp = false;
    for (auto field_result : object) {
      od::field field;
      READING_TRY(std::move(field_result).get(field));
      std::string_view key;
      READING_TRY(field.unescaped_key().get(key));
      if (key == "timestamp") {
        READING_TRY(GetTime(field.value(), &r->timestamp_ns));
        has_timestamp = true;
      } else if (key == "received_at") {
        READING_TRY(GetTime(field.value(), &r->received_at_ns));
      } else if (key == "metrics") {
        od::object metrics;
        READING_TRY(field.value().get_object().get(metrics));
        for (auto metric_result : metrics) {
          od::field metric;
          READING_TRY(std::move(metric_result).get(metric));
          model::MetricSample& sample = r->metrics.emplace_back();
          std::string_view name;
          READING_TRY(metric.unescaped_key().get(name));
          sample.name.assign(name);
          READING_TRY(metric.value().get_double().get(sample.value));
        }
      } else if (key == "meta") {
        od::object meta;
        READING_TRY(field.value().get_object().get(meta));
        std::string_view raw;
        READING_TRY(meta.raw_json().get(raw));
        r->meta_json.assign(raw);
      }
    }
    // At the end of the input the iterator reports OUT_OF_BOUNDS for the location.
    if (doc.current_location().error() != simdjson::OUT_OF_BOUNDS) {
      return simdjson::TRAILING_CONTENT;
    }
    return has_timestamp ? simdjson::SUCCESS : simdjson::INCORRECT_TYPE;
  }
};

ReadingJsonDecoder::ReadingJsonDecoder() : impl_(std::make_unique<Impl>()) {}
ReadingJsonDecoder::~ReadingJsonDecoder() = default;

Status ReadingJsonDecoder::Decode(std::string_view json, LatestReading* out) {
  *out = LatestReading{};
  const error_code e = impl_->Decode(json, out);
  if (e != simdjson::SUCCESS) {
    return Status::Corruption(fmt::format("reading JSON: {}", simdjson::error_message(e)));
  }
  return Status::Ok();
}

}  // namespace joule::store

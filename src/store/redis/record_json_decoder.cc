#include "store/redis/record_json_decoder.h"

#include <fmt/format.h>
#include <simdjson.h>

#include <cmath>
#include <limits>
#include <vector>

#include "common/time_format.h"
#include "store/redis/padded_json_buffer.h"

namespace joule::store {
namespace {

namespace od = simdjson::ondemand;
using simdjson::error_code;

#define DECODE_TRY(expr)                                  \
  do {                                                    \
    error_code _decode_e = (expr);                        \
    if (_decode_e != simdjson::SUCCESS) return _decode_e; \
  } while (0)

// Reported for a well-formed document that is not a record (wrong type, bad time).
constexpr error_code kShapeError = simdjson::INCORRECT_TYPE;

error_code GetDouble(od::value& value, double* out) {
  od::json_type type;
  DECODE_TRY(value.type().get(type));
  if (type == od::json_type::null) {
    *out = std::numeric_limits<double>::quiet_NaN();
    return simdjson::SUCCESS;
  }
  return value.get_double().get(*out);
}

error_code GetTime(od::value& value, int64_t* out) {
  std::string_view text;
  DECODE_TRY(value.get_string().get(text));
  return ParseRfc3339(text, out) ? simdjson::SUCCESS : kShapeError;
}

error_code GetString(od::value& value, std::string* out) {
  std::string_view text;
  DECODE_TRY(value.get_string().get(text));
  out->assign(text);
  return simdjson::SUCCESS;
}

// One entry of "metrics". `coverage` is kept aside: covered_ns needs the window length,
// which the caller knows only once the whole record has been read.
error_code DecodeMetric(std::string_view name, od::object& object, model::MetricAggregate* m,
                        double* coverage) {
  m->name.assign(name);
  bool has_energy = false;
  bool has_delta = false;
  for (auto field_result : object) {
    od::field field;
    DECODE_TRY(std::move(field_result).get(field));
    std::string_view key;
    DECODE_TRY(field.unescaped_key().get(key));
    od::value value = field.value();
    if (key == "count") {
      DECODE_TRY(value.get_uint64().get(m->count));
    } else if (key == "min") {
      DECODE_TRY(GetDouble(value, &m->min));
    } else if (key == "max") {
      DECODE_TRY(GetDouble(value, &m->max));
    } else if (key == "sum") {
      DECODE_TRY(GetDouble(value, &m->sum));
    } else if (key == "first") {
      DECODE_TRY(GetDouble(value, &m->first));
    } else if (key == "last") {
      DECODE_TRY(GetDouble(value, &m->last));
    } else if (key == "energy_wh") {
      DECODE_TRY(GetDouble(value, &m->energy_wh));
      has_energy = true;
    } else if (key == "coverage") {
      DECODE_TRY(GetDouble(value, coverage));
    } else if (key == "delta") {
      DECODE_TRY(GetDouble(value, &m->delta));
      has_delta = true;
    } else if (key == "resets") {
      DECODE_TRY(value.get_uint64().get(m->resets));
    }
    // avg, twa: derived; unknown keys: ignored (the iterator skips unconsumed values).
  }
  m->kind = has_energy  ? model::MetricKind::kPower
            : has_delta ? model::MetricKind::kCounter
                        : model::MetricKind::kGauge;
  return simdjson::SUCCESS;
}

}  // namespace

struct RecordJsonDecoder::Impl {
  od::parser parser;
  PaddedJsonBuffer buffer;
  std::vector<double> coverages;

  error_code Decode(std::string_view json, model::AggregateRecord* r, bool* has_local_date,
                    std::string* resolution) {
    od::document doc;
    DECODE_TRY(buffer.Iterate(parser, json).get(doc));
    od::object object;
    DECODE_TRY(doc.get_object().get(object));
    coverages.clear();
    bool has_start = false, has_end = false, has_version = false;
    for (auto field_result : object) {
      od::field field;
      DECODE_TRY(std::move(field_result).get(field));
      std::string_view key;
      DECODE_TRY(field.unescaped_key().get(key));
      od::value value = field.value();
      if (key == "device_id") {
        DECODE_TRY(GetString(value, &r->device_id));
      } else if (key == "resolution") {
        DECODE_TRY(GetString(value, resolution));
      } else if (key == "window_start") {
        DECODE_TRY(GetTime(value, &r->window_start_ns));
        has_start = true;
      } else if (key == "window_end") {
        DECODE_TRY(GetTime(value, &r->window_end_ns));
        has_end = true;
      } else if (key == "local_date") {
        DECODE_TRY(GetString(value, &r->local_date));
        *has_local_date = true;
      } else if (key == "timezone") {
        DECODE_TRY(GetString(value, &r->timezone));
      } else if (key == "final") {
        DECODE_TRY(value.get_bool().get(r->final));
      } else if (key == "version") {
        DECODE_TRY(value.get_uint64().get(r->version));
        has_version = true;
      } else if (key == "count") {
        DECODE_TRY(value.get_uint64().get(r->count));
      } else if (key == "metrics") {
        od::object metrics;
        DECODE_TRY(value.get_object().get(metrics));
        for (auto metric_result : metrics) {
          od::field metric;
          DECODE_TRY(std::move(metric_result).get(metric));
          std::string_view name;
          DECODE_TRY(metric.unescaped_key().get(name));
          od::object body;
          DECODE_TRY(metric.value().get_object().get(body));
          double coverage = 0;
          DECODE_TRY(DecodeMetric(name, body, &r->metrics.emplace_back(), &coverage));
          coverages.push_back(coverage);
        }
      }
      // Derived flat fields (avg_power_w, …) and unknown keys: ignored.
    }
    // At the end of the input the iterator reports OUT_OF_BOUNDS for the location.
    if (doc.current_location().error() != simdjson::OUT_OF_BOUNDS) {
      return simdjson::TRAILING_CONTENT;
    }
    if (r->device_id.empty() || !has_start || !has_end || !has_version) return kShapeError;
    const double window_ns = static_cast<double>(r->window_end_ns - r->window_start_ns);
    for (size_t i = 0; i < r->metrics.size(); ++i) {
      if (r->metrics[i].kind != model::MetricKind::kPower) continue;
      const double covered = std::round(coverages[i] * window_ns);
      // Garbage coverage must not reach an out-of-range (undefined) conversion.
      r->metrics[i].covered_ns = std::fabs(covered) < 9e18 ? static_cast<int64_t>(covered) : 0;
    }
    return simdjson::SUCCESS;
  }
};

RecordJsonDecoder::RecordJsonDecoder() : impl_(std::make_unique<Impl>()) {}
RecordJsonDecoder::~RecordJsonDecoder() = default;

Status RecordJsonDecoder::Decode(std::string_view json, model::AggregateRecord* out) {
  *out = model::AggregateRecord{};
  bool has_local_date = false;
  std::string resolution;
  const error_code e = impl_->Decode(json, out, &has_local_date, &resolution);
  if (e != simdjson::SUCCESS) {
    return Status::Corruption(fmt::format("record JSON: {}", simdjson::error_message(e)));
  }
  if (resolution == "1d" && has_local_date) {
    out->resolution = model::Resolution::kDay;
  } else if (resolution == "1h") {
    out->resolution = model::Resolution::kHour;
  } else {
    out->resolution = model::Resolution::kBase;
  }
  return Status::Ok();
}

}  // namespace joule::store

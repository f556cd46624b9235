#include "api/whole_home_meter.h"

#include <fmt/format.h>
#include <simdjson.h>

#include <string>

namespace joule::api {
namespace {

enum class Flag { kAbsent, kTrue, kFalse, kInvalid };

Flag ReadFlag(std::string_view config_json) {
  // Most configs never mention the key: skip the parse. A key spelled with escapes
  // ("whole\u005fhome") has a backslash, so such configs are parsed too.
  if (config_json.find(kWholeHomeConfigKey) == std::string_view::npos &&
      config_json.find('\\') == std::string_view::npos) {
    return Flag::kAbsent;
  }
  simdjson::dom::parser parser;
  simdjson::dom::object object;
  if (parser.parse(simdjson::padded_string(config_json)).get_object().get(object) !=
      simdjson::SUCCESS) {
    return Flag::kInvalid;
  }
  Flag flag = Flag::kAbsent;
  for (auto field : object) {
    if (field.key != kWholeHomeConfigKey) continue;
    if (flag != Flag::kAbsent) return Flag::kInvalid;  // twice: which one holds is unclear
    bool value = false;
    if (field.value.get_bool().get(value) != simdjson::SUCCESS) return Flag::kInvalid;
    flag = value ? Flag::kTrue : Flag::kFalse;
  }
  return flag;
}

}  // namespace

bool IsWholeHomeMeter(std::string_view config_json) { return ReadFlag(config_json) == Flag::kTrue; }

Status ValidateWholeHomeFlag(std::string_view config_json) {
  if (ReadFlag(config_json) != Flag::kInvalid) return Status::Ok();
  return Status::InvalidArgument(
      fmt::format("config.{} must be true or false (once)", kWholeHomeConfigKey));
}

}  // namespace joule::api

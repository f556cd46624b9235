#include "common/name_value_list.h"

namespace joule {

std::vector<std::pair<std::string, std::string>> ParseNameValueList(std::string_view spec) {
  std::vector<std::pair<std::string, std::string>> out;
  while (!spec.empty()) {
    const size_t comma = spec.find(',');
    const std::string_view item = spec.substr(0, comma);
    spec = comma == std::string_view::npos ? std::string_view() : spec.substr(comma + 1);
    const size_t colon = item.find(':');
    const std::string_view name = item.substr(0, colon);
    if (name.empty()) continue;
    out.emplace_back(std::string(name), colon == std::string_view::npos
                                            ? std::string()
                                            : std::string(item.substr(colon + 1)));
  }
  return out;
}

}  // namespace joule

#include "common/test_hold.h"

#include <unistd.h>

#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "common/name_value_list.h"

namespace joule {
namespace {

// name → file; parsed once.
const std::vector<std::pair<std::string, std::string>>& Holds() {
  static const std::vector<std::pair<std::string, std::string>> holds = [] {
    const char* env = std::getenv("JOULE_TEST_HOLD");
    std::vector<std::pair<std::string, std::string>> out;
    if (env == nullptr) return out;
    for (auto& item : ParseNameValueList(env)) {
      if (!item.second.empty()) out.push_back(std::move(item));
    }
    return out;
  }();
  return holds;
}

}  // namespace

bool TestHeld(std::string_view name) {
  const auto& holds = Holds();
  if (holds.empty()) return false;
  for (const auto& [n, path] : holds) {
    if (n == name && ::access(path.c_str(), F_OK) == 0) return true;
  }
  return false;
}

}  // namespace joule

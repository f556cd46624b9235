// Parsing of the test hooks' environment variables: "name:value[,name:value…]" (crash
// points, test holds). Items without a name are dropped; an item without ':' has an empty
// value.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace joule {

std::vector<std::pair<std::string, std::string>> ParseNameValueList(std::string_view spec);

}  // namespace joule

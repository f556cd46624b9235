#include "common/crash_point.h"

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "common/name_value_list.h"

namespace joule {
namespace {

struct Armed {
  std::string name;
  long target = 0;
  std::atomic<long> hits{0};
};

// Parsed once; never freed (the process dies through it or exits normally).
const std::vector<Armed*>& ArmedPoints() {
  static const std::vector<Armed*> points = [] {
    std::vector<Armed*> out;
    const char* env = std::getenv("JOULE_TEST_CRASH_AT");
    if (env == nullptr) return out;
    for (auto& [name, count] : ParseNameValueList(env)) {
      const long target = count.empty() ? 1 : std::strtol(count.c_str(), nullptr, 10);
      if (target <= 0) continue;
      auto* a = new Armed;
      a->name = std::move(name);
      a->target = target;
      out.push_back(a);
    }
    return out;
  }();
  return points;
}

}  // namespace

void CrashPoint(std::string_view name) {
  const auto& points = ArmedPoints();
  if (points.empty()) return;
  for (Armed* a : points) {
    if (a->name != name) continue;
    if (a->hits.fetch_add(1) + 1 != a->target) continue;
    std::string line = "{\"level\":\"warn\",\"msg\":\"test crash point reached\",\"point\":\"" +
                       a->name + "\",\"hit\":" + std::to_string(a->target) + "}\n";
    ssize_t unused = ::write(2, line.data(), line.size());
    (void)unused;
    ::raise(SIGKILL);
    ::_exit(137);  // not reached
  }
}

}  // namespace joule

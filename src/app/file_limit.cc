#include "app/file_limit.h"

#include <sys/resource.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "common/logging.h"

namespace joule::app {

FileLimit RaiseFileLimit(uint64_t max_connections, uint64_t listeners) {
  FileLimit out;
  out.needed = max_connections * listeners + kFileLimitMargin;
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    logging::Warn("cannot read the open-file limit", {{"error", std::strerror(errno)}});
    return out;
  }
  if (limit.rlim_cur != RLIM_INFINITY &&
      (limit.rlim_max == RLIM_INFINITY || limit.rlim_cur < limit.rlim_max)) {
    rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) {
      limit = raised;
      out.raised = true;
    } else {
      logging::Warn("cannot raise the open-file limit", {{"from", std::to_string(limit.rlim_cur)},
                                                         {"to", std::to_string(limit.rlim_max)},
                                                         {"error", std::strerror(errno)}});
    }
  }
  out.soft = limit.rlim_cur == RLIM_INFINITY ? UINT64_MAX : limit.rlim_cur;
  out.hard = limit.rlim_max == RLIM_INFINITY ? UINT64_MAX : limit.rlim_max;
  if (out.soft < out.needed) {
    logging::Warn(
        "open-file limit below what server.max_connections needs: clients over it "
        "wait unaccepted and log reads fail until descriptors free up (raise "
        "`ulimit -n` / LimitNOFILE, or lower server.max_connections)",
        {{"limit", std::to_string(out.soft)},
         {"hard_limit", std::to_string(out.hard)},
         {"needed", std::to_string(out.needed)}});
  }
  return out;
}

}  // namespace joule::app

#include "common/thread_priority.h"

#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/logging.h"

namespace joule {

int SetThreadNice(int nice) {
  // PRIO_PROCESS with a thread id addresses that one thread (setpriority(2), "BUGS").
  return ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), nice) == 0 ? 0 : errno;
}

int ThreadNice() { return ::getpriority(PRIO_PROCESS, static_cast<id_t>(::gettid())); }

void SetUpThread(const std::string& name, int nice_increment) {
  // Linux keeps 15 bytes of a thread's name: a longer one is cut, not refused.
  pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
  if (nice_increment <= 0) return;
  const int nice = std::min(19, ThreadNice() + nice_increment);
  if (int err = SetThreadNice(nice); err != 0) {
    logging::Warn(
        "cannot lower the thread's priority",
        {{"thread", name}, {"nice", std::to_string(nice)}, {"error", std::strerror(err)}});
  }
}

}  // namespace joule

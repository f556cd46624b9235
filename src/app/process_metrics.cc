#include "app/process_metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>

#include "common/metrics.h"

namespace joule::app {
namespace {

double CpuSeconds() {
  rusage ru{};
  if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
  auto seconds = [](const timeval& tv) {
    return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) * 1e-6;
  };
  return seconds(ru.ru_utime) + seconds(ru.ru_stime);
}

// /proc/self/statm: size and resident, in pages. `index` 0 = virtual, 1 = resident.
double StatmBytes(int index) {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  unsigned long pages[2] = {0, 0};
  const int got = std::fscanf(f, "%lu %lu", &pages[0], &pages[1]);
  std::fclose(f);
  if (got != 2) return 0;
  return static_cast<double>(pages[index]) * static_cast<double>(sysconf(_SC_PAGESIZE));
}

double OpenFds() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return 0;
  double n = 0;
  while (const dirent* e = readdir(dir)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(dir);
  return n - 1;  // not the descriptor of the listing itself
}

double MaxFds() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return 0;
  return static_cast<double>(limit.rlim_cur);
}

}  // namespace

void RegisterProcessMetrics(MetricsRegistry* metrics) {
  timespec now{};
  clock_gettime(CLOCK_REALTIME, &now);
  const double started = static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) * 1e-9;
  metrics->AddCounterCallback("process_cpu_seconds_total",
                              "User and system CPU time of the process, in seconds", {},
                              CpuSeconds);
  metrics->AddGaugeCallback("process_resident_memory_bytes", "Resident memory (RSS), in bytes", {},
                            [] { return StatmBytes(1); });
  metrics->AddGaugeCallback("process_virtual_memory_bytes", "Virtual memory size, in bytes", {},
                            [] { return StatmBytes(0); });
  metrics->AddGaugeCallback("process_open_fds", "Open file descriptors", {}, OpenFds);
  metrics->AddGaugeCallback("process_max_fds", "The open file descriptor limit (RLIMIT_NOFILE)", {},
                            MaxFds);
  metrics->AddGaugeCallback("process_start_time_seconds",
                            "When the server started, in seconds since the epoch", {},
                            [started] { return started; });
  metrics
      ->GetGauge("joule_build_info", "Always 1; the label names the version running",
                 {{"version", JOULE_VERSION}})
      ->Set(1);
}

}  // namespace joule::app

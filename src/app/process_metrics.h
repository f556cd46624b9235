// RegisterProcessMetrics: the process's own resources on /metrics, under the names
// Prometheus' client libraries use (process_cpu_seconds_total, process_resident_memory_bytes,
// …), so that standard dashboards and alert rules work; and joule_build_info. Read from
// /proc/self at each scrape. See src/app/README.md "Metrics".
#pragma once

namespace joule {
class MetricsRegistry;
}

namespace joule::app {

void RegisterProcessMetrics(MetricsRegistry* metrics);

}  // namespace joule::app

// The physical limit for the ingest side: a simdjson On-Demand loop that only parses the
// same NDJSON bytes Joule ingests and sums the same fields (timestamp and each metric
// value), with no validation, no storage and no aggregation by device or window. Prints
// one JSON object with process CPU seconds and events per CPU-second. Built with
// -march=native (bench/CMakeLists.txt) so On-Demand uses this CPU's best kernel.
//   simdjson_limit FILE.ndjson
#include <simdjson.h>
#include <time.h>

#include <cstdio>
#include <string_view>
#include <utility>

namespace {
double CpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s FILE.ndjson\n", argv[0]);
    return 2;
  }
  simdjson::padded_string json;
  if (simdjson::padded_string::load(argv[1]).get(json)) {
    std::fprintf(stderr, "cannot read %s\n", argv[1]);
    return 1;
  }
  simdjson::ondemand::parser parser;
  const double c0 = CpuSeconds();
  simdjson::ondemand::document_stream docs;
  if (parser.iterate_many(json, 1 << 20).get(docs)) return 1;
  unsigned long long events = 0, id_bytes = 0;
  double sums[4] = {0, 0, 0, 0};
  long long ts_sum = 0;
  for (auto doc_result : docs) {
    simdjson::ondemand::document_reference doc;
    if (std::move(doc_result).get(doc)) return 1;
    std::string_view id;
    if (doc["device_id"].get_string().get(id)) return 1;
    id_bytes += id.size();
    int64_t ts = 0;
    if (doc["timestamp"].get_int64().get(ts)) return 1;
    ts_sum += ts;
    simdjson::ondemand::object metrics;
    if (doc["metrics"].get_object().get(metrics)) return 1;
    int k = 0;
    for (auto field : metrics) {
      double v = 0;
      if (field.value().get_double().get(v)) return 1;
      sums[k++ & 3] += v;
    }
    ++events;
  }
  const double cpu = CpuSeconds() - c0;
  std::printf(
      "{\"events\": %llu, \"bytes\": %zu, \"cpu_s\": %.6f, \"events_per_cpu_s\": %.1f, "
      "\"checksum\": %.3f, \"implementation\": \"%s\"}\n",
      events, json.size(), cpu, static_cast<double>(events) / cpu,
      sums[0] + sums[1] + sums[2] + sums[3] + static_cast<double>(ts_sum % 1000) +
          static_cast<double>(id_bytes),
      SIMDJSON_STRINGIFY(SIMDJSON_BUILTIN_IMPLEMENTATION));
  return 0;
}

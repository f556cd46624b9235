#include "app/replay.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <tuple>
#include <unordered_set>
#include <vector>

#include "app/engine_setup.h"
#include "app/metadata_open.h"
#include "common/clock.h"
#include "common/json_writer.h"
#include "common/time_format.h"
#include "store/archive/archive_reader.h"
#include "store/metadata_store.h"
#include "store/redis/redis_latest_store.h"
#include "store/rocksdb/rocksdb_history_store.h"

namespace joule::app {
namespace {

// Events of one device, in archive (commit) order.
using DeviceEvents = std::map<std::string, std::vector<model::Event>, std::less<>>;

// Collects the last emission of every record key.
class CollectingSink final : public stream::RecordSink {
 public:
  void Emit(const model::AggregateRecord& r) override {
    records_[{static_cast<int>(r.resolution), r.window_start_ns}] = r;
  }
  std::map<std::pair<int, int64_t>, model::AggregateRecord>& records() { return records_; }

 private:
  std::map<std::pair<int, int64_t>, model::AggregateRecord> records_;
};

// The first copy of each identity wins (CONTRACT §1): (device, event_id) or
// (device, timestamp). Archive order is commit order, which follows the log.
uint64_t DropDuplicates(std::vector<model::Event>* events) {
  std::unordered_set<std::string> ids;
  std::unordered_set<int64_t> times;
  size_t out = 0;
  for (size_t i = 0; i < events->size(); ++i) {
    model::Event& e = (*events)[i];
    const bool first =
        e.event_id.empty() ? times.insert(e.timestamp_ns).second : ids.insert(e.event_id).second;
    if (first) {
      if (out != i) (*events)[out] = std::move(e);
      ++out;
    }
  }
  const uint64_t dropped = events->size() - out;
  events->resize(out);
  return dropped;
}

}  // namespace

Result<ReplayStats> ReplayArchive(const ReplayRequest& req, store::HistoryStore* history,
                                  store::LatestStore* latest, stream::TimezoneProvider* timezones,
                                  const std::function<void(const std::string&)>& progress) {
  ReplayStats stats;
  auto report = [&](const std::string& line) {
    if (progress) progress(line);
  };
  // Context around the range: a 1d window overlapping it lasts at most 25 h, and its
  // first and last samples need their neighbours within max_gap.
  const int64_t pad = 26 * kNanosPerHour + req.engine.max_gap_ns;
  const int64_t scan_from = req.from_ns - pad;
  const int64_t scan_to = req.to_ns > std::numeric_limits<int64_t>::max() - pad
                              ? std::numeric_limits<int64_t>::max()
                              : req.to_ns + pad;
  DeviceEvents by_device;
  int64_t last_report = 0;
  const Clock* wall = SystemClock::Default();
  JOULE_RETURN_IF_ERROR(store::ScanArchive(
      req.archive_dir, scan_from, scan_to,
      [&](const model::Event& e, std::string_view) {
        if (!req.devices.empty() && !req.devices.count(e.device_id)) return Status::Ok();
        by_device[e.device_id].push_back(e);
        ++stats.events_read;
        return Status::Ok();
      },
      [&](const store::ArchiveFile& f, size_t i, size_t n) {
        const int64_t now = wall->NowNanos();
        if (now - last_report >= kNanosPerSecond || i + 1 == n) {
          last_report = now;
          report(fmt::format("reading archive: file {}/{} ({}), {} events", i + 1, n,
                             FormatRfc3339Millis(f.hour_start_ns), stats.events_read));
        }
      }));
  stats.devices = by_device.size();
  report(fmt::format("read {} events of {} devices", stats.events_read, stats.devices));

  stream::EngineOptions engine_options = req.engine;
  // Only final records matter here: no early firings.
  engine_options.early_fire_interval_ns = std::numeric_limits<int64_t>::max() / 4;
  const int64_t live_horizon =
      req.now_ns - req.engine.allowed_lateness_ns - req.engine.out_of_orderness_ns;

  size_t device_index = 0;
  last_report = 0;
  for (auto& [device_id, events] : by_device) {
    ++device_index;
    stats.duplicates += DropDuplicates(&events);
    std::stable_sort(events.begin(), events.end(),
                     [](const model::Event& a, const model::Event& b) {
                       return a.timestamp_ns < b.timestamp_ns;
                     });
    // In event-time order with processing time = event time: exactly what the engine
    // computes for in-order input, without lateness.
    stream::WindowEngine engine(engine_options, timezones);
    CollectingSink sink;
    for (const auto& e : events) engine.Process(e, e.timestamp_ns, &sink);
    // Silent long enough for every window, days included, to be final.
    engine.Tick(events.back().timestamp_ns + 3 * kNanosPerDay + req.engine.idle_timeout_ns, &sink);

    std::vector<model::AggregateRecord> writes;
    for (auto& [key, r] : sink.records()) {
      if (r.window_end_ns <= req.from_ns || r.window_start_ns >= req.to_ns || !r.final) continue;
      ++stats.records_computed;
      if (r.window_end_ns > live_horizon) {
        ++stats.records_recent;
        continue;
      }
      JOULE_ASSIGN_OR_RETURN(std::optional<model::AggregateRecord> stored,
                             history->Get(r.device_id, r.resolution, r.window_start_ns));
      if (stored) {
        model::AggregateRecord same = r;
        same.version = stored->version;
        if (same == *stored) {
          ++stats.records_unchanged;
          continue;
        }
        if (r.count < stored->count) {
          ++stats.records_incomplete;
          continue;
        }
        r.version = stored->version + 1;
      } else {
        r.version = 1;
      }
      writes.push_back(r);
    }
    stats.records_written += writes.size();
    if (!writes.empty() && !req.dry_run) {
      JOULE_RETURN_IF_ERROR(history->Put(writes));
      if (latest) {
        for (const auto& r : writes) {
          if (r.resolution == model::Resolution::kBase) JOULE_RETURN_IF_ERROR(latest->PutRecord(r));
        }
      }
    }
    const int64_t now = wall->NowNanos();
    if (now - last_report >= kNanosPerSecond || device_index == by_device.size()) {
      last_report = now;
      report(fmt::format("device {}/{}: {} records computed, {} written", device_index,
                         by_device.size(), stats.records_computed, stats.records_written));
    }
  }
  if (!req.dry_run) JOULE_RETURN_IF_ERROR(history->Flush());
  return stats;
}

int RunReplay(const Config& config, const ReplayCliOptions& options) {
  auto fail = [](const std::string& message, int code = 1) {
    fmt::print(stderr, "joule replay: {}\n", message);
    return code;
  };
  ReplayRequest req;
  if (!ParseRfc3339(options.from, &req.from_ns)) return fail("--from must be an RFC 3339 time", 2);
  if (!ParseRfc3339(options.to, &req.to_ns)) return fail("--to must be an RFC 3339 time", 2);
  if (req.to_ns <= req.from_ns) return fail("--to must be after --from", 2);
  if (!options.device_id.empty() && !options.owner_id.empty()) {
    return fail("give --device or --owner, not both", 2);
  }
  req.archive_dir = (std::filesystem::path(config.data_dir) / "archive").string();
  req.engine = EngineOptionsFrom(config);
  req.now_ns = SystemClock::Default()->NowNanos();
  req.dry_run = options.dry_run;
  if (!std::filesystem::is_directory(req.archive_dir)) {
    return fail(fmt::format("no archive at {} (is storage.data_dir right?)", req.archive_dir));
  }

  Result<std::unique_ptr<store::MetadataStore>> metadata = OpenMetadataStore(config);
  if (!metadata.ok()) return fail("metadata store: " + metadata.status().ToString());
  if (!options.device_id.empty()) req.devices.insert(options.device_id);
  if (!options.owner_id.empty()) {
    store::ListDevicesOptions lo;
    lo.owner_id = options.owner_id;
    while (true) {
      Result<store::DevicePage> page = (*metadata)->ListDevices(lo);
      if (!page.ok()) return fail("metadata store: " + page.status().ToString());
      for (const auto& d : page->devices) req.devices.insert(d.device_id);
      if (page->next_cursor.empty()) break;
      lo.after = page->next_cursor;
    }
    if (req.devices.empty()) return fail(fmt::format("owner {} has no devices", options.owner_id));
  }
  MetadataTimezones timezones(metadata->get());

  store::RocksDbHistoryOptions ho;
  ho.path = (std::filesystem::path(config.data_dir) / "history").string();
  ho.retention.base_ns = config.history_retention_base_ns;
  ho.retention.hour_ns = config.history_retention_hour_ns;
  ho.retention.day_ns = config.history_retention_day_ns;
  auto history = store::RocksDbHistoryStore::Open(ho, nullptr);
  if (!history.ok()) {
    const std::string msg = history.status().ToString();
    std::string lower = msg;
    std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
    if (lower.find("lock") != std::string::npos) {
      return fail(fmt::format("the history store {} is locked by another process: is `joule serve` "
                              "running on this data dir? Stop the server, then run replay again "
                              "(replay needs the server stopped; docs/formats/archive.md). ({})",
                              ho.path, msg),
                  3);
    }
    return fail("history store: " + msg);
  }
  std::unique_ptr<store::LatestStore> latest;
  if (config.latest_backend == "redis") {
    store::RedisLatestStoreOptions ro;
    if (!config.latest_url.empty()) ro.url = config.latest_url;
    ro.windows_per_device = config.latest_windows;
    auto redis = store::RedisLatestStore::Open(ro);
    if (!redis.ok()) return fail("latest store: " + redis.status().ToString());
    latest = std::move(*redis);
  }

  Result<ReplayStats> stats = ReplayArchive(
      req, history->get(), latest.get(), &timezones,
      [](const std::string& line) { fmt::print(stderr, "joule replay: {}\n", line); });
  if (!stats.ok()) return fail(stats.status().ToString());
  JsonWriter w;
  w.BeginObject();
  w.Key("from");
  w.String(FormatRfc3339Millis(req.from_ns));
  w.Key("to");
  w.String(FormatRfc3339Millis(req.to_ns));
  w.Key("dry_run");
  w.Bool(req.dry_run);
  const std::pair<const char*, uint64_t> fields[] = {
      {"events_read", stats->events_read},
      {"duplicates", stats->duplicates},
      {"devices", stats->devices},
      {"records_computed", stats->records_computed},
      {"records_written", stats->records_written},
      {"records_unchanged", stats->records_unchanged},
      {"records_recent", stats->records_recent},
      {"records_incomplete", stats->records_incomplete}};
  for (const auto& [k, v] : fields) {
    w.Key(k);
    w.Uint(v);
  }
  w.EndObject();
  fmt::print("{}\n", w.str());
  return 0;
}

}  // namespace joule::app

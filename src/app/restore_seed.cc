#include "app/restore_seed.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <optional>
#include <tuple>
#include <utility>

#include "app/processor_checkpoint.h"
#include "common/crash_point.h"
#include "model/partition.h"

namespace joule::app {
namespace {

// The last emission of every record key.
class LastEmissionSink final : public stream::RecordSink {
 public:
  void Emit(const model::AggregateRecord& r) override {
    records[{r.device_id, static_cast<int>(r.resolution), r.window_start_ns}] = r;
  }
  std::map<std::tuple<std::string, int, int64_t>, model::AggregateRecord> records;
};

constexpr const char* kSeedSuffix = ".seed";

// Removes processor-N.ckpt.seed for N < count (best effort).
void RemoveSeedFiles(const std::string& checkpoints_dir, int count) {
  for (int i = 0; i < count; ++i) {
    std::error_code ec;
    std::filesystem::remove(
        std::filesystem::path(checkpoints_dir) / fmt::format("processor-{}.ckpt{}", i, kSeedSuffix),
        ec);
  }
}

}  // namespace

EngineSeed::EngineSeed(stream::EngineOptions engine, uint32_t log_partitions, int threads,
                       stream::TimezoneProvider* timezones)
    : engine_(std::move(engine)),
      log_partitions_(std::max<uint32_t>(1, log_partitions)),
      threads_(std::max(1, threads)),
      timezones_(timezones) {}

int64_t EngineSeed::TailNanos() const {
  const int64_t dedup = engine_.dedup_horizon_ns > 0
                            ? engine_.dedup_horizon_ns
                            : engine_.allowed_lateness_ns + engine_.out_of_orderness_ns;
  return 26 * kNanosPerHour + engine_.allowed_lateness_ns + engine_.out_of_orderness_ns +
         2 * engine_.max_gap_ns + engine_.window_ns + dedup;
}

void EngineSeed::AddDevice(std::string_view device_id, const std::vector<model::Event>& events,
                           int64_t settled_end_ns) {
  if (events.empty()) return;
  const int64_t from = events.back().timestamp_ns - TailNanos();
  auto first =
      std::lower_bound(events.begin(), events.end(), from,
                       [](const model::Event& e, int64_t t) { return e.timestamp_ns < t; });
  Device& d = devices_[std::string(device_id)];
  d.tail.assign(first, events.end());
  d.settled_end_ns = settled_end_ns;
}

Result<SeedStats> EngineSeed::Finish(const std::string& checkpoints_dir,
                                     store::HistoryStore* history, store::LatestStore* latest) {
  SeedStats stats;
  std::error_code ec;
  std::filesystem::create_directories(checkpoints_dir, ec);
  if (ec) {
    return Status::IoError(fmt::format("cannot create {}: {}", checkpoints_dir, ec.message()));
  }
  for (int i = 0; i < threads_; ++i) {
    // This processor's partitions, as `joule serve` assigns them (server.cc).
    std::vector<std::pair<uint32_t, uint64_t>> offsets;
    for (uint32_t p = static_cast<uint32_t>(i); p < log_partitions_;
         p += static_cast<uint32_t>(threads_)) {
      offsets.emplace_back(p, 0);  // the log never held a record
    }
    std::vector<const model::Event*> events;
    std::vector<const Device*> mine;
    std::vector<model::Event> readings;
    for (const auto& [id, d] : devices_) {
      if (static_cast<int>(model::PartitionOf(id, log_partitions_) %
                           static_cast<uint32_t>(threads_)) != i) {
        continue;
      }
      if (d.tail.empty()) continue;
      mine.push_back(&d);
      for (const model::Event& e : d.tail) events.push_back(&e);
      // The newest by event time; of equal times the first (as the processor keeps it).
      const model::Event* newest = &d.tail.front();
      for (const model::Event& e : d.tail) {
        if (e.timestamp_ns > newest->timestamp_ns) newest = &e;
      }
      readings.push_back(*newest);
    }
    // In event-time order with processing time = event time, as ReplayArchive computes a
    // device (what the engine gives in-order input), here all devices of the processor in
    // one engine; no Tick: the server's first one finalizes what has ended by then.
    std::stable_sort(events.begin(), events.end(),
                     [](const model::Event* a, const model::Event* b) {
                       return a->timestamp_ns < b->timestamp_ns;
                     });
    stream::WindowEngine engine(engine_, timezones_);
    LastEmissionSink sink;
    for (const model::Event* e : events) {
      if (!engine.Process(*e, e->timestamp_ns, &sink)) {  // its local days are not guessed
        return Status::Unavailable(
            fmt::format("the metadata store cannot say device {}'s timezone now (unreachable); "
                        "run it again once the store answers",
                        e->device_id));
      }
    }
    stats.events += events.size();
    stats.devices += mine.size();

    std::vector<model::AggregateRecord> writes;
    for (auto& [key, r] : sink.records) {
      auto d = devices_.find(std::get<0>(key));
      // Settled windows are the replay's (written with their final content); the seed's
      // oldest ones may lack events before the tail.
      if (d == devices_.end() || r.window_end_ns <= d->second.settled_end_ns) continue;
      writes.push_back(std::move(r));
    }
    if (!writes.empty()) {
      JOULE_RETURN_IF_ERROR(history->Put(writes));
      if (latest) {
        for (const auto& r : writes) {
          if (r.resolution == model::Resolution::kBase) JOULE_RETURN_IF_ERROR(latest->PutRecord(r));
        }
      }
      stats.records_written += writes.size();
    }

    ProcessorCheckpoint ckpt;
    ckpt.offsets = std::move(offsets);
    JOULE_RETURN_IF_ERROR(engine.SaveState(&ckpt.engine_state));
    ckpt.readings = std::move(readings);
    // Written beside the final name first: the checkpoints replace the old ones only once
    // every one is written (a failure leaves the old, empty ones, and a replay run again
    // seeds them).
    const std::string path = (std::filesystem::path(checkpoints_dir) /
                              fmt::format("processor-{}.ckpt{}", i, kSeedSuffix))
                                 .string();
    if (Status st = WriteCheckpointFile(path, ckpt).status(); !st.ok()) {
      RemoveSeedFiles(checkpoints_dir, i + 1);
      return st;
    }
  }
  // History before the checkpoints' state is relied on (as a processor's checkpoint).
  if (Status st = history->Flush(); !st.ok()) {
    RemoveSeedFiles(checkpoints_dir, threads_);
    return st;
  }
  for (int i = 0; i < threads_; ++i) {
    const std::string path =
        (std::filesystem::path(checkpoints_dir) / fmt::format("processor-{}.ckpt", i)).string();
    std::filesystem::rename(path + kSeedSuffix, path, ec);
    if (ec) {
      // The .seed files left say that the checkpoints are partly seeded: the next replay
      // seeds them again (CheckpointsHoldEngineState).
      return Status::IoError(
          fmt::format("cannot rename {}{} to {}: {}", path, kSeedSuffix, path, ec.message()));
    }
    ++stats.checkpoints;
    CrashPoint("restore_seed.after_rename");  // (test hook) some checkpoints renamed
  }
  JOULE_RETURN_IF_ERROR(SyncDirectory(checkpoints_dir));
  return stats;
}

bool CheckpointsHoldEngineState(const std::string& checkpoints_dir,
                                const stream::EngineOptions& engine,
                                stream::TimezoneProvider* timezones) {
  std::error_code ec;
  if (!std::filesystem::is_directory(checkpoints_dir, ec)) return false;
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(checkpoints_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.starts_with("processor-")) continue;
    // A seed killed while it renamed its files: the checkpoints are partly seeded.
    if (name.ends_with(std::string(".ckpt") + kSeedSuffix)) return false;
    if (name.ends_with(".ckpt")) files.push_back(entry.path());
  }
  if (ec) return true;
  for (const std::filesystem::path& path : files) {
    Result<std::optional<ProcessorCheckpoint>> ckpt = ReadCheckpointFile(path.string());
    if (!ckpt.ok()) return true;
    if (!*ckpt) continue;
    if (!(*ckpt)->readings.empty()) return true;
    stream::WindowEngine e(engine, timezones);
    if (!e.RestoreState((*ckpt)->engine_state).ok()) return true;
    if (e.counters().devices > 0) return true;
  }
  return false;
}

}  // namespace joule::app

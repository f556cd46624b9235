#include "app/replay.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <map>
#include <memory>
#include <unordered_set>
#include <utility>
#include <vector>

#include "app/replay_journal.h"
#include "common/clock.h"
#include "common/crash_point.h"
#include "common/time_format.h"
#include "store/archive/archive_reader.h"

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
// (device, timestamp), first by received_at, then in archive order (commit order, which
// follows the log, within an hour file).
uint64_t DropDuplicates(std::vector<model::Event>* events) {
  // The first copy received wins, as in the live engine (the archive is ordered by event
  // hour, so a copy with another event time may come first in it: found by a black-box
  // test, where replay kept a later copy from the hour before).
  std::stable_sort(events->begin(), events->end(),
                   [](const model::Event& a, const model::Event& b) {
                     return a.received_at_ns < b.received_at_ns;
                   });
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

// True when the recomputed record `r` has less of something the archive's absence can remove
// than the stored record (docs/formats/archive.md, "Versions"). A replay only ever adds events
// the live engine missed, and adding samples never lowers the event count, a metric's sample
// count, or a power metric's covered time (a sample between two others splits their interval
// into two shorter ones: the covered time stays or grows). So a correct recomputation has at
// least the stored record's count, every stored metric with at least its samples, and at
// least its covered time; less of any of them means the archive lacks events the live engine
// saw — in the window itself, or a neighbour within max_gap whose interval reached into it
// (found by a black-box test: with one archive hour missing, the minute and the hour before
// it kept their event counts but lost energy and coverage, and replay overwrote them).
bool LacksStoredContent(const model::AggregateRecord& r, const model::AggregateRecord& stored) {
  if (r.count < stored.count) return true;
  for (const model::MetricAggregate& s : stored.metrics) {
    const model::MetricAggregate* m = r.FindMetric(s.name);
    if (m == nullptr || m->count < s.count) return true;
    if (s.kind == model::MetricKind::kPower && m->kind == model::MetricKind::kPower &&
        m->covered_ns < s.covered_ns) {
      return true;
    }
  }
  return false;
}

int64_t SaturatingAdd(int64_t a, int64_t b) {
  return a > std::numeric_limits<int64_t>::max() - b ? std::numeric_limits<int64_t>::max() : a + b;
}

}  // namespace

Result<ReplayStats> ReplayArchive(const ReplayRequest& req, store::HistoryStore* history,
                                  store::LatestStore* latest, stream::TimezoneProvider* timezones,
                                  const std::function<void(const ReplayProgress&)>& progress) {
  ReplayProgress prog;
  ReplayStats& stats = prog.stats;
  const Clock* wall = SystemClock::Default();
  int64_t last_report = 0;
  // Reports phase changes at once, and within a phase at most once a second.
  auto report = [&](bool force) {
    if (!progress) return;
    const int64_t now = wall->NowNanos();
    if (!force && now - last_report < kNanosPerSecond) return;
    last_report = now;
    progress(prog);
  };
  auto cancelled = [&] { return req.cancel && req.cancel->load(); };
  const stream::EngineOptions& opt = req.engine;
  // The windows recomputed: those overlapping [from − max_gap, to + max_gap). An event's
  // energy interval (or counter increment) reaches up to max_gap into the windows before and
  // after it, so a too-late event at the range's edge changes a neighbour outside [from, to)
  // too: a narrow replay left it stale (found by a black-box test).
  const int64_t from_ns = req.from_ns - opt.max_gap_ns;
  const int64_t to_ns = SaturatingAdd(req.to_ns, opt.max_gap_ns);
  // Context around the range: a 1d window overlapping it lasts at most 25 h, and its
  // first and last samples need their neighbours within max_gap. After the range, also
  // what is needed to know whether its windows are settled (the watermark must be
  // allowed_lateness + max_gap past their end).
  const int64_t pad = 26 * kNanosPerHour + opt.max_gap_ns;
  const int64_t after = std::max(
      pad, opt.allowed_lateness_ns + opt.max_gap_ns + opt.out_of_orderness_ns + opt.window_ns);
  const int64_t scan_from = from_ns - pad;
  const int64_t scan_to = req.device_events && !req.dry_run ? std::numeric_limits<int64_t>::max()
                                                            : SaturatingAdd(to_ns, after);
  DeviceEvents by_device;
  prog.phase = "reading";
  report(true);
  JOULE_RETURN_IF_ERROR(store::ScanArchive(
      req.archive_dir, scan_from, scan_to,
      [&](const model::Event& e, std::string_view) {
        if (cancelled()) return Status::Ok();
        if (!req.devices.empty() && !req.devices.count(e.device_id)) return Status::Ok();
        by_device[e.device_id].push_back(e);
        ++stats.events_read;
        return Status::Ok();
      },
      [&](const store::ArchiveFile&, size_t i, size_t n) {
        if (cancelled()) return;
        prog.files_done = i;
        prog.files_total = n;
        report(false);
      }));
  if (cancelled()) return Status::Unavailable("replay cancelled (server stopping)");
  if (prog.files_total > 0) prog.files_done = prog.files_total;
  report(true);  // the end of reading: files n/n
  stats.devices = by_device.size();
  prog.devices_total = by_device.size();
  prog.phase = "computing";
  report(true);

  // Commits the batch collected so far (app/replay_journal.h): the journal (when there are
  // corrections to hand over), history and the latest store, the hand-over; the journal
  // goes once the engines hold the corrections durably.
  ReplayJournal batch;
  auto commit = [&]() -> Status {
    if (batch.writes.empty()) return Status::Ok();
    const bool journaled = !req.journal_dir.empty() && req.hand_over && !batch.corrections.empty();
    if (journaled) {
      JOULE_ASSIGN_OR_RETURN(batch.seq, AllocateReplayJournalSeq(req.journal_dir));
      JOULE_RETURN_IF_ERROR(WriteReplayJournal(req.journal_dir, batch));
      CrashPoint("replay.after_journal");  // journal durable, history not yet written
    }
    JOULE_RETURN_IF_ERROR(history->Put(batch.writes));
    if (latest) {
      for (const auto& r : batch.writes) {
        if (r.resolution == model::Resolution::kBase) JOULE_RETURN_IF_ERROR(latest->PutRecord(r));
      }
    }
    JOULE_RETURN_IF_ERROR(history->Flush());
    // History has the new minutes: a replay run again finds them unchanged and hands
    // nothing over, so from here on only the journal holds the difference.
    CrashPoint("replay.after_history");
    if (req.hand_over && !batch.corrections.empty()) {
      JOULE_ASSIGN_OR_RETURN(bool durable, req.hand_over(batch.seq, batch.corrections));
      CrashPoint("replay.after_hand_over");  // the engines hold it, the journal is still there
      if (journaled && durable) {
        JOULE_RETURN_IF_ERROR(RemoveReplayJournal(req.journal_dir, batch.seq));
      }
    }
    batch = ReplayJournal{};
    return Status::Ok();
  };

  stream::EngineOptions engine_options = opt;
  // Only final records matter here: no early firings.
  engine_options.early_fire_interval_ns = std::numeric_limits<int64_t>::max() / 4;

  for (auto& [device_id, events] : by_device) {
    if (cancelled()) return Status::Unavailable("replay cancelled (server stopping)");
    stats.duplicates += DropDuplicates(&events);
    std::stable_sort(events.begin(), events.end(),
                     [](const model::Event& a, const model::Event& b) {
                       return a.timestamp_ns < b.timestamp_ns;
                     });
    // The watermark the live engine has at least once it has processed every archived
    // event of the device (and every event acknowledged after them).
    int64_t watermark = events.back().timestamp_ns - opt.out_of_orderness_ns;
    int64_t live = 0;
    if (req.live_watermark && req.live_watermark(device_id, &live)) {
      watermark = std::max(watermark, live);
    }
    const int64_t settled_end = watermark - opt.allowed_lateness_ns - opt.max_gap_ns;
    if (req.device_events && !req.dry_run) req.device_events(device_id, events, settled_end);

    // In event-time order with processing time = event time: exactly what the engine
    // computes for in-order input, without lateness.
    stream::WindowEngine engine(engine_options, timezones);
    CollectingSink sink;
    for (const auto& e : events) {
      if (!engine.Process(e, e.timestamp_ns, &sink)) {  // its local days are not guessed
        return Status::Unavailable(
            fmt::format("the metadata store cannot say device {}'s timezone now (unreachable): "
                        "replay stopped before it; run it again once the store answers",
                        device_id));
      }
    }
    // Silent long enough for every window, days included, to be final.
    engine.Tick(events.back().timestamp_ns + 3 * kNanosPerDay + opt.idle_timeout_ns, &sink);

    for (auto& [key, r] : sink.records()) {
      if (r.window_end_ns <= from_ns || r.window_start_ns >= to_ns || !r.final) continue;
      ++stats.records_computed;
      // Past the history store's retention: it drops the write, and its Get answers
      // nothing, so the live record (which the engine's rollups may still hold) is unknown.
      // Written as new, the minute would be counted as written on every run, and its whole
      // content added again to the open 1h/1d rollups each time (found by a black-box test).
      if (r.window_start_ns < history->ReadHorizon(r.resolution)) {
        ++stats.records_expired;
        continue;
      }
      if (r.window_end_ns > settled_end) {
        ++stats.records_live;
        continue;
      }
      JOULE_ASSIGN_OR_RETURN(std::optional<model::AggregateRecord> stored,
                             history->Get(r.device_id, r.resolution, r.window_start_ns));
      // Checked again when nothing is stored: the horizon may have passed the window since
      // the check above, and then nothing says whether the live engine had it.
      if (!stored && r.window_start_ns < history->ReadHorizon(r.resolution)) {
        ++stats.records_expired;
        continue;
      }
      if (stored) {
        model::AggregateRecord same = r;
        same.version = stored->version;
        if (same == *stored) {
          ++stats.records_unchanged;
          continue;
        }
        if (LacksStoredContent(r, *stored)) {
          ++stats.records_incomplete;
          continue;
        }
        r.version = std::max(stored->version + 1, kReplayVersionBase);
      } else {
        r.version = kReplayVersionBase;
      }
      ++stats.records_written;
      if (req.dry_run) continue;
      // The rollups above the changed minutes that are not settled stay the live engine's:
      // it gets the difference (a settled rollup is written here, with a version the
      // live engine's re-emission cannot reach).
      if (r.resolution == model::Resolution::kBase) {
        batch.corrections.push_back({stored ? *stored : model::AggregateRecord{}, r});
      }
      batch.writes.push_back(r);
    }
    ++prog.devices_done;
    if (batch.writes.size() >= req.batch_records) JOULE_RETURN_IF_ERROR(commit());
    report(false);
  }
  report(true);  // the end of computing: devices n/n
  JOULE_RETURN_IF_ERROR(commit());
  prog.phase = "done";
  report(true);
  return stats;
}

Result<std::set<std::string, std::less<>>> ReplayDevices(store::MetadataStore* metadata,
                                                         const std::string& device_id,
                                                         const std::string& owner_id,
                                                         bool unregistered_ids_archived) {
  std::set<std::string, std::less<>> devices;
  if (!device_id.empty() && metadata && !unregistered_ids_archived) {
    // With authentication on, ingest takes events of registered devices only, so an id the
    // metadata store has never known (neither registered nor deleted: a deleted device's
    // rows stay replayable) has none in the archive: NotFound, as for an unknown owner
    // (found by a black-box test: `--device nosuch` succeeded with 0 events).
    Result<store::Device> d = metadata->GetDevice(device_id);
    if (!d.ok() && d.status().code() != StatusCode::kNotFound) return d.status();
    if (!d.ok()) {
      JOULE_ASSIGN_OR_RETURN(std::optional<std::string> deleted_for,
                             metadata->DeletedDeviceOwner(device_id));
      if (!deleted_for) {
        return Status::NotFound(
            fmt::format("device {} is not registered and never was", device_id));
      }
    }
  }
  if (!device_id.empty()) devices.insert(device_id);
  if (owner_id.empty()) return devices;
  if (!metadata) return Status::InvalidArgument("owner_id needs the metadata store");
  store::ListDevicesOptions lo;
  lo.owner_id = owner_id;
  while (true) {
    JOULE_ASSIGN_OR_RETURN(store::DevicePage page, metadata->ListDevices(lo));
    for (const auto& d : page.devices) devices.insert(d.device_id);
    if (page.next_cursor.empty()) break;
    lo.after = page.next_cursor;
  }
  if (devices.empty()) return Status::NotFound(fmt::format("owner {} has no devices", owner_id));
  return devices;
}

void WriteReplayStats(JsonWriter& w, const ReplayStats& s) {
  const std::pair<const char*, uint64_t> fields[] = {{"events_read", s.events_read},
                                                     {"duplicates", s.duplicates},
                                                     {"devices", s.devices},
                                                     {"records_computed", s.records_computed},
                                                     {"records_written", s.records_written},
                                                     {"records_unchanged", s.records_unchanged},
                                                     {"records_live", s.records_live},
                                                     {"records_incomplete", s.records_incomplete},
                                                     {"records_expired", s.records_expired}};
  for (const auto& [k, v] : fields) {
    w.Key(k);
    w.Uint(v);
  }
}

std::string ReplayProgressLine(const ReplayProgress& p) {
  const ReplayStats& s = p.stats;
  if (p.phase == "reading" && p.files_total == 0) {
    return fmt::format("reading archive, {} events", s.events_read);
  }
  if (p.phase == "reading") {
    return fmt::format("reading archive: file {}/{}, {} events", p.files_done, p.files_total,
                       s.events_read);
  }
  if (p.phase == "computing") {
    return fmt::format("computing: device {}/{}, {} records computed, {} written", p.devices_done,
                       p.devices_total, s.records_computed, s.records_written);
  }
  if (p.phase == "done") {
    return fmt::format(
        "done: {} events of {} devices, {} records computed, {} written, {} "
        "unchanged, {} live, {} incomplete, {} expired",
        s.events_read, s.devices, s.records_computed, s.records_written, s.records_unchanged,
        s.records_live, s.records_incomplete, s.records_expired);
  }
  return p.phase;
}

}  // namespace joule::app

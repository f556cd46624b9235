#include "store/latest_catchup.h"

#include <algorithm>
#include <utility>

namespace joule::store {

LatestCatchUp::LatestCatchUp(LatestStore* latest, LatestStoreHealth* health, HistoryStore* history,
                             LatestCatchUpOptions options, MetricsRegistry* metrics)
    : latest_(latest), health_(health), history_(history), options_(options) {
  options_.drain_batch = std::max<size_t>(1, options_.drain_batch);
  if (metrics != nullptr) {
    errors_ = metrics->GetCounter("joule_sink_errors_total", "Failed sink writes",
                                  {{"sink", std::string(latest->backend())}});
    deferred_ = metrics->GetCounter(
        "joule_latest_deferred_total",
        "Latest-store writes (records and readings) deferred while it was unreachable");
    written_ = metrics->GetCounter(
        "joule_latest_catchup_written_total",
        "Records and readings written to the latest store by the catch-up after an outage");
    overflowed_ = metrics->GetCounter(
        "joule_latest_catchup_overflows_total",
        "Devices whose deferred records passed the bound and are re-read from history");
    reread_ = metrics->GetCounter("joule_latest_catchup_history_records_total",
                                  "Records read back from history by the catch-up");
    resyncs_ = metrics->GetCounter(
        "joule_latest_resync_devices_total",
        "Devices rewritten from history because the latest store came back empty");
  }
}

void LatestCatchUp::Failed(const Status& st) {
  if (errors_ != nullptr) errors_->Inc();
  if (health_ != nullptr && st.code() == StatusCode::kUnavailable) health_->ReportFailure(st);
}

bool LatestCatchUp::Settled(const Status& st) {
  if (st.ok()) return true;
  Failed(st);
  // Only a store that may come back is worth waiting for; other errors are counted.
  return health_ == nullptr || st.code() != StatusCode::kUnavailable;
}

void LatestCatchUp::PutRecord(const model::AggregateRecord& record) {
  if (record.resolution != model::Resolution::kBase) return;  // the latest store keeps base only
  if (StoreUp() && Settled(latest_->PutRecord(record))) return;
  if (deferred_ != nullptr) deferred_->Inc();
  Remember(record);
  PublishCounts();
}

void LatestCatchUp::PutRecords(std::span<const model::AggregateRecord> records) {
  if (records.empty()) return;
  if (StoreUp() && Settled(latest_->PutRecords(records))) return;
  for (const model::AggregateRecord& r : records) {
    if (r.resolution != model::Resolution::kBase) continue;
    if (deferred_ != nullptr) deferred_->Inc();
    Remember(r);
  }
  PublishCounts();
}

void LatestCatchUp::PutReading(const model::Event& event) {
  if (StoreUp() && Settled(latest_->PutReading(event))) return;
  if (deferred_ != nullptr) deferred_->Inc();
  RememberReading(event.device_id);
  PublishCounts();
}

void LatestCatchUp::PutReadings(std::span<const model::Event> events) {
  if (events.empty()) return;
  if (StoreUp() && Settled(latest_->PutReadings(events))) return;
  if (deferred_ != nullptr) deferred_->Inc(events.size());
  for (const model::Event& e : events) RememberReading(e.device_id);
  PublishCounts();
}

LatestCatchUp::DeviceBacklog& LatestCatchUp::Backlog(const std::string& device_id) {
  return devices_[device_id];
}

void LatestCatchUp::Remember(const model::AggregateRecord& record) {
  DeviceBacklog& d = Backlog(record.device_id);
  const bool rereading = d.reread_from_ns != std::numeric_limits<int64_t>::max();
  if (rereading && record.window_start_ns >= d.reread_from_ns) return;  // history has it
  auto it = d.windows.find(record.window_start_ns);
  if (it != d.windows.end()) {
    if (it->second.version < record.version) it->second = record;
    return;
  }
  if (records_ < options_.max_records && !rereading) {
    d.windows.emplace(record.window_start_ns, record);
    ++records_;
    return;
  }
  // Past the bound (or already re-reading): this device's windows come back from history.
  if (!rereading && overflowed_ != nullptr) overflowed_->Inc();
  int64_t from = std::min(d.reread_from_ns, record.window_start_ns);
  if (!d.windows.empty()) from = std::min(from, d.windows.begin()->first);
  records_ -= d.windows.size();
  d.windows.clear();
  d.reread_from_ns = from;
}

void LatestCatchUp::RememberReading(const std::string& device_id) {
  Backlog(device_id).reading = true;
}

void LatestCatchUp::Resync(const std::string& device_id) {
  DeviceBacklog& d = Backlog(device_id);
  d.reading = true;
  d.newest = true;
  if (resyncs_ != nullptr) resyncs_->Inc();
  PublishCounts();
}

void LatestCatchUp::Erase(std::unordered_map<std::string, DeviceBacklog>::iterator it) {
  records_ -= it->second.windows.size();
  devices_.erase(it);
}

void LatestCatchUp::PublishCounts() {
  pending_records_.store(records_, std::memory_order_relaxed);
  pending_devices_.store(devices_.size(), std::memory_order_relaxed);
}

bool LatestCatchUp::WriteBatch(std::vector<model::AggregateRecord>* batch) {
  if (batch->empty()) return true;
  Status st = latest_->PutRecords(*batch);
  if (!st.ok()) {
    Failed(st);
    return false;  // the caller puts the batch back
  }
  if (written_ != nullptr) written_->Inc(batch->size());
  batch->clear();
  return true;
}

void LatestCatchUp::Drain(const ReadingLookup& reading_of) {
  if (devices_.empty() || !StoreUp()) return;
  constexpr int64_t kNone = std::numeric_limits<int64_t>::max();
  constexpr size_t kPipeline = 256;  // records per round trip
  size_t budget = options_.drain_batch;
  std::vector<model::AggregateRecord> batch;  // taken out of the backlog, not yet written
  batch.reserve(std::min(budget, kPipeline));
  bool ok = true;
  auto it = devices_.begin();
  while (ok && budget > 0 && it != devices_.end()) {
    DeviceBacklog& d = it->second;
    const std::string& id = it->first;
    if (d.newest && history_ != nullptr) {
      // First, and replacing whatever the store holds for the device: after a resync the
      // store may hold another data dir's records of higher versions (an older or another
      // Joule's), which versioned writes would never replace. Buffered records and
      // re-reads follow, version-guarded as always.
      auto newest = history_->Latest(id, model::Resolution::kBase, options_.resync_windows);
      if (!newest.ok()) {
        if (errors_ != nullptr) errors_->Inc();
        break;
      }
      if (reread_ != nullptr) reread_->Inc(newest->size());
      const model::Event* e = reading_of ? reading_of(id) : nullptr;
      Status st = latest_->ReplaceDevice(id, *newest, e);
      if (!st.ok()) {
        Failed(st);
        ok = false;
        break;
      }
      if (written_ != nullptr) written_->Inc(newest->size() + (e != nullptr ? 1 : 0));
      budget -= std::min(budget, std::max<size_t>(newest->size(), 1));
      d.newest = false;
      d.reading = false;
    }
    if (ok && budget > 0 && d.reading) {
      if (const model::Event* e = reading_of ? reading_of(id) : nullptr) {
        Status st = latest_->PutReading(*e);
        if (!st.ok()) {
          Failed(st);
          ok = false;
          break;
        }
        if (written_ != nullptr) written_->Inc();
      }
      d.reading = false;
      --budget;
    }
    while (ok && budget > 0 && !d.windows.empty()) {
      auto w = d.windows.begin();
      batch.push_back(std::move(w->second));
      d.windows.erase(w);
      --records_;
      --budget;
      if (batch.size() >= kPipeline) ok = WriteBatch(&batch);
    }
    if (ok && budget > 0 && d.reread_from_ns != kNone) {
      // The buffered records go first: the history cursor below only moves forward.
      ok = WriteBatch(&batch);
      if (!ok) break;
      if (history_ == nullptr) {
        d.reread_from_ns = kNone;
      } else {
        HistoryQuery q;
        q.device_id = id;
        q.resolution = model::Resolution::kBase;
        q.from_ns = d.reread_from_ns;
        q.to_ns = kNone;
        q.limit = std::min(budget, kPipeline);
        Result<HistoryPage> page = history_->Range(q);
        if (!page.ok()) {
          if (errors_ != nullptr) errors_->Inc();
          break;  // tried again on the next call
        }
        const size_t n = page->records.size();
        if (reread_ != nullptr) reread_->Inc(n);
        if (n > 0) {
          Status st = latest_->PutRecords(page->records);
          if (!st.ok()) {
            Failed(st);
            ok = false;
            break;
          }
          if (written_ != nullptr) written_->Inc(n);
        }
        budget -= std::min(budget, std::max<size_t>(n, 1));
        d.reread_from_ns = n < q.limit ? kNone : page->records.back().window_start_ns + 1;
      }
    }
    if (d.newest && history_ == nullptr) d.newest = false;  // nothing to rewrite from
    if (!ok) break;
    if (!d.reading && !d.newest && d.windows.empty() && d.reread_from_ns == kNone) {
      auto done = it++;
      Erase(done);  // its records still in `batch` are put back if that write fails
    } else {
      ++it;
    }
  }
  if (ok) ok = WriteBatch(&batch);
  if (!ok) {
    for (const model::AggregateRecord& r : batch) Remember(r);  // the highest version wins
  }
  PublishCounts();
}

std::vector<LatestCatchUp::Marker> LatestCatchUp::Markers() const {
  std::vector<Marker> out;
  out.reserve(devices_.size());
  for (const auto& [id, d] : devices_) {
    Marker m;
    m.device_id = id;
    m.from_ns = d.reread_from_ns;
    if (!d.windows.empty()) m.from_ns = std::min(m.from_ns, d.windows.begin()->first);
    m.reading = d.reading;
    m.newest = d.newest;
    out.push_back(std::move(m));
  }
  return out;
}

void LatestCatchUp::AddMarkers(const std::vector<Marker>& markers) {
  for (const Marker& m : markers) {
    DeviceBacklog& d = Backlog(m.device_id);
    d.reading = d.reading || m.reading;
    d.newest = d.newest || m.newest;
    if (m.from_ns != std::numeric_limits<int64_t>::max()) {
      int64_t from = std::min(d.reread_from_ns, m.from_ns);
      if (!d.windows.empty()) from = std::min(from, d.windows.begin()->first);
      records_ -= d.windows.size();
      d.windows.clear();
      d.reread_from_ns = from;
    }
  }
  PublishCounts();
}

}  // namespace joule::store

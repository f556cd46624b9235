#include "store/history_memory/memory_history_store.h"

#include <algorithm>
#include <mutex>

namespace joule::store {
namespace {

Status ValidateKey(std::string_view device_id, model::Resolution r) {
  if (device_id.empty() || device_id.size() > 255) {
    return Status::InvalidArgument("history: device_id must be 1..255 bytes");
  }
  if (static_cast<uint8_t>(r) > 2) return Status::InvalidArgument("history: unknown resolution");
  return Status::Ok();
}

}  // namespace

MemoryHistoryStore::MemoryHistoryStore(HistoryRetention retention, const Clock* clock)
    : retention_(retention), clock_(clock != nullptr ? clock : SystemClock::Default()) {}

int64_t MemoryHistoryStore::Horizon(model::Resolution r) const {
  return retention_.Horizon(r, clock_->NowNanos());
}

const MemoryHistoryStore::Series* MemoryHistoryStore::FindSeries(model::Resolution r,
                                                                 std::string_view device_id) const {
  auto it = series_.find(SeriesKey(r, std::string(device_id)));
  return it == series_.end() ? nullptr : &it->second;
}

Status MemoryHistoryStore::Put(const std::vector<model::AggregateRecord>& records) {
  for (const auto& r : records) JOULE_RETURN_IF_ERROR(ValidateKey(r.device_id, r.resolution));
  std::vector<const model::AggregateRecord*> written;
  {
    std::unique_lock lock(mu_);
    for (const auto& r : records) {
      if (r.window_start_ns < Horizon(r.resolution)) continue;
      Series& s = series_[SeriesKey(r.resolution, r.device_id)];
      auto [it, inserted] = s.try_emplace(r.window_start_ns, r);
      if (inserted) {
        written.push_back(&r);
      } else if (it->second.version < r.version) {
        it->second = r;
        written.push_back(&r);
      } else {
        ++stale_writes_;
      }
    }
  }
  if (observer_) {
    for (const auto* r : written) observer_(*r);
  }
  return Status::Ok();
}

void MemoryHistoryStore::SetWriteObserver(WriteObserver observer) {
  std::unique_lock lock(mu_);
  observer_ = std::move(observer);
}

int64_t MemoryHistoryStore::ReadHorizon(model::Resolution r) const { return Horizon(r); }

namespace {

class HeldEntry final : public HistoryEntry {
 public:
  const model::AggregateRecord* record = nullptr;
  Result<model::AggregateRecord> Decode() const override { return *record; }
};

}  // namespace

Result<std::string> MemoryHistoryStore::Scan(const HistoryQuery& q, const HistoryVisitor& visit) {
  JOULE_RETURN_IF_ERROR(ValidateHistoryQuery(q));
  JOULE_ASSIGN_OR_RETURN(int64_t start, history_cursor::Start(q));
  start = std::max(start, Horizon(q.resolution));
  std::string next_cursor;
  if (start >= q.to_ns) return next_cursor;
  std::shared_lock lock(mu_);
  const Series* s = FindSeries(q.resolution, q.device_id);
  if (s == nullptr) return next_cursor;
  size_t seen = 0;
  HeldEntry entry;
  for (auto it = s->lower_bound(start); it != s->end() && it->first < q.to_ns; ++it) {
    if (seen == q.limit) {
      next_cursor = history_cursor::Encode(q, it->first);
      break;
    }
    entry.window_start_ns = it->first;
    entry.version = it->second.version;
    entry.record = &it->second;
    JOULE_RETURN_IF_ERROR(visit(entry));
    ++seen;
  }
  return next_cursor;
}

Result<HistoryPage> MemoryHistoryStore::Range(const HistoryQuery& q) {
  HistoryPage page;
  auto collect = [&page](const HistoryEntry& e) -> Status {
    Result<model::AggregateRecord> record = e.Decode();
    if (!record.ok()) return record.status();
    page.records.push_back(std::move(record).value());
    return Status::Ok();
  };
  JOULE_ASSIGN_OR_RETURN(page.next_cursor, Scan(q, collect));
  return page;
}

Result<std::optional<model::AggregateRecord>> MemoryHistoryStore::Get(std::string_view device_id,
                                                                      model::Resolution r,
                                                                      int64_t window_start_ns) {
  JOULE_RETURN_IF_ERROR(ValidateKey(device_id, r));
  std::optional<model::AggregateRecord> out;
  if (window_start_ns < Horizon(r)) return out;
  std::shared_lock lock(mu_);
  if (const Series* s = FindSeries(r, device_id)) {
    auto it = s->find(window_start_ns);
    if (it != s->end()) out = it->second;
  }
  return out;
}

Result<std::vector<model::AggregateRecord>> MemoryHistoryStore::Latest(std::string_view device_id,
                                                                       model::Resolution r,
                                                                       size_t n) {
  JOULE_RETURN_IF_ERROR(ValidateKey(device_id, r));
  std::vector<model::AggregateRecord> out;
  const int64_t horizon = Horizon(r);
  std::shared_lock lock(mu_);
  const Series* s = FindSeries(r, device_id);
  if (s == nullptr) return out;
  for (auto it = s->rbegin(); it != s->rend() && out.size() < n && it->first >= horizon; ++it) {
    out.push_back(it->second);
  }
  return out;
}

uint64_t MemoryHistoryStore::stale_writes() const {
  std::shared_lock lock(mu_);
  return stale_writes_;
}

size_t MemoryHistoryStore::size() const {
  std::shared_lock lock(mu_);
  size_t n = 0;
  for (const auto& [key, s] : series_) n += s.size();
  return n;
}

}  // namespace joule::store

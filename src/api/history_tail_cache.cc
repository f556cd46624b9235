#include "api/history_tail_cache.h"

#include <utility>

namespace joule::api {

Result<HistoryTailCache::Records> HistoryTailCache::Latest(store::HistoryStore& history,
                                                           RecordJsonCache* writes,
                                                           std::string_view device_id, size_t n) {
  std::shared_ptr<RecordJsonCache::Series> series;
  if (writes != nullptr && writes->attached()) {
    series = writes->Open(device_id, model::Resolution::kBase);
  }
  if (series == nullptr) {
    Result<std::vector<model::AggregateRecord>> read =
        history.Latest(device_id, model::Resolution::kBase, n);
    if (!read.ok()) return read.status();
    return Records(std::make_shared<const std::vector<model::AggregateRecord>>(std::move(*read)));
  }
  // Taken before the read: a write that the read may miss moves it on.
  const uint64_t write_count = writes->WriteCount(*series);
  Records kept;
  {
    std::lock_guard lock(mu_);
    auto it = entries_.find(std::string(device_id));
    if (it != entries_.end() && it->second.series == series &&
        it->second.write_count == write_count && it->second.n == n) {
      kept = it->second.records;
      ++hits_;
    } else {
      ++misses_;
    }
  }
  if (kept) {
    const int64_t horizon = history.ReadHorizon(model::Resolution::kBase);
    size_t live = 0;
    while (live < kept->size() && (*kept)[live].window_start_ns >= horizon) ++live;
    if (live == kept->size()) return kept;
    // Newest first: the expired ones are at the end.
    return Records(std::make_shared<const std::vector<model::AggregateRecord>>(
        kept->begin(), kept->begin() + static_cast<std::ptrdiff_t>(live)));
  }
  Result<std::vector<model::AggregateRecord>> read =
      history.Latest(device_id, model::Resolution::kBase, n);
  if (!read.ok()) return read.status();
  Records records = std::make_shared<const std::vector<model::AggregateRecord>>(std::move(*read));
  if (records->size() <= max_records_) {
    std::lock_guard lock(mu_);
    auto [it, inserted] = entries_.try_emplace(std::string(device_id));
    if (!inserted) records_ -= it->second.records->size();
    if (records_ + records->size() > max_records_) {
      entries_.clear();
      records_ = 0;
      it = entries_.try_emplace(std::string(device_id)).first;
    }
    it->second = Entry{std::move(series), write_count, n, records};
    records_ += records->size();
  }
  return records;
}

size_t HistoryTailCache::hits() const {
  std::lock_guard lock(mu_);
  return hits_;
}

size_t HistoryTailCache::misses() const {
  std::lock_guard lock(mu_);
  return misses_;
}

}  // namespace joule::api

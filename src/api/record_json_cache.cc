#include "api/record_json_cache.h"

#include <zstd.h>

#include <iterator>
#include <vector>

namespace joule::api {

namespace {
// Costs besides the JSON bytes, so that the bound holds for small records and for many
// (possibly empty) series: a map node with its string header, and a series with its key,
// map headers and LRU node. Estimates.
constexpr size_t kEntryOverhead = 96;
constexpr size_t kSeriesOverhead = 256;
constexpr size_t kPagesPerSeries = 2;  // JSON pages; as many again of keyed pages

std::string SeriesKey(std::string_view device_id, model::Resolution resolution) {
  std::string key;
  key.reserve(device_id.size() + 1);
  key.push_back(static_cast<char>(resolution));
  key.append(device_id);
  return key;
}
}  // namespace

class RecordJsonCache::Series {
 public:
  struct Entry {
    uint64_t version = 0;
    std::string json;
  };
  std::mutex mu;  // guards everything below
  std::map<int64_t, Entry> entries;
  // Disjoint, non-adjacent ranges [first, second) whose every stored record is in entries.
  std::map<int64_t, int64_t> covered;
  // Assembled pages (CoveredPage), most recently built last.
  struct Page {
    int64_t from = 0;
    int64_t to = 0;
    size_t limit = 0;
    size_t records = 0;
    std::shared_ptr<const std::string> json;
    std::shared_ptr<const std::string> zstd;  // CompressedPage
  };
  std::vector<Page> pages;
  // KeepPage's pages: the key, with the range they were read from.
  struct Keyed {
    std::string key;
    int64_t from = 0;
    int64_t to = 0;
    KeyedPage page;
  };
  std::vector<Keyed> keyed;
  uint64_t writes = 0;  // entries changed by a write, a trim or a dropped range
  size_t bytes = kSeriesOverhead;
  bool evicted = false;
  // Guarded by the cache's mu_.
  std::string key;
  std::list<Series*>::iterator lru_position;

  // Drops the pages whose range holds `window_start`, or every page below `before` when
  // `before` is set; returns the bytes freed.
  size_t DropPages(int64_t window_start, bool below = false) {
    size_t freed = 0;
    for (auto it = pages.begin(); it != pages.end();) {
      const bool hit =
          below ? it->from < window_start : (it->from <= window_start && window_start < it->to);
      if (!hit) {
        ++it;
        continue;
      }
      freed += it->json->size() + (it->zstd ? it->zstd->size() : 0);
      it = pages.erase(it);
    }
    for (auto it = keyed.begin(); it != keyed.end();) {
      const bool hit =
          below ? it->from < window_start : (it->from <= window_start && window_start < it->to);
      if (!hit) {
        ++it;
        continue;
      }
      freed += it->page.body->size() + it->key.size() + it->page.next_cursor.size();
      it = keyed.erase(it);
    }
    ++writes;
    bytes -= freed;
    return freed;
  }

  bool Covers(int64_t from, int64_t to) const {
    if (from >= to) return true;
    auto it = covered.upper_bound(from);
    if (it == covered.begin()) return false;
    --it;
    return it->first <= from && it->second >= to;
  }
  void Cover(int64_t from, int64_t to) {
    if (from >= to) return;
    auto it = covered.upper_bound(from);
    if (it != covered.begin()) {
      auto prev = std::prev(it);
      if (prev->second >= from) {  // overlaps or touches: extend it
        from = prev->first;
        to = std::max(to, prev->second);
        it = covered.erase(prev);
      }
    }
    while (it != covered.end() && it->first <= to) {
      to = std::max(to, it->second);
      it = covered.erase(it);
    }
    covered.emplace(from, to);
  }
};

RecordJsonCache::RecordJsonCache(size_t max_bytes, MetricsRegistry* metrics)
    : max_bytes_(max_bytes) {
  if (metrics != nullptr) {
    hits_ = metrics->GetCounter("joule_history_json_cache_hits_total",
                                "History records answered from their cached JSON");
    misses_ = metrics->GetCounter("joule_history_json_cache_misses_total",
                                  "History records decoded and encoded to JSON on a read");
    covered_ = metrics->GetCounter(
        "joule_history_json_cache_covered_reads_total",
        "History pages answered wholly from the JSON cache, without reading the store");
    evictions_ = metrics->GetCounter("joule_history_json_cache_evictions_total",
                                     "Device series dropped from the history JSON cache");
    bytes_gauge_ = metrics->GetGauge("joule_history_json_cache_bytes",
                                     "Bytes held by the history JSON cache (estimate)");
  }
}

RecordJsonCache::~RecordJsonCache() = default;

void RecordJsonCache::Attach(store::HistoryStore* store) {
  if (max_bytes_ == 0 || store == nullptr) return;
  store->SetWriteObserver([this](const model::AggregateRecord& r) { OnWrite(r); });
  attached_ = true;
}

void RecordJsonCache::Account(long delta) {
  if (delta >= 0) {
    bytes_.fetch_add(static_cast<size_t>(delta), std::memory_order_relaxed);
  } else {
    bytes_.fetch_sub(static_cast<size_t>(-delta), std::memory_order_relaxed);
  }
}

std::shared_ptr<RecordJsonCache::Series> RecordJsonCache::Open(std::string_view device_id,
                                                               model::Resolution resolution) {
  if (max_bytes_ == 0) return nullptr;
  std::shared_ptr<Series> series;
  bool created = false;
  {
    std::lock_guard lock(mu_);
    auto [it, inserted] = series_.try_emplace(SeriesKey(device_id, resolution));
    if (inserted) {
      it->second = std::make_shared<Series>();
      it->second->key = it->first;
      lru_.push_front(it->second.get());
      it->second->lru_position = lru_.begin();
      Account(static_cast<long>(kSeriesOverhead));
      created = true;
    } else {
      lru_.splice(lru_.begin(), lru_, it->second->lru_position);
    }
    series = it->second;
  }
  if (created && bytes() > max_bytes_) EvictOverflow();
  return series;
}

bool RecordJsonCache::Append(Series& series, int64_t window_start_ns, uint64_t version,
                             std::string* out) {
  {
    std::lock_guard lock(series.mu);
    auto it = series.entries.find(window_start_ns);
    if (it != series.entries.end() && it->second.version == version) {
      out->append(it->second.json);
      if (hits_) hits_->Inc();
      return true;
    }
  }
  if (misses_) misses_->Inc();
  return false;
}

bool RecordJsonCache::Insert(Series& series, int64_t window_start_ns, uint64_t version,
                             std::string_view json) {
  const size_t cost = json.size() + kEntryOverhead;
  if (cost > max_bytes_ / 4) return false;
  {
    std::lock_guard lock(series.mu);
    if (series.evicted) return false;  // dropped while this request held it
    auto [it, inserted] = series.entries.try_emplace(window_start_ns);
    Series::Entry& e = it->second;
    if (!inserted) {
      if (e.version >= version) return true;  // this or a newer version is there
      series.bytes -= e.json.size() + kEntryOverhead;
      Account(-static_cast<long>(e.json.size() + kEntryOverhead));
    }
    e.version = version;
    e.json.assign(json);
    series.bytes += cost;
    Account(static_cast<long>(cost) - static_cast<long>(series.DropPages(window_start_ns)));
  }
  const size_t now = bytes();
  if (bytes_gauge_) bytes_gauge_->Set(static_cast<double>(now));
  if (now > max_bytes_) EvictOverflow();
  return true;
}

void RecordJsonCache::Trim(Series& series, int64_t before_ns) {
  size_t freed = 0;
  {
    std::lock_guard lock(series.mu);
    auto end = series.entries.lower_bound(before_ns);
    for (auto it = series.entries.begin(); it != end;) {
      freed += it->second.json.size() + kEntryOverhead;
      it = series.entries.erase(it);
    }
    series.bytes -= freed;
    freed += series.DropPages(before_ns, /*below=*/true);
    for (auto it = series.covered.begin(); it != series.covered.end() && it->first < before_ns;) {
      it = series.covered.erase(it);
    }
  }
  if (freed > 0) Account(-static_cast<long>(freed));
}

void RecordJsonCache::MarkCovered(Series& series, int64_t from_ns, int64_t to_ns) {
  if (!attached_) return;
  std::lock_guard lock(series.mu);
  if (!series.evicted) series.Cover(from_ns, to_ns);
}

std::optional<size_t> RecordJsonCache::AppendCovered(Series& series, const store::HistoryQuery& q,
                                                     int64_t from_ns, std::string* out,
                                                     std::string* next_cursor) {
  if (!attached_) return std::nullopt;
  std::lock_guard lock(series.mu);
  if (series.evicted || !series.Covers(from_ns, q.to_ns)) return std::nullopt;
  const auto first = series.entries.lower_bound(from_ns);
  size_t n = 0, total = 0;  // size the output once: no regrowth of a ~1 MB body
  for (auto it = first; it != series.entries.end() && it->first < q.to_ns && n < q.limit; ++it) {
    total += it->second.json.size() + 1;
    ++n;
  }
  out->reserve(out->size() + total + 128);
  n = 0;
  for (auto it = first; it != series.entries.end() && it->first < q.to_ns; ++it) {
    if (n == q.limit) {
      *next_cursor = store::history_cursor::Encode(q, it->first);
      break;
    }
    if (n++ > 0) out->push_back(',');
    out->append(it->second.json);
  }
  if (covered_) covered_->Inc();
  if (hits_) hits_->Inc(n);
  return n;
}

std::shared_ptr<const std::string> RecordJsonCache::CoveredPage(Series& series,
                                                                const store::HistoryQuery& q,
                                                                int64_t from_ns,
                                                                PageFinisher finish,
                                                                size_t* records) {
  if (!attached_) return nullptr;
  std::shared_ptr<std::string> json;
  size_t n = 0;
  {
    std::lock_guard lock(series.mu);
    if (series.evicted || !series.Covers(from_ns, q.to_ns)) return nullptr;
    for (const Series::Page& p : series.pages) {
      if (p.from == from_ns && p.to == q.to_ns && p.limit == q.limit) {
        if (covered_) covered_->Inc();
        if (hits_) hits_->Inc(p.records);
        *records = p.records;
        return p.json;
      }
    }
    json = std::make_shared<std::string>();
    std::string next_cursor;
    const auto first = series.entries.lower_bound(from_ns);
    size_t total = 0;
    for (auto it = first; it != series.entries.end() && it->first < q.to_ns && n < q.limit; ++it) {
      total += it->second.json.size() + 1;
      ++n;
    }
    json->reserve(total + 128);
    n = 0;
    for (auto it = first; it != series.entries.end() && it->first < q.to_ns; ++it) {
      if (n == q.limit) {
        next_cursor = store::history_cursor::Encode(q, it->first);
        break;
      }
      if (n++ > 0) json->push_back(',');
      json->append(it->second.json);
    }
    finish(next_cursor, json.get());
    if (json->size() <= max_bytes_ / 4) {
      if (series.pages.size() == kPagesPerSeries) {
        const Series::Page& old = series.pages.front();
        const size_t old_bytes = old.json->size() + (old.zstd ? old.zstd->size() : 0);
        series.bytes -= old_bytes;
        Account(-static_cast<long>(old_bytes));
        series.pages.erase(series.pages.begin());
      }
      series.pages.push_back({from_ns, q.to_ns, q.limit, n, json, nullptr});
      series.bytes += json->size();
      Account(static_cast<long>(json->size()));
    }
  }
  if (covered_) covered_->Inc();
  if (hits_) hits_->Inc(n);
  *records = n;
  if (bytes() > max_bytes_) EvictOverflow();
  return json;
}

std::shared_ptr<const std::string> RecordJsonCache::CompressedPage(
    Series& series, const std::shared_ptr<const std::string>& page) {
  {
    std::lock_guard lock(series.mu);
    for (const Series::Page& p : series.pages) {
      if (p.json == page && p.zstd) return p.zstd;
    }
  }
  // Compressed outside the lock (a few ms for a day of 1m): writers of the series wait not.
  auto out = std::make_shared<std::string>();
  out->resize(ZSTD_compressBound(page->size()));
  const size_t n = ZSTD_compress(out->data(), out->size(), page->data(), page->size(), 1);
  if (ZSTD_isError(n)) return nullptr;
  out->resize(n);
  out->shrink_to_fit();
  {
    std::lock_guard lock(series.mu);
    for (Series::Page& p : series.pages) {
      if (p.json != page) continue;
      if (p.zstd) return p.zstd;  // another request was quicker
      p.zstd = out;
      series.bytes += out->size();
      Account(static_cast<long>(out->size()));
      break;
    }
  }
  return out;
}

uint64_t RecordJsonCache::WriteCount(Series& series) {
  std::lock_guard lock(series.mu);
  return series.writes;
}

std::optional<RecordJsonCache::KeyedPage> RecordJsonCache::FindPage(Series& series,
                                                                    std::string_view key) {
  std::lock_guard lock(series.mu);
  if (series.evicted) return std::nullopt;
  for (const Series::Keyed& k : series.keyed) {
    if (k.key != key) continue;
    if (covered_) covered_->Inc();  // answered without reading the store
    return k.page;
  }
  return std::nullopt;
}

void RecordJsonCache::KeepPage(Series& series, std::string key, int64_t from_ns, int64_t to_ns,
                               uint64_t write_count, KeyedPage page) {
  if (!attached_) return;  // without the write observer nothing would drop it
  const size_t cost = page.body->size() + key.size() + page.next_cursor.size();
  if (cost > max_bytes_ / 4) return;
  {
    std::lock_guard lock(series.mu);
    if (series.evicted || series.writes != write_count) return;  // a write came in between
    if (series.keyed.size() == kPagesPerSeries) {
      const Series::Keyed& old = series.keyed.front();
      const size_t old_cost = old.page.body->size() + old.key.size() + old.page.next_cursor.size();
      series.bytes -= old_cost;
      Account(-static_cast<long>(old_cost));
      series.keyed.erase(series.keyed.begin());
    }
    series.keyed.push_back({std::move(key), from_ns, to_ns, std::move(page)});
    series.bytes += cost;
    Account(static_cast<long>(cost));
  }
  if (bytes() > max_bytes_) EvictOverflow();
}

// A write of the store: keep the series' entry current if the series is cached (its
// covered ranges stay exact); nothing to do otherwise.
void RecordJsonCache::OnWrite(const model::AggregateRecord& record) {
  std::shared_ptr<Series> series;
  {
    std::lock_guard lock(mu_);
    auto it = series_.find(SeriesKey(record.device_id, record.resolution));
    if (it == series_.end()) return;
    series = it->second;
  }
  std::string json;
  model::AppendRecordJson(record, &json);
  if (!Insert(*series, record.window_start_ns, record.version, json)) {
    // Too large to keep: the series can no longer answer the ranges around this record.
    std::lock_guard lock(series->mu);
    Account(-static_cast<long>(series->DropPages(record.window_start_ns)));
    auto it = series->covered.upper_bound(record.window_start_ns);
    if (it != series->covered.begin()) {
      --it;
      if (it->second > record.window_start_ns) series->covered.erase(it);
    }
  }
}

void RecordJsonCache::EvictOverflow() {
  std::lock_guard lock(mu_);
  // Down to 90% so that a full cache does not evict on every insert.
  const size_t target = max_bytes_ / 10 * 9;
  while (bytes() > target && !lru_.empty()) {
    Series* victim = lru_.back();
    lru_.pop_back();
    {
      std::lock_guard series_lock(victim->mu);
      victim->evicted = true;
      Account(-static_cast<long>(victim->bytes));
      victim->bytes = 0;
      victim->entries.clear();
      victim->covered.clear();
      victim->pages.clear();
      victim->keyed.clear();
    }
    if (evictions_) evictions_->Inc();
    const std::string key = victim->key;  // erase may destroy the victim
    series_.erase(key);  // requests still holding it keep it alive until they finish
  }
  if (bytes_gauge_) bytes_gauge_->Set(static_cast<double>(bytes()));
}

}  // namespace joule::api

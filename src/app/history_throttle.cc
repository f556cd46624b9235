#include "app/history_throttle.h"

#include <utility>

namespace joule::app {

uint64_t HistoryThrottle::Offer(const model::AggregateRecord& record, int64_t now_ns,
                                std::vector<model::AggregateRecord>* out) {
  if (interval_ns_ <= 0) {
    out->push_back(record);
    return 0;
  }
  auto same_key = [&record](const Key& k) {
    return k.window_start_ns == record.window_start_ns && k.resolution == record.resolution;
  };
  if (record.final) {
    if (keys_ > 0) {
      if (Device* d = devices_.Find(record.device_id); d != nullptr) {
        std::vector<Key>& keys = d->keys;
        for (size_t i = 0; i < keys.size(); ++i) {
          if (!same_key(keys[i])) continue;
          // The final record replaces whatever of its own window was held.
          if (i + 1 != keys.size()) std::swap(keys[i], keys.back());
          keys.pop_back();
          --keys_;
          break;
        }
        // Something of the device finalized: its held partials (the open 1h and 1d
        // windows it rolls into) go out too, so history's running totals include every
        // final minute.
        for (Key& k : keys) {
          if (!k.dirty) continue;
          out->push_back(std::move(k.record));
          k.dirty = false;
          k.written_ns = now_ns;
        }
      }
    }
    out->push_back(record);
    return 0;
  }
  std::vector<Key>& keys = devices_.TryEmplace(record.device_id).first->keys;
  Key* k = nullptr;
  for (Key& candidate : keys) {
    if (same_key(candidate)) {
      k = &candidate;
      break;
    }
  }
  if (k == nullptr) {  // first partial of the key: at once
    Key& added = keys.emplace_back();
    ++keys_;
    added.window_start_ns = record.window_start_ns;
    added.resolution = record.resolution;
    added.written_ns = now_ns;
    out->push_back(record);
    return 0;
  }
  const uint64_t superseded = k->dirty ? 1 : 0;
  if (now_ns - k->written_ns >= interval_ns_) {
    k->written_ns = now_ns;
    k->dirty = false;
    out->push_back(record);
    return superseded;
  }
  k->record = record;  // reuses the held record's buffers
  k->dirty = true;
  return superseded;
}

void HistoryThrottle::Release(int64_t now_ns, bool all, std::vector<model::AggregateRecord>* out) {
  if (keys_ == 0) return;
  for (auto& [id, d] : devices_.entries()) {
    std::vector<Key>& keys = d.keys;
    for (size_t i = 0; i < keys.size();) {
      Key& k = keys[i];
      const bool due = now_ns - k.written_ns >= interval_ns_;
      if (k.dirty && (due || all)) {
        out->push_back(std::move(k.record));
        k.dirty = false;
        k.written_ns = now_ns;
        ++i;
      } else if (!k.dirty && due) {
        // A partial arriving now would be written at once anyway.
        if (i + 1 != keys.size()) std::swap(k, keys.back());
        keys.pop_back();
        --keys_;
      } else {
        ++i;
      }
    }
  }
}

}  // namespace joule::app

// PendingAlertWrites: alert-store writes that failed because the metadata store was
// unreachable (Unavailable), kept until they succeed — per alert its latest state — and
// durable in {data_dir}/alerts/pending_alert_writes.log (format:
// docs/formats/alert_pending_writes.md), so that a restart during the outage still
// writes them and restores the open alerts they hold.
//
// Without it an alert that fired while PostgreSQL was down (its webhook and SSE event went
// out) never reached the store: GET /v1/alerts lacked it, ack was 404, and after a restart
// the episode opened again under another id while the first never resolved (found by a
// black-box test).
//
// Save() rewrites the whole file (temp file, fsync, rename, fsync dir): it holds one line
// per alert with a pending write, a handful during an outage. Not thread-safe (the alert
// thread owns it); size() may be read from any thread.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "store/metadata_store.h"

namespace joule::alert {

class PendingAlertWrites {
 public:
  // Opens {dir}/pending_alert_writes.log and reads what a previous run left. A damaged
  // line is skipped with a warning (the file is only ever replaced whole).
  static Result<std::unique_ptr<PendingAlertWrites>> Open(const std::string& dir,
                                                          bool fsync = true);

  // Keeps `alert` as its id's pending write, unless the one kept is newer (updated_at).
  void Put(const store::Alert& alert);
  // The write of `id` landed (or a newer one did).
  void Erase(const std::string& id);
  std::optional<store::Alert> Get(const std::string& id) const;
  // Oldest change first.
  std::vector<store::Alert> All() const;
  bool empty() const { return by_id_.empty(); }
  size_t size() const { return size_.load(std::memory_order_relaxed); }
  const std::string& path() const { return path_; }

  // Makes the set durable when it changed since the last Save. A failed fsync is fatal.
  Status Save();

 private:
  PendingAlertWrites(std::string path, bool fsync) : path_(std::move(path)), fsync_(fsync) {}
  Status Load();

  std::string path_;
  bool fsync_;
  bool dirty_ = false;
  std::map<std::string, store::Alert> by_id_;
  std::atomic<size_t> size_{0};
};

// The JSON line of one pending write, and back (for the file and its tests).
std::string PendingAlertToJson(const store::Alert& alert);
Result<store::Alert> PendingAlertFromJson(std::string_view json);

}  // namespace joule::alert

// MetadataCache: a MetadataStore in front of another one that serves the hot reads —
// GetDevice (every API response carries device metadata; the stream engine needs each
// device's timezone), AuthenticateToken (every ingest request) and one owner's device
// list (ListDevices with only owner_id set: every owner energy query) — from memory.
//
// Freshness contract:
// - A write through the cache (or directly through the wrapped store) is visible to the
//   next read on any thread: the wrapped store publishes the change before the write
//   returns and the cache drops its entry.
// - A change by another writer is visible as soon as the wrapped store publishes it
//   (PostgreSQL: LISTEN/NOTIFY, normally milliseconds; well within 1 s).
// - Revocation (rotate, revoke, device delete, owner change) drops the cached tokens of
//   that device or owner at once.
// - Safety nets: positive entries expire after `positive_ttl`, so a notification lost
//   while the change feed reconnects cannot keep a value forever (the store also
//   publishes kAll after reconnecting); "not found" is cached for `negative_ttl` only.
//   When the database is unavailable, an expired entry is served rather than failing
//   (stale-if-error), so ingest keeps authenticating during a database restart.
// - A write that fails with Unavailable (the database unreachable) does not drop the
//   device's entries: it expires them, so they are served only while the database stays
//   unreachable (a failed PATCH during an outage must not stop the device's ingest; a
//   write whose commit reply was lost is read back as soon as the database answers).
// - A fill that raced with an invalidation is not stored (an invalidation epoch), so a
//   slow read can never put an old value back after the change was announced.
//
// Thread-safe (a shared_mutex: readers in parallel). Unknown tokens are not cached (an
// issued token must work at once); malformed ones are refused without a query.
// Everything else passes through to the wrapped store. Listeners subscribed to the
// cache are told about a change after the cache has dropped its entries.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "common/clock.h"
#include "common/metrics.h"
#include "store/metadata_store.h"

namespace joule::store {

struct MetadataCacheOptions {
  int64_t positive_ttl_ns = 5 * kNanosPerMinute;
  int64_t negative_ttl_ns = 2 * kNanosPerSecond;
  size_t max_devices = 1'000'000;
  size_t max_tokens = 1'000'000;
  size_t max_owner_lists = 100'000;    // cached ListDevices pages of one owner
  const Clock* clock = nullptr;        // nullptr = system clock
  MetricsRegistry* metrics = nullptr;  // optional: joule_metadata_cache_{hits,misses}_total
};

struct MetadataCacheStats {
  uint64_t device_hits = 0;
  uint64_t device_misses = 0;
  uint64_t token_hits = 0;
  uint64_t token_misses = 0;
  uint64_t owner_list_hits = 0;
  uint64_t owner_list_misses = 0;
  uint64_t invalidations = 0;
  // Reads of device records from the wrapped store: one per GetDevice/DeviceRegistered
  // miss, one per DevicesRegistered that misses any id (its misses are read together).
  uint64_t device_reads = 0;
};

class MetadataCache final : public MetadataStore {
 public:
  explicit MetadataCache(std::unique_ptr<MetadataStore> store, MetadataCacheOptions options = {});
  ~MetadataCache() override;
  MetadataCache(const MetadataCache&) = delete;
  MetadataCache& operator=(const MetadataCache&) = delete;

  MetadataStore& wrapped() { return *store_; }
  MetadataCacheStats stats() const;
  // Drops everything (for tests and admin tools).
  void Clear();

  // Writes refused because the disk holding the database is full (kMetadataDiskFull):
  // from the first refusal until a write succeeds, or until the store tells that there is
  // room again (HasSpaceToWrite, asked at most once a second by this call). For /readyz
  // and joule_writer_failing{writer="metadata"}.
  struct WriteRefusal {
    bool refusing = false;
    int64_t since_ns = 0;
    std::string error;  // the store's last message
  };
  WriteRefusal write_refusal();

  std::string_view backend() const override { return store_->backend(); }
  bool reachable() const override { return store_->reachable(); }
  bool HasSpaceToWrite() const override { return store_->HasSpaceToWrite(); }
  Status Migrate() override { return store_->Migrate(); }
  Status WriteBatch(const std::function<Status()>& body) override {
    return Written(store_->WriteBatch(body));
  }
  Result<int> SchemaVersion() override { return store_->SchemaVersion(); }

  Result<Device> CreateDevice(const Device& device, std::string* token) override;
  Result<Device> GetDevice(std::string_view device_id) override;       // cached
  Result<bool> DeviceRegistered(std::string_view device_id) override;  // cached, no copy
  // Cached like DeviceRegistered; the ids the cache does not hold (or holds expired) are
  // read with ONE GetDevices and cached as GetDevice caches them — a registered device for
  // `positive_ttl`, an unknown one for `negative_ttl` — unless a change was announced
  // meanwhile. Stale-if-error as GetDevice: when the store is Unavailable, an id with an
  // expired record is registered; any other id not held makes the call Unavailable.
  Status DevicesRegistered(std::span<const std::string_view> device_ids,
                           std::vector<bool>* registered) override;
  Result<std::optional<std::string>> DeletedDeviceOwner(std::string_view device_id) override {
    return Public(store_->DeletedDeviceOwner(device_id));
  }
  // Cached when it lists one owner's devices (GET /v1/owners/{id}/energy asks on every
  // dashboard refresh); any device change drops every cached list.
  Result<DevicePage> ListDevices(const ListDevicesOptions& options) override;
  Result<Device> UpdateDevice(std::string_view device_id, const DeviceUpdate& update) override;
  Status DeleteDevice(std::string_view device_id) override;

  Result<std::string> IssueDeviceToken(std::string_view device_id) override {
    return Written(store_->IssueDeviceToken(device_id));
  }
  Result<std::string> RotateDeviceToken(std::string_view device_id) override;
  Status RevokeDeviceTokens(std::string_view device_id) override;
  Result<OwnerKey> CreateOwnerKey(std::string_view owner_id) override {
    return Written(store_->CreateOwnerKey(owner_id));
  }
  Status RevokeOwnerKey(std::string_view key_id) override;
  Result<std::vector<OwnerKey>> ListOwnerKeys(std::string_view owner_id) override {
    return Public(store_->ListOwnerKeys(owner_id));
  }
  Result<Principal> AuthenticateToken(std::string_view token) override;  // cached

  Result<Rule> CreateRule(const Rule& rule) override { return Written(store_->CreateRule(rule)); }
  Result<Rule> GetRule(std::string_view id) override { return Public(store_->GetRule(id)); }
  Result<std::vector<Rule>> ListRules(std::optional<std::string> owner_id) override {
    return Public(store_->ListRules(std::move(owner_id)));
  }
  Result<Rule> ReplaceRule(const Rule& rule) override { return Written(store_->ReplaceRule(rule)); }
  Status DeleteRule(std::string_view id) override { return Written(store_->DeleteRule(id)); }

  Result<bool> UpsertAlert(const Alert& alert) override {
    return Written(store_->UpsertAlert(alert));
  }
  Result<Alert> GetAlert(std::string_view id) override { return Public(store_->GetAlert(id)); }
  Result<AlertPage> ListAlerts(const AlertFilter& filter) override {
    return Public(store_->ListAlerts(filter));
  }
  Result<Alert> SetAlertAcked(std::string_view id, bool acked) override {
    return Written(store_->SetAlertAcked(id, acked));
  }
  Result<Alert> SnoozeAlert(std::string_view id, std::optional<int64_t> until_ns) override {
    return Written(store_->SnoozeAlert(id, until_ns));
  }

 private:
  struct DeviceEntry {
    std::optional<Device> device;  // nullopt: known not to exist
    int64_t expires_ns = 0;
  };
  struct TokenEntry {
    Principal principal;
    int64_t expires_ns = 0;
  };
  struct OwnerListEntry {
    DevicePage page;
    int64_t expires_ns = 0;
  };

  // What callers (the API's clients) see of a store failure: Unavailable says only "the
  // metadata store is unreachable" — the store's own message names hosts and ports (libpq's
  // "connection to server at …") and is logged here instead, at most once per 10 s per
  // distinct message. A write refused for a full disk says kMetadataDiskFull (logged as an
  // error, counted in joule_metadata_disk_full_total, and noted for write_refusal()).
  // Other statuses pass unchanged.
  Status Public(Status status);
  // Public, for a write: one that succeeded ends a write refusal.
  Status Written(Status status);
  template <typename T>
  Result<T> Written(Result<T> r) {
    if (r.ok()) {
      (void)Written(Status::Ok());
      return r;
    }
    return Public(std::move(r));
  }
  template <typename T>
  Result<T> Public(Result<T> r) {
    if (r.ok() || r.status().code() != StatusCode::kUnavailable) return r;
    return Public(r.status());
  }

  void OnChange(const MetadataChange& change);
  // REQUIRES: mu_ held exclusively.
  void DropDeviceLocked(const std::string& device_id);
  void DropDeviceTokensLocked(const std::string& device_id);
  void DropOwnerKeysLocked(const std::string& owner_id);
  void DropTokenLocked(const std::string& hash);
  // Marks entries expired without dropping them: read again from the database, served
  // only while it is unreachable.
  void ExpireDeviceLocked(const std::string& device_id);
  void ExpireDeviceTokensLocked(const std::string& device_id);
  // After a write of device `device_id` (its record too when `device`, else its tokens
  // only): drops the entries, or expires them when the database was unreachable.
  void AfterDeviceWrite(const Status& status, const std::string& device_id, bool device);
  // Stores a device entry read at `now` (nullopt: not found). REQUIRES: mu_ held exclusively.
  void PutDeviceLocked(const std::string& device_id, std::optional<Device> device, int64_t now);

  std::unique_ptr<MetadataStore> store_;
  MetadataCacheOptions options_;
  const Clock* clock_;
  uint64_t subscription_ = 0;

  mutable std::shared_mutex mu_;
  uint64_t epoch_ = 0;  // bumped by every invalidation
  std::unordered_map<std::string, DeviceEntry> devices_;
  std::unordered_map<std::string, TokenEntry> tokens_;  // by SHA-256 of the token
  std::unordered_map<std::string, std::unordered_set<std::string>> device_token_hashes_;
  std::unordered_map<std::string, std::unordered_set<std::string>> owner_key_hashes_;
  // ListDevices pages of one owner, by (owner, after, limit). A device change may move a
  // device between owners, so every device change clears them all (DropDeviceLocked).
  std::unordered_map<std::string, OwnerListEntry> owner_lists_;

  std::mutex unavailable_mu_;
  std::string unavailable_logged_;  // the last store message logged
  int64_t unavailable_logged_ns_ = 0;
  uint64_t unavailable_suppressed_ = 0;

  std::mutex refusal_mu_;
  WriteRefusal refusal_;
  int64_t refusal_checked_ns_ = 0;  // the last refusal or HasSpaceToWrite check

  Counter own_device_hits_, own_device_misses_, own_token_hits_, own_token_misses_;
  Counter own_invalidations_, own_owner_list_hits_, own_owner_list_misses_, own_disk_full_;
  Counter own_device_reads_;
  Counter* device_reads_;
  Counter* disk_full_;
  Counter* owner_list_hits_;
  Counter* owner_list_misses_;
  Counter* device_hits_;
  Counter* device_misses_;
  Counter* token_hits_;
  Counter* token_misses_;
  Counter* invalidations_;
};

}  // namespace joule::store

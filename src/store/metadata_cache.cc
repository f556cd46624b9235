#include "store/metadata_cache.h"

#include <mutex>
#include <utility>

#include "common/logging.h"
#include "common/time_format.h"
#include "store/metadata_token.h"

namespace joule::store {

MetadataCache::MetadataCache(std::unique_ptr<MetadataStore> store, MetadataCacheOptions options)
    : store_(std::move(store)),
      options_(options),
      clock_(options.clock ? options.clock : SystemClock::Default()) {
  device_hits_ = &own_device_hits_;
  device_misses_ = &own_device_misses_;
  token_hits_ = &own_token_hits_;
  token_misses_ = &own_token_misses_;
  invalidations_ = &own_invalidations_;
  owner_list_hits_ = &own_owner_list_hits_;
  owner_list_misses_ = &own_owner_list_misses_;
  disk_full_ = &own_disk_full_;
  device_reads_ = &own_device_reads_;
  if (MetricsRegistry* m = options.metrics) {
    const char* hits_help = "Metadata cache lookups served from memory.";
    const char* misses_help = "Metadata cache lookups that queried the database.";
    device_hits_ =
        m->GetCounter("joule_metadata_cache_hits_total", hits_help, {{"kind", "device"}});
    token_hits_ = m->GetCounter("joule_metadata_cache_hits_total", hits_help, {{"kind", "token"}});
    device_misses_ =
        m->GetCounter("joule_metadata_cache_misses_total", misses_help, {{"kind", "device"}});
    token_misses_ =
        m->GetCounter("joule_metadata_cache_misses_total", misses_help, {{"kind", "token"}});
    owner_list_hits_ =
        m->GetCounter("joule_metadata_cache_hits_total", hits_help, {{"kind", "owner_devices"}});
    owner_list_misses_ = m->GetCounter("joule_metadata_cache_misses_total", misses_help,
                                       {{"kind", "owner_devices"}});
    invalidations_ = m->GetCounter("joule_metadata_cache_invalidations_total",
                                   "Metadata changes announced to the cache.");
    device_reads_ = m->GetCounter(
        "joule_metadata_cache_device_reads_total",
        "Reads of device records from the metadata store on cache misses (a batch of ingest "
        "lookups is one read).");
    disk_full_ = m->GetCounter(
        "joule_metadata_disk_full_total",
        "Metadata writes refused because the disk holding the database is full (answered 503).");
  }
  subscription_ = store_->Subscribe([this](const MetadataChange& change) { OnChange(change); });
}

MetadataCache::~MetadataCache() { store_->Unsubscribe(subscription_); }

MetadataCacheStats MetadataCache::stats() const {
  MetadataCacheStats s;
  s.device_hits = device_hits_->Value();
  s.device_misses = device_misses_->Value();
  s.token_hits = token_hits_->Value();
  s.token_misses = token_misses_->Value();
  s.owner_list_hits = owner_list_hits_->Value();
  s.owner_list_misses = owner_list_misses_->Value();
  s.invalidations = invalidations_->Value();
  s.device_reads = device_reads_->Value();
  return s;
}

void MetadataCache::Clear() {
  std::unique_lock lock(mu_);
  ++epoch_;
  devices_.clear();
  tokens_.clear();
  device_token_hashes_.clear();
  owner_key_hashes_.clear();
  owner_lists_.clear();
}

Status MetadataCache::Public(Status status) {
  if (status.code() != StatusCode::kUnavailable) return status;
  constexpr std::string_view kPublic = "the metadata store is unreachable";
  if (status.message() == kPublic || status.message() == kMetadataDiskFull) return status;
  const bool disk_full = IsMetadataDiskFull(status);
  const int64_t now = clock_->NowNanos();
  if (disk_full) {
    disk_full_->Inc();
    std::lock_guard<std::mutex> lock(refusal_mu_);
    if (!refusal_.refusing) {
      refusal_.refusing = true;
      refusal_.since_ns = now;
    }
    refusal_.error = status.message();
    refusal_checked_ns_ = now;
  }
  {
    std::lock_guard<std::mutex> lock(unavailable_mu_);
    if (status.message() != unavailable_logged_ ||
        now - unavailable_logged_ns_ >= 10 * kNanosPerSecond) {
      logging::Log(
          disk_full ? logging::Level::kError : logging::Level::kWarn,
          disk_full ? "metadata write refused: the disk holding the database is full"
                    : "metadata store unavailable",
          {{"error", status.message()}, {"suppressed", std::to_string(unavailable_suppressed_)}});
      unavailable_logged_ = status.message();
      unavailable_logged_ns_ = now;
      unavailable_suppressed_ = 0;
    } else {
      ++unavailable_suppressed_;
    }
  }
  // The store's own message names hosts, ports and PostgreSQL's file paths: logged above.
  return Status::Unavailable(std::string(disk_full ? kMetadataDiskFull : kPublic));
}

Status MetadataCache::Written(Status status) {
  if (status.ok()) {
    std::lock_guard<std::mutex> lock(refusal_mu_);
    if (refusal_.refusing) {
      logging::Info("metadata writes resumed",
                    {{"refused_since", FormatRfc3339Millis(refusal_.since_ns)}});
      refusal_ = {};
    }
  }
  return Public(std::move(status));
}

MetadataCache::WriteRefusal MetadataCache::write_refusal() {
  const int64_t now = clock_->NowNanos();
  {
    std::lock_guard<std::mutex> lock(refusal_mu_);
    if (!refusal_.refusing || now - refusal_checked_ns_ < kNanosPerSecond) return refusal_;
    refusal_checked_ns_ = now;
  }
  // Nothing may write for a long time after space returned (admin writes are rare): ask
  // the store, at most once a second, whether there is room again.
  const bool space = store_->HasSpaceToWrite();
  std::lock_guard<std::mutex> lock(refusal_mu_);
  if (space && refusal_.refusing) {
    logging::Info("metadata store: space is available again; writes should succeed");
    refusal_ = {};
  }
  return refusal_;
}

void MetadataCache::OnChange(const MetadataChange& change) {
  invalidations_->Inc();
  {
    std::unique_lock lock(mu_);
    ++epoch_;
    switch (change.kind) {
      case MetadataChange::Kind::kDevice:
        // The device's owner may have changed or it may be gone: its tokens' principals
        // are stale too.
        DropDeviceLocked(change.id);
        DropDeviceTokensLocked(change.id);
        break;
      case MetadataChange::Kind::kDeviceTokens:
        DropDeviceTokensLocked(change.id);
        break;
      case MetadataChange::Kind::kOwnerKeys:
        DropOwnerKeysLocked(change.id);
        break;
      case MetadataChange::Kind::kRule:
        break;
      case MetadataChange::Kind::kAll:
        devices_.clear();
        tokens_.clear();
        device_token_hashes_.clear();
        owner_key_hashes_.clear();
        owner_lists_.clear();
        break;
    }
  }
  Publish(change);
}

void MetadataCache::DropDeviceLocked(const std::string& device_id) {
  devices_.erase(device_id);
  // The device may have joined, left or changed in any owner's list.
  owner_lists_.clear();
}

void MetadataCache::DropTokenLocked(const std::string& hash) { tokens_.erase(hash); }

void MetadataCache::ExpireDeviceLocked(const std::string& device_id) {
  auto it = devices_.find(device_id);
  if (it != devices_.end()) it->second.expires_ns = 0;
  owner_lists_.clear();  // not served stale-if-error: a failed list is an error anyway
}

void MetadataCache::ExpireDeviceTokensLocked(const std::string& device_id) {
  auto it = device_token_hashes_.find(device_id);
  if (it == device_token_hashes_.end()) return;
  for (const std::string& hash : it->second) {
    auto t = tokens_.find(hash);
    if (t != tokens_.end()) t->second.expires_ns = 0;
  }
}

void MetadataCache::DropDeviceTokensLocked(const std::string& device_id) {
  auto it = device_token_hashes_.find(device_id);
  if (it == device_token_hashes_.end()) return;
  for (const std::string& hash : it->second) DropTokenLocked(hash);
  device_token_hashes_.erase(it);
}

void MetadataCache::DropOwnerKeysLocked(const std::string& owner_id) {
  auto it = owner_key_hashes_.find(owner_id);
  if (it == owner_key_hashes_.end()) return;
  for (const std::string& hash : it->second) DropTokenLocked(hash);
  owner_key_hashes_.erase(it);
}

Result<Device> MetadataCache::GetDevice(std::string_view device_id) {
  std::string id(device_id);
  int64_t now = clock_->NowNanos();
  uint64_t epoch;
  std::optional<Device> stale;
  {
    std::shared_lock lock(mu_);
    auto it = devices_.find(id);
    if (it != devices_.end()) {
      if (it->second.expires_ns > now) {
        device_hits_->Inc();
        if (!it->second.device) return Status::NotFound("device not found: " + id);
        return *it->second.device;
      }
      stale = it->second.device;
    }
    epoch = epoch_;
  }
  device_misses_->Inc();
  device_reads_->Inc();
  Result<Device> r = Public(store_->GetDevice(device_id));
  if (!r.ok() && r.status().code() != StatusCode::kNotFound) {
    if (r.status().code() == StatusCode::kUnavailable && stale) return *stale;
    return r;
  }
  std::unique_lock lock(mu_);
  if (epoch_ == epoch) {  // else a change was announced while we read: do not store
    PutDeviceLocked(id, r.ok() ? std::optional<Device>(*r) : std::nullopt, now);
  }
  return r;
}

void MetadataCache::PutDeviceLocked(const std::string& device_id, std::optional<Device> device,
                                    int64_t now) {
  if (devices_.size() >= options_.max_devices && !devices_.contains(device_id)) {
    devices_.erase(devices_.begin());
  }
  DeviceEntry& e = devices_[device_id];
  e.expires_ns = now + (device ? options_.positive_ttl_ns : options_.negative_ttl_ns);
  e.device = std::move(device);
}

Result<DevicePage> MetadataCache::ListDevices(const ListDevicesOptions& options) {
  if (!options.owner_id || options.model) return Public(store_->ListDevices(options));
  std::string key = *options.owner_id;
  key.push_back('\0');
  key += options.after;
  key.push_back('\0');
  key += std::to_string(options.limit);
  const int64_t now = clock_->NowNanos();
  uint64_t epoch;
  {
    std::shared_lock lock(mu_);
    auto it = owner_lists_.find(key);
    if (it != owner_lists_.end() && it->second.expires_ns > now) {
      owner_list_hits_->Inc();
      return it->second.page;
    }
    epoch = epoch_;
  }
  owner_list_misses_->Inc();
  Result<DevicePage> r = Public(store_->ListDevices(options));
  if (!r.ok()) return r;
  std::unique_lock lock(mu_);
  if (epoch_ == epoch) {  // else a change was announced while we read: do not store
    if (owner_lists_.size() >= options_.max_owner_lists && !owner_lists_.contains(key)) {
      owner_lists_.erase(owner_lists_.begin());
    }
    owner_lists_[key] = OwnerListEntry{*r, now + options_.positive_ttl_ns};
  }
  return r;
}

Result<bool> MetadataCache::DeviceRegistered(std::string_view device_id) {
  {
    const int64_t now = clock_->NowNanos();
    std::shared_lock lock(mu_);
    auto it = devices_.find(std::string(device_id));
    if (it != devices_.end() && it->second.expires_ns > now) {
      device_hits_->Inc();
      return it->second.device.has_value();
    }
  }
  Result<Device> d = GetDevice(device_id);  // a miss: fills the entry as GetDevice does
  if (d.ok()) return true;
  if (d.status().code() == StatusCode::kNotFound) return false;
  return d.status();
}

Status MetadataCache::DevicesRegistered(std::span<const std::string_view> device_ids,
                                        std::vector<bool>* registered) {
  registered->assign(device_ids.size(), false);
  const int64_t now = clock_->NowNanos();
  // The ids to read (indices into device_ids), and whether each has an expired record
  // (stale-if-error).
  std::vector<size_t> missing;
  std::vector<bool> stale;
  uint64_t epoch;
  {
    std::string key;
    std::shared_lock lock(mu_);
    for (size_t i = 0; i < device_ids.size(); ++i) {
      key.assign(device_ids[i]);
      auto it = devices_.find(key);
      if (it != devices_.end() && it->second.expires_ns > now) {
        (*registered)[i] = it->second.device.has_value();
        continue;
      }
      missing.push_back(i);
      stale.push_back(it != devices_.end() && it->second.device.has_value());
    }
    epoch = epoch_;
  }
  device_hits_->Inc(device_ids.size() - missing.size());
  if (missing.empty()) return Status::Ok();
  device_misses_->Inc(missing.size());
  device_reads_->Inc();
  std::vector<std::string_view> ask;
  ask.reserve(missing.size());
  for (const size_t i : missing) ask.push_back(device_ids[i]);
  Result<std::vector<Device>> found = Public(store_->GetDevices(ask));
  if (!found.ok()) {
    if (found.status().code() != StatusCode::kUnavailable) return found.status();
    for (size_t j = 0; j < missing.size(); ++j) {
      if (!stale[j]) return found.status();
      (*registered)[missing[j]] = true;
    }
    return Status::Ok();
  }
  std::unordered_map<std::string_view, const Device*> by_id;
  by_id.reserve(found->size());
  for (const Device& d : *found) by_id.emplace(d.device_id, &d);
  std::unique_lock lock(mu_);
  const bool store = epoch_ == epoch;  // else a change was announced while we read
  std::string key;
  for (const size_t i : missing) {
    auto it = by_id.find(device_ids[i]);
    (*registered)[i] = it != by_id.end();
    if (!store) continue;
    key.assign(device_ids[i]);
    PutDeviceLocked(key, it != by_id.end() ? std::optional<Device>(*it->second) : std::nullopt,
                    now);
  }
  return Status::Ok();
}

Result<Principal> MetadataCache::AuthenticateToken(std::string_view token) {
  if (!TokenLooksValid(token)) return Status::Unauthenticated("malformed token");
  std::string hash = HashToken(token);
  int64_t now = clock_->NowNanos();
  uint64_t epoch;
  std::optional<Principal> stale;
  {
    std::shared_lock lock(mu_);
    auto it = tokens_.find(hash);
    if (it != tokens_.end()) {
      if (it->second.expires_ns > now) {
        token_hits_->Inc();
        return it->second.principal;
      }
      stale = it->second.principal;
    }
    epoch = epoch_;
  }
  token_misses_->Inc();
  Result<Principal> r = Public(store_->AuthenticateToken(token));
  if (!r.ok()) {
    if (r.status().code() == StatusCode::kUnavailable && stale) return *stale;
    return r;
  }
  std::unique_lock lock(mu_);
  if (epoch_ == epoch) {
    if (tokens_.size() >= options_.max_tokens && !tokens_.contains(hash)) {
      // Rare (a million live tokens): drop one arbitrary entry. Its index entry may
      // linger; dropping a missing hash later is harmless.
      tokens_.erase(tokens_.begin());
    }
    tokens_[hash] = TokenEntry{*r, now + options_.positive_ttl_ns};
    if (r->kind == PrincipalKind::kDevice) {
      device_token_hashes_[r->device_id].insert(hash);
    } else {
      owner_key_hashes_[r->owner_id].insert(hash);
    }
  }
  return r;
}

// Writes: the wrapped store publishes the change (which drops our entries) before it
// returns; the explicit invalidation below keeps the cache correct even for a store
// that does not.

Result<Device> MetadataCache::CreateDevice(const Device& device, std::string* token) {
  Result<Device> r = Written(store_->CreateDevice(device, token));
  if (r.ok()) {
    std::unique_lock lock(mu_);
    ++epoch_;
    DropDeviceLocked(device.device_id);
  }
  return r;
}

Result<Device> MetadataCache::UpdateDevice(std::string_view device_id, const DeviceUpdate& update) {
  Result<Device> r = Written(store_->UpdateDevice(device_id, update));
  AfterDeviceWrite(r.status(), std::string(device_id), /*device=*/true);
  return r;
}

Status MetadataCache::DeleteDevice(std::string_view device_id) {
  Status st = Written(store_->DeleteDevice(device_id));
  AfterDeviceWrite(st, std::string(device_id), /*device=*/true);
  return st;
}

Result<std::string> MetadataCache::RotateDeviceToken(std::string_view device_id) {
  Result<std::string> r = Written(store_->RotateDeviceToken(device_id));
  AfterDeviceWrite(r.status(), std::string(device_id), /*device=*/false);
  return r;
}

Status MetadataCache::RevokeDeviceTokens(std::string_view device_id) {
  Status st = Written(store_->RevokeDeviceTokens(device_id));
  AfterDeviceWrite(st, std::string(device_id), /*device=*/false);
  return st;
}

void MetadataCache::AfterDeviceWrite(const Status& status, const std::string& device_id,
                                     bool device) {
  std::unique_lock lock(mu_);
  ++epoch_;  // a fill that started before the write must not store what it read
  if (status.code() == StatusCode::kUnavailable) {
    // The database could not be reached: most likely nothing changed, and dropping the
    // entries would fail the device's ingest and reads for the rest of the outage
    // (RELIABILITY.md promises they go on). But the write may have been committed with
    // its reply lost, so the entries are only expired: the next read asks the database,
    // and serves the old entry only while the database stays unreachable (stale-if-error).
    if (device) ExpireDeviceLocked(device_id);
    ExpireDeviceTokensLocked(device_id);
    return;
  }
  if (device) DropDeviceLocked(device_id);
  DropDeviceTokensLocked(device_id);
}

Status MetadataCache::RevokeOwnerKey(std::string_view key_id) {
  Status st = Written(store_->RevokeOwnerKey(key_id));
  std::unique_lock lock(mu_);
  ++epoch_;
  // The owner is not known here without a lookup; the store's change (kOwnerKeys) drops
  // the owner's keys. As a fallback, drop every cached key with this id (only expire it
  // when the database was unreachable: see AfterDeviceWrite).
  const bool unreachable = st.code() == StatusCode::kUnavailable;
  for (auto it = tokens_.begin(); it != tokens_.end();) {
    if (it->second.principal.kind == PrincipalKind::kOwner &&
        it->second.principal.key_id == key_id) {
      if (unreachable) {
        it->second.expires_ns = 0;
        ++it;
      } else {
        it = tokens_.erase(it);
      }
    } else {
      ++it;
    }
  }
  return st;
}

}  // namespace joule::store

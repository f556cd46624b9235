// SqliteMetadataStore: the embedded MetadataStore, one SQLite file (normally
// {data_dir}/metadata.db). WAL mode, synchronous=FULL (a write that returned is
// durable), foreign keys on, busy timeout 5 s. One connection guarded by a mutex:
// metadata traffic is small because the MetadataCache serves the hot reads.
// Change notification is in-process only: another process writing the same file is
// not noticed (use PostgreSQL for several writers).
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>

#include "store/metadata_store.h"

struct sqlite3;
struct sqlite3_stmt;

namespace joule::store {

class SqliteMetadataStore final : public MetadataStore {
 public:
  // Opens (creating if missing) the database file and applies migrations.
  static Result<std::unique_ptr<SqliteMetadataStore>> Open(const std::string& path,
                                                           const Clock* clock);
  ~SqliteMetadataStore() override;

  std::string_view backend() const override { return "sqlite"; }
  // At least 1 MiB free on the filesystem holding the database file (statvfs).
  bool HasSpaceToWrite() const override;
  Status Migrate() override;
  Result<int> SchemaVersion() override;
  Status WriteBatch(const std::function<Status()>& body) override;

  Result<Device> CreateDevice(const Device& device, std::string* token) override;
  Result<Device> GetDevice(std::string_view device_id) override;
  Result<std::optional<std::string>> DeletedDeviceOwner(std::string_view device_id) override;
  Result<DevicePage> ListDevices(const ListDevicesOptions& options) override;
  Result<Device> UpdateDevice(std::string_view device_id, const DeviceUpdate& update) override;
  Status DeleteDevice(std::string_view device_id) override;

  Result<std::string> IssueDeviceToken(std::string_view device_id) override;
  Result<std::string> RotateDeviceToken(std::string_view device_id) override;
  Status RevokeDeviceTokens(std::string_view device_id) override;
  Result<OwnerKey> CreateOwnerKey(std::string_view owner_id) override;
  Status RevokeOwnerKey(std::string_view key_id) override;
  Result<std::vector<OwnerKey>> ListOwnerKeys(std::string_view owner_id) override;
  Result<Principal> AuthenticateToken(std::string_view token) override;

  Result<Rule> CreateRule(const Rule& rule) override;
  Result<Rule> GetRule(std::string_view id) override;
  Result<std::vector<Rule>> ListRules(std::optional<std::string> owner_id) override;
  Result<Rule> ReplaceRule(const Rule& rule) override;
  Status DeleteRule(std::string_view id) override;

  Result<bool> UpsertAlert(const Alert& alert) override;
  Result<Alert> GetAlert(std::string_view id) override;
  Result<AlertPage> ListAlerts(const AlertFilter& filter) override;
  Result<Alert> SetAlertAcked(std::string_view id, bool acked) override;
  Result<Alert> SnoozeAlert(std::string_view id, std::optional<int64_t> until_ns) override;

 private:
  SqliteMetadataStore(sqlite3* db, std::string path, const Clock* clock)
      : db_(db), path_(std::move(path)), clock_(clock) {}
  int64_t NowMicros() const;
  Status Exec(const char* sql);  // REQUIRES: mu_ held
  Result<Device> GetDeviceLocked(std::string_view device_id);
  Status DeviceExistsLocked(std::string_view device_id);
  // Before registering `device`: AlreadyExists when its id was deleted from another owner;
  // else forgets a deletion of the id by the same owner.
  Status ClaimDeletedIdLocked(const Device& device);
  Result<std::string> InsertDeviceTokenLocked(std::string_view device_id);
  Result<Rule> GetRuleLocked(std::string_view id);
  Result<Alert> GetAlertLocked(std::string_view id);
  // The hot lookups' statements (device by id, token by hash), prepared once and reused:
  // preparing costs more than running them. REQUIRES: mu_ held. Null with *rc set on error.
  sqlite3_stmt* Prepared(const char* sql, int* rc);

  std::mutex mu_;
  bool batch_ = false;  // inside WriteBatch: transactions become savepoints (guarded by mu_)
  sqlite3* db_;
  const std::string path_;
  const Clock* clock_;
  std::unordered_map<std::string, sqlite3_stmt*> prepared_;  // guarded by mu_
};

}  // namespace joule::store

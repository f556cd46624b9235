// MetadataStore: device metadata, device tokens, owner keys, alert rules and alerts —
// everything Joule keeps in a relational database (telemetry never goes there).
// Backends: SQLite (embedded default, a file in data_dir) and PostgreSQL (libpq). Both
// apply the same versioned migrations (docs/formats/metadata.md) and behave the same;
// the shared test suite runs against both.
//
// Contract:
// - Thread-safe: every method may be called from any thread.
// - Durability: when a write returns ok, it is committed.
// - Times are nanoseconds since the Unix epoch (UTC). The database keeps microseconds,
//   so times read back are truncated to whole microseconds.
// - Text fields that are empty are stored as NULL and read back as empty.
// - JSON fields (config_json, Rule::json, Alert::json) must be valid JSON; the store
//   checks validity (PostgreSQL normalizes `config` because it is jsonb; rule and alert
//   JSON round-trip byte for byte).
// - Validation of ids, timezone names and sizes is the caller's (the API's) job.
// - Tokens: random 256 bits, handed out in plaintext exactly once; only their SHA-256
//   is stored. Revocation (rotate, revoke, device delete) is committed before the call
//   returns, so the next AuthenticateToken on the store fails.
// - Change notification: Subscribe() listeners are called after a change commits: for
//   writes through this store, synchronously on the writing thread before the write
//   returns; with PostgreSQL also for changes by other writers (LISTEN/NOTIFY), from a
//   listener thread, typically within milliseconds.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/status.h"

namespace joule::store {

struct Device {
  std::string device_id;
  std::string owner_id;
  std::string name;
  std::string model;
  std::string location;
  std::string timezone = "UTC";  // IANA name
  std::optional<int64_t> installed_at_ns;
  std::string config_json;    // a JSON value (normally an object), or empty for none
  int64_t created_at_ns = 0;  // set by the store
  int64_t updated_at_ns = 0;  // set by the store
};

// A partial update: only fields that hold a value are changed.
struct DeviceUpdate {
  std::optional<std::string> owner_id;
  std::optional<std::string> name;
  std::optional<std::string> model;
  std::optional<std::string> location;
  std::optional<std::string> timezone;
  // Outer optional: change it or not; inner: the new value, or nullopt to clear it.
  std::optional<std::optional<int64_t>> installed_at_ns;
  std::optional<std::string> config_json;  // "" clears it
};

struct ListDevicesOptions {
  std::optional<std::string> owner_id;  // only this owner's devices
  std::optional<std::string> model;     // only devices of this model (exact match)
  size_t limit = 1000;                  // at most this many (0 is treated as 1)
  std::string after;                    // cursor: a previous page's next_cursor, or ""
};

struct DevicePage {
  std::vector<Device> devices;  // ordered by device_id
  std::string next_cursor;      // empty when this is the last page
};

enum class PrincipalKind { kDevice, kOwner };

// Who a token belongs to.
struct Principal {
  PrincipalKind kind = PrincipalKind::kDevice;
  std::string device_id;  // kDevice only
  std::string owner_id;   // the owner (for a device token: the device's owner)
  std::string key_id;     // kOwner only: the owner key's id (for RevokeOwnerKey)
};

struct OwnerKey {
  std::string key_id;
  std::string owner_id;
  std::string key;  // plaintext "jo_…"; only set by CreateOwnerKey, never stored
  int64_t created_at_ns = 0;
};

struct Rule {
  std::string id;
  std::string owner_id;
  std::string json;           // the whole rule JSON of CONTRACT §4
  int64_t created_at_ns = 0;  // set by the store
  int64_t updated_at_ns = 0;  // set by the store
};

enum class AlertState { kPending, kFiring, kResolved };
std::string_view AlertStateName(AlertState state);  // "pending", "firing", "resolved"
std::optional<AlertState> ParseAlertState(std::string_view name);

struct Alert {
  std::string id;  // alert:{device_id}:{rule_id}:{window_start}
  std::string rule_id;
  std::string device_id;
  std::string owner_id;
  AlertState state = AlertState::kPending;
  bool acked = false;
  std::optional<int64_t> snoozed_until_ns;
  int64_t opened_at_ns = 0;
  int64_t updated_at_ns = 0;  // the evaluator's time of this state; newest wins
  std::string json;           // the alert as delivered to webhooks and SSE
};

struct AlertFilter {
  std::optional<std::string> device_id;
  std::optional<std::string> owner_id;
  std::optional<std::string> rule_id;
  std::optional<AlertState> state;
  std::optional<int64_t> from_ns;           // opened_at >= from
  std::optional<int64_t> to_ns;             // opened_at < to
  std::optional<int64_t> updated_since_ns;  // updated_at >= this (any change since)
  size_t limit = 1000;
  std::string after;  // cursor: a previous page's next_cursor, or ""
};

struct AlertPage {
  std::vector<Alert> alerts;  // newest opened_at first (ties: id descending)
  std::string next_cursor;    // empty when this is the last page
};

// What changed. Listeners drop what they cached for `id`.
struct MetadataChange {
  enum class Kind {
    kDevice,        // the device row `id` was inserted, updated or deleted
    kDeviceTokens,  // device `id`'s tokens were revoked or replaced
    kOwnerKeys,     // owner `id`'s keys were revoked
    kRule,          // rule `id` was created, replaced or deleted
    kAll,           // anything may have changed (missed notifications): drop everything
  };
  Kind kind = Kind::kAll;
  std::string id;
};

// The AlreadyExists error for registering a device id that was deleted from another
// owner (both backends; the API answers 409).
Status DeletedDeviceIdTaken(std::string_view device_id);

// The start of the message of the Unavailable status a store answers for a write it
// refused because the disk holding its database is full (SQLite: SQLITE_FULL, or an I/O
// error with ENOSPC or EDQUOT; PostgreSQL: SQLSTATE 53100 disk_full). Nothing of the write
// was committed; it can succeed once there is space. The API answers 503 + Retry-After.
inline constexpr std::string_view kMetadataDiskFull =
    "the metadata store cannot write: the disk holding its database is full";
// Whether `status` is such a refusal.
bool IsMetadataDiskFull(const Status& status);

class MetadataStore {
 public:
  using Listener = std::function<void(const MetadataChange&)>;

  virtual ~MetadataStore() = default;
  virtual std::string_view backend() const = 0;  // "sqlite" or "postgres"
  // Whether a remote store is reachable as far as this process knows (PostgreSQL: its
  // LISTEN connection is up). Embedded stores are always reachable. For /readyz.
  virtual bool reachable() const { return true; }
  // After writes were refused for a full disk (kMetadataDiskFull): true when the store can
  // tell that there is room again (SQLite: 1 MiB free on the database's filesystem); false
  // when it cannot tell (PostgreSQL's disk is the database server's). For /readyz.
  virtual bool HasSpaceToWrite() const { return false; }
  // Runs `body` (which calls this store's methods) with its writes grouped where the
  // backend profits from it: SQLite runs them in one transaction (one commit and fsync
  // instead of one per write; each write still is atomic on its own, as a savepoint), so a
  // bulk import is fast; PostgreSQL just runs `body`. The writes are committed (or, when
  // `body` fails or the commit does, rolled back) before this returns. Not nested.
  virtual Status WriteBatch(const std::function<Status()>& body) { return body(); }

  // Applies pending migrations in one transaction; idempotent. Fails when the database
  // was migrated by a newer Joule. Open() already calls it.
  virtual Status Migrate() = 0;
  // The schema version the database is at.
  virtual Result<int> SchemaVersion() = 0;

  // --- devices
  // AlreadyExists when the device_id is taken, or when it belonged to a device of another
  // owner that was deleted (its history is kept under the id, so only its owner may
  // register the id again: DeletedDeviceIdTaken). With `token` non-null, a device token is
  // issued in the same transaction and its plaintext stored there.
  virtual Result<Device> CreateDevice(const Device& device, std::string* token) = 0;
  virtual Result<Device> GetDevice(std::string_view device_id) = 0;  // NotFound
  // The owner a deleted device id is kept for (`deleted_devices`), or nullopt when the id
  // is not there: CreateDevice refuses the id for any other owner. For checks ahead of a
  // create (`joule devices import --dry-run`).
  virtual Result<std::optional<std::string>> DeletedDeviceOwner(std::string_view device_id) = 0;
  // Whether the device is registered, without copying its record (ingest checks every
  // event's device). Errors other than NotFound are returned.
  virtual Result<bool> DeviceRegistered(std::string_view device_id) {
    Result<Device> d = GetDevice(device_id);
    if (d.ok()) return true;
    if (d.status().code() == StatusCode::kNotFound) return false;
    return d.status();
  }
  // The records of the registered devices among `device_ids`, in no particular order (an
  // id not registered is absent; a repeated id may come once). PostgreSQL reads them with
  // one query (up to 10,000 ids a query); the default asks GetDevice per id.
  virtual Result<std::vector<Device>> GetDevices(std::span<const std::string_view> device_ids);
  // DeviceRegistered of each of `device_ids`, asked together: `(*registered)[i]` for
  // `device_ids[i]`. Ingest asks it once per request for the request's devices (an admin
  // batch may name thousands); the cache answers what it holds and reads the others with
  // one GetDevices. The default asks DeviceRegistered per id. On an error, `*registered`
  // is unspecified.
  virtual Status DevicesRegistered(std::span<const std::string_view> device_ids,
                                   std::vector<bool>* registered);
  virtual Result<DevicePage> ListDevices(const ListDevicesOptions& options) = 0;
  virtual Result<Device> UpdateDevice(std::string_view device_id, const DeviceUpdate& update) = 0;
  // Deletes the device and its tokens (NotFound when absent) and notes the id's owner in
  // `deleted_devices`. Alerts are history: kept.
  virtual Status DeleteDevice(std::string_view device_id) = 0;

  // --- credentials
  // Adds a token for the device (others stay valid). Returns the plaintext "jd_…".
  virtual Result<std::string> IssueDeviceToken(std::string_view device_id) = 0;
  // Revokes every token of the device and issues a new one, atomically.
  virtual Result<std::string> RotateDeviceToken(std::string_view device_id) = 0;
  virtual Status RevokeDeviceTokens(std::string_view device_id) = 0;
  virtual Result<OwnerKey> CreateOwnerKey(std::string_view owner_id) = 0;
  virtual Status RevokeOwnerKey(std::string_view key_id) = 0;  // NotFound
  virtual Result<std::vector<OwnerKey>> ListOwnerKeys(std::string_view owner_id) = 0;
  // Unauthenticated for an unknown, malformed or revoked token.
  virtual Result<Principal> AuthenticateToken(std::string_view token) = 0;

  // --- rules
  virtual Result<Rule> CreateRule(const Rule& rule) = 0;  // AlreadyExists
  virtual Result<Rule> GetRule(std::string_view id) = 0;  // NotFound
  // All rules, or one owner's, ordered by id.
  virtual Result<std::vector<Rule>> ListRules(std::optional<std::string> owner_id) = 0;
  virtual Result<Rule> ReplaceRule(const Rule& rule) = 0;  // NotFound; sets owner and json
  virtual Status DeleteRule(std::string_view id) = 0;      // NotFound

  // --- alerts
  // Inserts, or updates the alert when `alert.updated_at_ns` is not older than the stored
  // one. On update, `acked` and `snoozed_until_ns` are left as stored (they belong to
  // the user actions below) and opened_at is kept. Returns whether it was applied.
  virtual Result<bool> UpsertAlert(const Alert& alert) = 0;
  virtual Result<Alert> GetAlert(std::string_view id) = 0;  // NotFound
  virtual Result<AlertPage> ListAlerts(const AlertFilter& filter) = 0;
  virtual Result<Alert> SetAlertAcked(std::string_view id, bool acked) = 0;  // NotFound
  // nullopt un-snoozes.
  virtual Result<Alert> SnoozeAlert(std::string_view id, std::optional<int64_t> until_ns) = 0;

  // --- change notification
  // Listeners run after the change commits, never concurrently with each other. A
  // listener must be quick, and must neither call Subscribe/Unsubscribe nor write
  // through the store (that would deadlock); reads are fine. Returns an id.
  uint64_t Subscribe(Listener listener);
  // After it returns, the listener is not running and will not run again.
  void Unsubscribe(uint64_t subscription);

 protected:
  void Publish(const MetadataChange& change);

 private:
  std::mutex listeners_mu_;  // held while listeners run
  uint64_t next_subscription_ = 1;
  std::vector<std::pair<uint64_t, Listener>> listeners_;
};

enum class MetadataBackend { kSqlite, kPostgres };

struct MetadataStoreOptions {
  MetadataBackend backend = MetadataBackend::kSqlite;
  // SQLite: a file path (created if missing). PostgreSQL: a libpq URL or conninfo,
  // e.g. postgresql://joule@127.0.0.1:5432/joule.
  std::string url;
  const Clock* clock = nullptr;  // for created/updated times; nullptr = system clock
  int pool_size = 4;             // PostgreSQL connections for queries (plus one listener)
  // PostgreSQL only (SQLite ignores them): how long the request path's lookups
  // (AuthenticateToken, GetDevice, GetDevices) and every other operation may wait for the
  // database in all — pool, connect and query — before giving up with Unavailable
  // (metadata.lookup_timeout, metadata.query_timeout).
  std::chrono::milliseconds lookup_timeout{2000};
  std::chrono::milliseconds query_timeout{10000};
};

// Opens the store and applies migrations.
Result<std::unique_ptr<MetadataStore>> OpenMetadataStore(const MetadataStoreOptions& options);
Result<std::unique_ptr<MetadataStore>> OpenMetadataStore(MetadataBackend backend,
                                                         std::string url_or_path);
// "sqlite" or "postgres" (InvalidArgument otherwise).
Result<MetadataBackend> ParseMetadataBackend(std::string_view name);

}  // namespace joule::store

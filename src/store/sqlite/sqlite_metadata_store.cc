#include "store/sqlite/sqlite_metadata_store.h"

#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <cerrno>
#include <charconv>
#include <utility>

#include "store/metadata_time.h"
#include "store/metadata_token.h"

namespace joule::store {
namespace {

// Migrations, in order; version = index + 1. Never edit a released one: append.
// The logical schema is the same as PostgreSQL's (docs/formats/metadata.md); times are
// INTEGER microseconds since the epoch, hashes BLOBs, JSON checked with json_valid.
const char* const kMigrations[] = {
    // 1: devices, credentials, rules, alerts.
    R"sql(
CREATE TABLE devices (
  device_id    TEXT PRIMARY KEY NOT NULL,
  owner_id     TEXT NOT NULL,
  name         TEXT,
  model        TEXT,
  installed_at INTEGER,
  timezone     TEXT NOT NULL DEFAULT 'UTC',
  location     TEXT,
  config       TEXT CHECK (config IS NULL OR json_valid(config)),
  created_at   INTEGER NOT NULL,
  updated_at   INTEGER NOT NULL
);
CREATE INDEX devices_owner_idx ON devices (owner_id, device_id);
CREATE TABLE device_tokens (
  token_hash BLOB PRIMARY KEY NOT NULL,
  device_id  TEXT NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE ON UPDATE CASCADE,
  created_at INTEGER NOT NULL
);
CREATE INDEX device_tokens_device_idx ON device_tokens (device_id);
CREATE TABLE owner_keys (
  key_id     TEXT PRIMARY KEY NOT NULL,
  token_hash BLOB NOT NULL UNIQUE,
  owner_id   TEXT NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE INDEX owner_keys_owner_idx ON owner_keys (owner_id);
CREATE TABLE rules (
  rule_id    TEXT PRIMARY KEY NOT NULL,
  owner_id   TEXT NOT NULL,
  body       TEXT NOT NULL CHECK (json_valid(body)),
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE INDEX rules_owner_idx ON rules (owner_id, rule_id);
CREATE TABLE alerts (
  alert_id      TEXT PRIMARY KEY NOT NULL,
  rule_id       TEXT NOT NULL,
  device_id     TEXT NOT NULL,
  owner_id      TEXT NOT NULL,
  state         TEXT NOT NULL CHECK (state IN ('pending', 'firing', 'resolved')),
  acked         INTEGER NOT NULL DEFAULT 0,
  snoozed_until INTEGER,
  opened_at     INTEGER NOT NULL,
  updated_at    INTEGER NOT NULL,
  body          TEXT NOT NULL CHECK (json_valid(body))
);
CREATE INDEX alerts_device_idx ON alerts (device_id, opened_at);
CREATE INDEX alerts_owner_idx ON alerts (owner_id, opened_at);
CREATE INDEX alerts_opened_idx ON alerts (opened_at, alert_id);
)sql",
    // 2: the owner of every deleted device id (its history is kept under that id, so the id
    // may be registered again only for the same owner). A trigger, so that a DELETE from
    // plain SQL counts too.
    R"sql(
CREATE TABLE deleted_devices (
  device_id  TEXT PRIMARY KEY NOT NULL,
  owner_id   TEXT NOT NULL,
  deleted_at INTEGER NOT NULL
);
CREATE TRIGGER devices_deleted AFTER DELETE ON devices BEGIN
  INSERT OR REPLACE INTO deleted_devices (device_id, owner_id, deleted_at)
    VALUES (old.device_id, old.owner_id,
            CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER));
END;
)sql",
    // 3: plain SQL keeps the deleted-device rule too (as on PostgreSQL; SQLite has no
    // TRUNCATE: `DELETE FROM devices` fires the row trigger of migration 2). An INSERT (or
    // a renaming UPDATE) of an id deleted from another owner is refused as the API refuses
    // it, one by the same owner takes the id back; a rename notes the old id as deleted.
    R"sql(
CREATE TRIGGER devices_claim_refused BEFORE INSERT ON devices
  WHEN EXISTS (SELECT 1 FROM deleted_devices
               WHERE device_id = new.device_id AND owner_id <> new.owner_id)
BEGIN
  SELECT RAISE(ABORT, 'device id belonged to a deleted device of another owner, whose history is kept under it (deleted_devices)');
END;
CREATE TRIGGER devices_claim AFTER INSERT ON devices BEGIN
  DELETE FROM deleted_devices WHERE device_id = new.device_id;
END;
CREATE TRIGGER devices_rename_refused BEFORE UPDATE OF device_id ON devices
  WHEN new.device_id IS NOT old.device_id AND EXISTS (
    SELECT 1 FROM deleted_devices WHERE device_id = new.device_id AND owner_id <> new.owner_id)
BEGIN
  SELECT RAISE(ABORT, 'device id belonged to a deleted device of another owner, whose history is kept under it (deleted_devices)');
END;
CREATE TRIGGER devices_renamed AFTER UPDATE OF device_id ON devices
  WHEN new.device_id IS NOT old.device_id
BEGIN
  DELETE FROM deleted_devices WHERE device_id = new.device_id;
  INSERT OR REPLACE INTO deleted_devices (device_id, owner_id, deleted_at)
    VALUES (old.device_id, old.owner_id,
            CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER));
END;
)sql",
};
constexpr int kLatestVersion = sizeof(kMigrations) / sizeof(kMigrations[0]);

constexpr const char* kDeviceColumns =
    "device_id, owner_id, name, model, installed_at, timezone, location, config, created_at, "
    "updated_at";
constexpr const char* kRuleColumns = "rule_id, owner_id, body, created_at, updated_at";
constexpr const char* kAlertColumns =
    "alert_id, rule_id, device_id, owner_id, state, acked, snoozed_until, opened_at, "
    "updated_at, body";

Status ErrorStatus(sqlite3* db, int rc, std::string_view what) {
  std::string msg = "sqlite: " + std::string(what) + ": " + sqlite3_errmsg(db);
  int extended = sqlite3_extended_errcode(db);
  switch (extended) {
    case SQLITE_CONSTRAINT_PRIMARYKEY:
    case SQLITE_CONSTRAINT_UNIQUE:
      return Status::AlreadyExists(std::move(msg));
    case SQLITE_CONSTRAINT_FOREIGNKEY:
      return Status::NotFound(std::move(msg));
    case SQLITE_CONSTRAINT_CHECK:
    case SQLITE_CONSTRAINT_NOTNULL:
      return Status::InvalidArgument(std::move(msg));
    default:
      break;
  }
  // A full disk (SQLite answers SQLITE_FULL for ENOSPC; a quota, EDQUOT, comes as an
  // SQLITE_IOERR_WRITE): the write is rolled back and can succeed once there is space,
  // so the API answers 503 + Retry-After (kMetadataDiskFull), not a 500 "internal" (found
  // by the operator's black-box test, session 31).
  const int system_errno = sqlite3_system_errno(db);
  if ((rc & 0xff) == SQLITE_FULL ||
      ((rc & 0xff) == SQLITE_IOERR && (system_errno == ENOSPC || system_errno == EDQUOT))) {
    return Status::Unavailable(std::string(kMetadataDiskFull) + " (" + msg + ")");
  }
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return Status::Unavailable(std::move(msg));
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
      return Status::IoError(std::move(msg));
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return Status::Corruption(std::move(msg));
    default:
      return Status::Internal(std::move(msg));
  }
}

// A prepared statement. Bind indexes are 1-based, column indexes 0-based.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  // Borrows a statement prepared once (SqliteMetadataStore::Prepared); resets it after use.
  Stmt(sqlite3* db, sqlite3_stmt* prepared, int rc)
      : db_(db), stmt_(prepared), rc_(rc), borrowed_(true) {}
  ~Stmt() {
    if (!borrowed_) {
      sqlite3_finalize(stmt_);
    } else if (stmt_ != nullptr) {
      sqlite3_reset(stmt_);
      sqlite3_clear_bindings(stmt_);
    }
  }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  Status status() const {
    return rc_ == SQLITE_OK ? Status::Ok() : ErrorStatus(db_, rc_, "prepare");
  }
  Stmt& Text(int i, std::string_view v) {
    sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  // Empty text is stored as NULL.
  Stmt& TextOrNull(int i, std::string_view v) {
    if (v.empty()) return Null(i);
    return Text(i, v);
  }
  Stmt& OptText(int i, const std::optional<std::string>& v) {
    if (!v) return Null(i);
    return Text(i, *v);
  }
  Stmt& Blob(int i, std::string_view v) {
    sqlite3_bind_blob(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& Int(int i, int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  Stmt& OptInt(int i, std::optional<int64_t> v) {
    if (!v) return Null(i);
    return Int(i, *v);
  }
  Stmt& Null(int i) {
    sqlite3_bind_null(stmt_, i);
    return *this;
  }

  // True when a row is available, false when done.
  Result<bool> Step() {
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return ErrorStatus(db_, rc, "step");
  }
  Status Run() {
    JOULE_ASSIGN_OR_RETURN(bool row, Step());
    (void)row;
    return Status::Ok();
  }

  bool IsNull(int c) const { return sqlite3_column_type(stmt_, c) == SQLITE_NULL; }
  std::string ColText(int c) const {
    const unsigned char* p = sqlite3_column_text(stmt_, c);
    if (p == nullptr) return {};
    return std::string(reinterpret_cast<const char*>(p),
                       static_cast<size_t>(sqlite3_column_bytes(stmt_, c)));
  }
  std::string ColBlob(int c) const {
    const void* p = sqlite3_column_blob(stmt_, c);
    if (p == nullptr) return {};
    return std::string(static_cast<const char*>(p),
                       static_cast<size_t>(sqlite3_column_bytes(stmt_, c)));
  }
  int64_t ColInt(int c) const { return sqlite3_column_int64(stmt_, c); }
  std::optional<int64_t> ColOptInt(int c) const {
    if (IsNull(c)) return std::nullopt;
    return ColInt(c);
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
  bool borrowed_ = false;
};

Device ReadDevice(const Stmt& s) {
  Device d;
  d.device_id = s.ColText(0);
  d.owner_id = s.ColText(1);
  d.name = s.ColText(2);
  d.model = s.ColText(3);
  d.installed_at_ns = InstalledAtFromStoredMicros(d.device_id, s.ColOptInt(4));
  d.timezone = s.ColText(5);
  d.location = s.ColText(6);
  d.config_json = s.ColText(7);
  d.created_at_ns = NanosFromStoredMicros(s.ColInt(8));
  d.updated_at_ns = NanosFromStoredMicros(s.ColInt(9));
  return d;
}

Rule ReadRule(const Stmt& s) {
  Rule r;
  r.id = s.ColText(0);
  r.owner_id = s.ColText(1);
  r.json = s.ColText(2);
  r.created_at_ns = NanosFromStoredMicros(s.ColInt(3));
  r.updated_at_ns = NanosFromStoredMicros(s.ColInt(4));
  return r;
}

Alert ReadAlert(const Stmt& s) {
  Alert a;
  a.id = s.ColText(0);
  a.rule_id = s.ColText(1);
  a.device_id = s.ColText(2);
  a.owner_id = s.ColText(3);
  a.state = ParseAlertState(s.ColText(4)).value_or(AlertState::kPending);
  a.acked = s.ColInt(5) != 0;
  a.snoozed_until_ns = NanosFromStoredMicros(s.ColOptInt(6));
  a.opened_at_ns = NanosFromStoredMicros(s.ColInt(7));
  a.updated_at_ns = NanosFromStoredMicros(s.ColInt(8));
  a.json = s.ColText(9);
  return a;
}

std::string Sql(std::initializer_list<std::string_view> parts) {
  std::string out;
  for (auto p : parts) out += p;
  return out;
}

// Alert cursors are "<opened_at_us>:<alert_id>".
bool ParseAlertCursor(std::string_view cursor, int64_t* opened_us, std::string* id) {
  size_t colon = cursor.find(':');
  if (colon == std::string_view::npos) return false;
  auto [p, ec] = std::from_chars(cursor.data(), cursor.data() + colon, *opened_us);
  if (ec != std::errc() || p != cursor.data() + colon) return false;
  *id = std::string(cursor.substr(colon + 1));
  return true;
}

// Rolls back unless committed. Inside a WriteBatch (`nested`) it is a savepoint of the
// batch's transaction.
class Transaction {
 public:
  Transaction(sqlite3* db, bool nested) : db_(db), nested_(nested) {}
  ~Transaction() {
    if (begun_ && !done_) {
      sqlite3_exec(db_, nested_ ? "ROLLBACK TO joule_tx; RELEASE joule_tx" : "ROLLBACK", nullptr,
                   nullptr, nullptr);
    }
  }
  Status Begin() {
    int rc = sqlite3_exec(db_, nested_ ? "SAVEPOINT joule_tx" : "BEGIN IMMEDIATE", nullptr, nullptr,
                          nullptr);
    if (rc != SQLITE_OK) return ErrorStatus(db_, rc, "begin");
    begun_ = true;
    return Status::Ok();
  }
  Status Commit() {
    int rc = sqlite3_exec(db_, nested_ ? "RELEASE joule_tx" : "COMMIT", nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) return ErrorStatus(db_, rc, "commit");
    done_ = true;
    return Status::Ok();
  }

 private:
  sqlite3* db_;
  bool nested_;
  bool begun_ = false;
  bool done_ = false;
};

}  // namespace

Result<std::unique_ptr<SqliteMetadataStore>> SqliteMetadataStore::Open(const std::string& path,
                                                                       const Clock* clock) {
  if (path.empty()) return Status::InvalidArgument("sqlite metadata store: empty path");
  sqlite3* db = nullptr;
  int rc =
      sqlite3_open_v2(path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return Status::IoError("sqlite: cannot open " + path + ": " + msg);
  }
  // The file holds token hashes and webhook secrets: owner-only (SQLite gives its -wal and
  // -shm files the database file's mode). A black-box test found it world-readable.
  if (path != ":memory:") ::chmod(path.c_str(), 0600);
  std::unique_ptr<SqliteMetadataStore> store(
      new SqliteMetadataStore(db, path, clock ? clock : SystemClock::Default()));
  sqlite3_busy_timeout(db, 5000);
  {
    std::lock_guard<std::mutex> lock(store->mu_);
    JOULE_RETURN_IF_ERROR(store->Exec("PRAGMA journal_mode=WAL"));
    JOULE_RETURN_IF_ERROR(store->Exec("PRAGMA synchronous=FULL"));
    JOULE_RETURN_IF_ERROR(store->Exec("PRAGMA foreign_keys=ON"));
  }
  JOULE_RETURN_IF_ERROR(store->Migrate());
  return store;
}

bool SqliteMetadataStore::HasSpaceToWrite() const {
  if (path_ == ":memory:") return true;
  const size_t slash = path_.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path_.substr(0, slash + 1);
  struct statvfs v;
  if (::statvfs(dir.c_str(), &v) != 0) return false;
  return static_cast<uint64_t>(v.f_bavail) * v.f_frsize >= (uint64_t{1} << 20);
}

SqliteMetadataStore::~SqliteMetadataStore() {
  for (auto& [sql, stmt] : prepared_) sqlite3_finalize(stmt);
  sqlite3_close_v2(db_);
}

sqlite3_stmt* SqliteMetadataStore::Prepared(const char* sql, int* rc) {
  auto it = prepared_.find(sql);
  if (it != prepared_.end()) {
    *rc = SQLITE_OK;
    return it->second;
  }
  sqlite3_stmt* stmt = nullptr;
  *rc = sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
  if (*rc != SQLITE_OK) {
    sqlite3_finalize(stmt);
    return nullptr;
  }
  prepared_.emplace(sql, stmt);
  return stmt;
}

int64_t SqliteMetadataStore::NowMicros() const { return clock_->NowNanos() / 1000; }

Status SqliteMetadataStore::Exec(const char* sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errmsg(db_);
    sqlite3_free(err);
    return ErrorStatus(db_, rc, msg);
  }
  return Status::Ok();
}

Status SqliteMetadataStore::WriteBatch(const std::function<Status()>& body) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (batch_) return Status::InvalidArgument("sqlite: WriteBatch does not nest");
    JOULE_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
    batch_ = true;
  }
  Status st = body();
  std::lock_guard<std::mutex> lock(mu_);
  batch_ = false;
  if (st.ok()) {
    st = Exec("COMMIT");
    if (st.ok()) return st;
  }
  (void)Exec("ROLLBACK");
  return st;
}

Status SqliteMetadataStore::Migrate() {
  std::lock_guard<std::mutex> lock(mu_);
  Transaction tx(db_, batch_);
  JOULE_RETURN_IF_ERROR(tx.Begin());
  JOULE_RETURN_IF_ERROR(
      Exec("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY NOT NULL, "
           "applied_at INTEGER NOT NULL)"));
  Stmt q(db_, "SELECT coalesce(max(version), 0) FROM schema_migrations");
  JOULE_RETURN_IF_ERROR(q.status());
  JOULE_ASSIGN_OR_RETURN(bool row, q.Step());
  int current = row ? static_cast<int>(q.ColInt(0)) : 0;
  if (current > kLatestVersion) {
    return Status::Internal("metadata database is at schema version " + std::to_string(current) +
                            ", newer than this Joule knows (" + std::to_string(kLatestVersion) +
                            "); upgrade Joule");
  }
  for (int v = current + 1; v <= kLatestVersion; ++v) {
    JOULE_RETURN_IF_ERROR(Exec(kMigrations[v - 1]));
    Stmt ins(db_, "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)");
    JOULE_RETURN_IF_ERROR(ins.status());
    JOULE_RETURN_IF_ERROR(ins.Int(1, v).Int(2, NowMicros()).Run());
  }
  return tx.Commit();
}

Result<int> SqliteMetadataStore::SchemaVersion() {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt q(db_, "SELECT coalesce(max(version), 0) FROM schema_migrations");
  JOULE_RETURN_IF_ERROR(q.status());
  JOULE_ASSIGN_OR_RETURN(bool row, q.Step());
  return row ? static_cast<int>(q.ColInt(0)) : 0;
}

// ---------------------------------------------------------------- devices

Result<Device> SqliteMetadataStore::GetDeviceLocked(std::string_view device_id) {
  static const std::string sql =
      Sql({"SELECT ", kDeviceColumns, " FROM devices WHERE device_id = ?1"});
  int rc = SQLITE_OK;
  sqlite3_stmt* prepared = Prepared(sql.c_str(), &rc);
  Stmt q(db_, prepared, rc);
  JOULE_RETURN_IF_ERROR(q.status());
  q.Text(1, device_id);
  JOULE_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return Status::NotFound("device not found: " + std::string(device_id));
  return ReadDevice(q);
}

Status SqliteMetadataStore::DeviceExistsLocked(std::string_view device_id) {
  Stmt q(db_, "SELECT 1 FROM devices WHERE device_id = ?1");
  JOULE_RETURN_IF_ERROR(q.status());
  q.Text(1, device_id);
  JOULE_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return Status::NotFound("device not found: " + std::string(device_id));
  return Status::Ok();
}

Result<std::string> SqliteMetadataStore::InsertDeviceTokenLocked(std::string_view device_id) {
  JOULE_ASSIGN_OR_RETURN(std::string token, GenerateToken(kDeviceTokenPrefix));
  Stmt ins(db_,
           "INSERT INTO device_tokens (token_hash, device_id, created_at) VALUES (?1, ?2, ?3)");
  JOULE_RETURN_IF_ERROR(ins.status());
  JOULE_RETURN_IF_ERROR(ins.Blob(1, HashToken(token)).Text(2, device_id).Int(3, NowMicros()).Run());
  return token;
}

Status SqliteMetadataStore::ClaimDeletedIdLocked(const Device& device) {
  Stmt q(db_, "SELECT owner_id FROM deleted_devices WHERE device_id = ?1");
  JOULE_RETURN_IF_ERROR(q.status());
  q.Text(1, device.device_id);
  JOULE_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return Status::Ok();
  if (q.ColText(0) != device.owner_id) return DeletedDeviceIdTaken(device.device_id);
  Stmt del(db_, "DELETE FROM deleted_devices WHERE device_id = ?1");
  JOULE_RETURN_IF_ERROR(del.status());
  return del.Text(1, device.device_id).Run();
}

Result<Device> SqliteMetadataStore::CreateDevice(const Device& device, std::string* token) {
  Result<Device> created = Status::Internal("unset");
  {
    std::lock_guard<std::mutex> lock(mu_);
    Transaction tx(db_, batch_);
    JOULE_RETURN_IF_ERROR(tx.Begin());
    JOULE_RETURN_IF_ERROR(ClaimDeletedIdLocked(device));
    int64_t now = NowMicros();
    Stmt ins(db_,
             "INSERT INTO devices (device_id, owner_id, name, model, installed_at, timezone, "
             "location, config, created_at, updated_at) "
             "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)");
    JOULE_RETURN_IF_ERROR(ins.status());
    ins.Text(1, device.device_id)
        .Text(2, device.owner_id)
        .TextOrNull(3, device.name)
        .TextOrNull(4, device.model)
        .OptInt(5, StoredMicrosFromNanos(device.installed_at_ns))
        .Text(6, device.timezone.empty() ? std::string_view("UTC") : device.timezone)
        .TextOrNull(7, device.location)
        .TextOrNull(8, device.config_json)
        .Int(9, now);
    Status st = ins.Run();
    if (st.code() == StatusCode::kAlreadyExists) {
      return Status::AlreadyExists("device already exists: " + device.device_id);
    }
    JOULE_RETURN_IF_ERROR(st);
    if (token != nullptr) {
      JOULE_ASSIGN_OR_RETURN(*token, InsertDeviceTokenLocked(device.device_id));
    }
    created = GetDeviceLocked(device.device_id);
    JOULE_RETURN_IF_ERROR(created.status());
    JOULE_RETURN_IF_ERROR(tx.Commit());
  }
  Publish({MetadataChange::Kind::kDevice, device.device_id});
  return created;
}

Result<Device> SqliteMetadataStore::GetDevice(std::string_view device_id) {
  std::lock_guard<std::mutex> lock(mu_);
  return GetDeviceLocked(device_id);
}

Result<std::optional<std::string>> SqliteMetadataStore::DeletedDeviceOwner(
    std::string_view device_id) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt q(db_, "SELECT owner_id FROM deleted_devices WHERE device_id = ?1");
  JOULE_RETURN_IF_ERROR(q.status());
  q.Text(1, device_id);
  JOULE_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return std::optional<std::string>();
  return std::optional<std::string>(q.ColText(0));
}

Result<DevicePage> SqliteMetadataStore::ListDevices(const ListDevicesOptions& options) {
  size_t limit = options.limit == 0 ? 1 : options.limit;
  std::string sql = Sql({"SELECT ", kDeviceColumns,
                         " FROM devices WHERE (?1 IS NULL OR owner_id = ?1) AND (?4 IS NULL OR "
                         "model = ?4) AND device_id > ?2 ORDER BY device_id LIMIT ?3"});
  std::lock_guard<std::mutex> lock(mu_);
  Stmt q(db_, sql.c_str());
  JOULE_RETURN_IF_ERROR(q.status());
  q.OptText(1, options.owner_id)
      .Text(2, options.after)
      .Int(3, static_cast<int64_t>(limit) + 1)
      .OptText(4, options.model);
  DevicePage page;
  while (true) {
    JOULE_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    if (page.devices.size() == limit) {
      page.next_cursor = page.devices.back().device_id;
      break;
    }
    page.devices.push_back(ReadDevice(q));
  }
  return page;
}

Result<Device> SqliteMetadataStore::UpdateDevice(std::string_view device_id,
                                                 const DeviceUpdate& update) {
  Result<Device> updated = Status::Internal("unset");
  {
    std::lock_guard<std::mutex> lock(mu_);
    Transaction tx(db_, batch_);
    JOULE_RETURN_IF_ERROR(tx.Begin());
    JOULE_ASSIGN_OR_RETURN(Device d, GetDeviceLocked(device_id));
    if (update.owner_id) d.owner_id = *update.owner_id;
    if (update.name) d.name = *update.name;
    if (update.model) d.model = *update.model;
    if (update.location) d.location = *update.location;
    if (update.timezone) d.timezone = update.timezone->empty() ? "UTC" : *update.timezone;
    if (update.installed_at_ns) d.installed_at_ns = *update.installed_at_ns;
    if (update.config_json) d.config_json = *update.config_json;
    // installed_at only when the update sets it: a stored value read as absent (out of
    // range, metadata_time.h) stays as it is.
    Stmt up(db_,
            "UPDATE devices SET owner_id = ?2, name = ?3, model = ?4, installed_at = CASE WHEN "
            "?10 THEN ?5 ELSE installed_at END, timezone = ?6, location = ?7, config = ?8, "
            "updated_at = ?9 WHERE device_id = ?1");
    JOULE_RETURN_IF_ERROR(up.status());
    up.Text(1, device_id)
        .Text(2, d.owner_id)
        .TextOrNull(3, d.name)
        .TextOrNull(4, d.model)
        .OptInt(5, StoredMicrosFromNanos(d.installed_at_ns))
        .Text(6, d.timezone)
        .TextOrNull(7, d.location)
        .TextOrNull(8, d.config_json)
        .Int(9, NowMicros())
        .Int(10, update.installed_at_ns ? 1 : 0);
    JOULE_RETURN_IF_ERROR(up.Run());
    updated = GetDeviceLocked(device_id);
    JOULE_RETURN_IF_ERROR(updated.status());
    JOULE_RETURN_IF_ERROR(tx.Commit());
  }
  std::string id(device_id);
  Publish({MetadataChange::Kind::kDevice, id});
  if (update.owner_id) Publish({MetadataChange::Kind::kDeviceTokens, id});
  return updated;
}

Status SqliteMetadataStore::DeleteDevice(std::string_view device_id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    Stmt del(db_, "DELETE FROM devices WHERE device_id = ?1");
    JOULE_RETURN_IF_ERROR(del.status());
    JOULE_RETURN_IF_ERROR(del.Text(1, device_id).Run());
    if (sqlite3_changes(db_) == 0) {
      return Status::NotFound("device not found: " + std::string(device_id));
    }
  }
  std::string id(device_id);
  Publish({MetadataChange::Kind::kDevice, id});
  Publish({MetadataChange::Kind::kDeviceTokens, id});
  return Status::Ok();
}

// ---------------------------------------------------------------- credentials

Result<std::string> SqliteMetadataStore::IssueDeviceToken(std::string_view device_id) {
  std::lock_guard<std::mutex> lock(mu_);
  JOULE_RETURN_IF_ERROR(DeviceExistsLocked(device_id));
  return InsertDeviceTokenLocked(device_id);
}

Result<std::string> SqliteMetadataStore::RotateDeviceToken(std::string_view device_id) {
  std::string token;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Transaction tx(db_, batch_);
    JOULE_RETURN_IF_ERROR(tx.Begin());
    JOULE_RETURN_IF_ERROR(DeviceExistsLocked(device_id));
    Stmt del(db_, "DELETE FROM device_tokens WHERE device_id = ?1");
    JOULE_RETURN_IF_ERROR(del.status());
    JOULE_RETURN_IF_ERROR(del.Text(1, device_id).Run());
    JOULE_ASSIGN_OR_RETURN(token, InsertDeviceTokenLocked(device_id));
    JOULE_RETURN_IF_ERROR(tx.Commit());
  }
  Publish({MetadataChange::Kind::kDeviceTokens, std::string(device_id)});
  return token;
}

Status SqliteMetadataStore::RevokeDeviceTokens(std::string_view device_id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    JOULE_RETURN_IF_ERROR(DeviceExistsLocked(device_id));
    Stmt del(db_, "DELETE FROM device_tokens WHERE device_id = ?1");
    JOULE_RETURN_IF_ERROR(del.status());
    JOULE_RETURN_IF_ERROR(del.Text(1, device_id).Run());
  }
  Publish({MetadataChange::Kind::kDeviceTokens, std::string(device_id)});
  return Status::Ok();
}

Result<OwnerKey> SqliteMetadataStore::CreateOwnerKey(std::string_view owner_id) {
  OwnerKey key;
  key.owner_id = owner_id;
  JOULE_ASSIGN_OR_RETURN(std::string hex, RandomHex(8));
  key.key_id = "key_" + hex;
  JOULE_ASSIGN_OR_RETURN(key.key, GenerateToken(kOwnerKeyPrefix));
  int64_t now = NowMicros();
  key.created_at_ns = now * 1000;
  std::lock_guard<std::mutex> lock(mu_);
  Stmt ins(db_,
           "INSERT INTO owner_keys (key_id, token_hash, owner_id, created_at) "
           "VALUES (?1, ?2, ?3, ?4)");
  JOULE_RETURN_IF_ERROR(ins.status());
  JOULE_RETURN_IF_ERROR(
      ins.Text(1, key.key_id).Blob(2, HashToken(key.key)).Text(3, owner_id).Int(4, now).Run());
  return key;
}

Status SqliteMetadataStore::RevokeOwnerKey(std::string_view key_id) {
  std::string owner_id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Stmt del(db_, "DELETE FROM owner_keys WHERE key_id = ?1 RETURNING owner_id");
    JOULE_RETURN_IF_ERROR(del.status());
    del.Text(1, key_id);
    JOULE_ASSIGN_OR_RETURN(bool row, del.Step());
    if (!row) return Status::NotFound("owner key not found: " + std::string(key_id));
    owner_id = del.ColText(0);
    JOULE_ASSIGN_OR_RETURN(row, del.Step());
  }
  Publish({MetadataChange::Kind::kOwnerKeys, owner_id});
  return Status::Ok();
}

Result<std::vector<OwnerKey>> SqliteMetadataStore::ListOwnerKeys(std::string_view owner_id) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt q(db_,
         "SELECT key_id, owner_id, created_at FROM owner_keys WHERE owner_id = ?1 "
         "ORDER BY created_at, key_id");
  JOULE_RETURN_IF_ERROR(q.status());
  q.Text(1, owner_id);
  std::vector<OwnerKey> keys;
  while (true) {
    JOULE_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    OwnerKey k;
    k.key_id = q.ColText(0);
    k.owner_id = q.ColText(1);
    k.created_at_ns = NanosFromStoredMicros(q.ColInt(2));
    keys.push_back(std::move(k));
  }
  return keys;
}

Result<Principal> SqliteMetadataStore::AuthenticateToken(std::string_view token) {
  if (!TokenLooksValid(token)) return Status::Unauthenticated("malformed token");
  std::string hash = HashToken(token);
  bool device = token.starts_with(kDeviceTokenPrefix);
  std::lock_guard<std::mutex> lock(mu_);
  int rc = SQLITE_OK;
  sqlite3_stmt* prepared =
      Prepared(device ? "SELECT t.token_hash, t.device_id, d.owner_id FROM device_tokens t "
                        "JOIN devices d ON d.device_id = t.device_id WHERE t.token_hash = ?1"
                      : "SELECT token_hash, owner_id, key_id FROM owner_keys WHERE token_hash = ?1",
               &rc);
  Stmt q(db_, prepared, rc);
  JOULE_RETURN_IF_ERROR(q.status());
  q.Blob(1, hash);
  JOULE_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row || !HashesEqual(q.ColBlob(0), hash)) return Status::Unauthenticated("unknown token");
  Principal p;
  if (device) {
    p.kind = PrincipalKind::kDevice;
    p.device_id = q.ColText(1);
    p.owner_id = q.ColText(2);
  } else {
    p.kind = PrincipalKind::kOwner;
    p.owner_id = q.ColText(1);
    p.key_id = q.ColText(2);
  }
  return p;
}

// ---------------------------------------------------------------- rules

Result<Rule> SqliteMetadataStore::GetRuleLocked(std::string_view id) {
  std::string sql = Sql({"SELECT ", kRuleColumns, " FROM rules WHERE rule_id = ?1"});
  Stmt q(db_, sql.c_str());
  JOULE_RETURN_IF_ERROR(q.status());
  q.Text(1, id);
  JOULE_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return Status::NotFound("rule not found: " + std::string(id));
  return ReadRule(q);
}

Result<Rule> SqliteMetadataStore::CreateRule(const Rule& rule) {
  Result<Rule> created = Status::Internal("unset");
  {
    std::lock_guard<std::mutex> lock(mu_);
    Stmt ins(db_,
             "INSERT INTO rules (rule_id, owner_id, body, created_at, updated_at) "
             "VALUES (?1, ?2, ?3, ?4, ?4)");
    JOULE_RETURN_IF_ERROR(ins.status());
    Status st =
        ins.Text(1, rule.id).Text(2, rule.owner_id).Text(3, rule.json).Int(4, NowMicros()).Run();
    if (st.code() == StatusCode::kAlreadyExists) {
      return Status::AlreadyExists("rule already exists: " + rule.id);
    }
    JOULE_RETURN_IF_ERROR(st);
    created = GetRuleLocked(rule.id);
  }
  if (created.ok()) Publish({MetadataChange::Kind::kRule, rule.id});
  return created;
}

Result<Rule> SqliteMetadataStore::GetRule(std::string_view id) {
  std::lock_guard<std::mutex> lock(mu_);
  return GetRuleLocked(id);
}

Result<std::vector<Rule>> SqliteMetadataStore::ListRules(std::optional<std::string> owner_id) {
  std::string sql = Sql({"SELECT ", kRuleColumns,
                         " FROM rules WHERE (?1 IS NULL OR owner_id = ?1) ORDER BY rule_id"});
  std::lock_guard<std::mutex> lock(mu_);
  Stmt q(db_, sql.c_str());
  JOULE_RETURN_IF_ERROR(q.status());
  q.OptText(1, owner_id);
  std::vector<Rule> rules;
  while (true) {
    JOULE_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    rules.push_back(ReadRule(q));
  }
  return rules;
}

Result<Rule> SqliteMetadataStore::ReplaceRule(const Rule& rule) {
  Result<Rule> replaced = Status::Internal("unset");
  {
    std::lock_guard<std::mutex> lock(mu_);
    Stmt up(db_, "UPDATE rules SET owner_id = ?2, body = ?3, updated_at = ?4 WHERE rule_id = ?1");
    JOULE_RETURN_IF_ERROR(up.status());
    JOULE_RETURN_IF_ERROR(
        up.Text(1, rule.id).Text(2, rule.owner_id).Text(3, rule.json).Int(4, NowMicros()).Run());
    if (sqlite3_changes(db_) == 0) return Status::NotFound("rule not found: " + rule.id);
    replaced = GetRuleLocked(rule.id);
  }
  if (replaced.ok()) Publish({MetadataChange::Kind::kRule, rule.id});
  return replaced;
}

Status SqliteMetadataStore::DeleteRule(std::string_view id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    Stmt del(db_, "DELETE FROM rules WHERE rule_id = ?1");
    JOULE_RETURN_IF_ERROR(del.status());
    JOULE_RETURN_IF_ERROR(del.Text(1, id).Run());
    if (sqlite3_changes(db_) == 0) return Status::NotFound("rule not found: " + std::string(id));
  }
  Publish({MetadataChange::Kind::kRule, std::string(id)});
  return Status::Ok();
}

// ---------------------------------------------------------------- alerts

Result<Alert> SqliteMetadataStore::GetAlertLocked(std::string_view id) {
  std::string sql = Sql({"SELECT ", kAlertColumns, " FROM alerts WHERE alert_id = ?1"});
  Stmt q(db_, sql.c_str());
  JOULE_RETURN_IF_ERROR(q.status());
  q.Text(1, id);
  JOULE_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return Status::NotFound("alert not found: " + std::string(id));
  return ReadAlert(q);
}

Result<bool> SqliteMetadataStore::UpsertAlert(const Alert& alert) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt up(db_,
          "INSERT INTO alerts (alert_id, rule_id, device_id, owner_id, state, acked, "
          "snoozed_until, opened_at, updated_at, body) "
          "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) "
          "ON CONFLICT (alert_id) DO UPDATE SET rule_id = excluded.rule_id, "
          "device_id = excluded.device_id, owner_id = excluded.owner_id, state = excluded.state, "
          "updated_at = excluded.updated_at, body = excluded.body "
          "WHERE excluded.updated_at >= alerts.updated_at");
  JOULE_RETURN_IF_ERROR(up.status());
  up.Text(1, alert.id)
      .Text(2, alert.rule_id)
      .Text(3, alert.device_id)
      .Text(4, alert.owner_id)
      .Text(5, AlertStateName(alert.state))
      .Int(6, alert.acked ? 1 : 0)
      .OptInt(7, StoredMicrosFromNanos(alert.snoozed_until_ns))
      .Int(8, alert.opened_at_ns / 1000)
      .Int(9, alert.updated_at_ns / 1000)
      .Text(10, alert.json);
  JOULE_RETURN_IF_ERROR(up.Run());
  return sqlite3_changes(db_) > 0;
}

Result<Alert> SqliteMetadataStore::GetAlert(std::string_view id) {
  std::lock_guard<std::mutex> lock(mu_);
  return GetAlertLocked(id);
}

Result<AlertPage> SqliteMetadataStore::ListAlerts(const AlertFilter& filter) {
  size_t limit = filter.limit == 0 ? 1 : filter.limit;
  std::optional<int64_t> cursor_opened;
  std::optional<std::string> cursor_id;
  if (!filter.after.empty()) {
    int64_t opened = 0;
    std::string id;
    if (!ParseAlertCursor(filter.after, &opened, &id)) {
      return Status::InvalidArgument("invalid alert cursor");
    }
    cursor_opened = opened;
    cursor_id = std::move(id);
  }
  std::optional<std::string> state;
  if (filter.state) state = std::string(AlertStateName(*filter.state));
  std::string sql =
      Sql({"SELECT ", kAlertColumns,
           " FROM alerts WHERE (?1 IS NULL OR device_id = ?1) AND (?2 IS NULL OR owner_id = ?2) "
           "AND (?3 IS NULL OR rule_id = ?3) AND (?4 IS NULL OR state = ?4) "
           "AND (?5 IS NULL OR opened_at >= ?5) AND (?6 IS NULL OR opened_at < ?6) "
           "AND (?7 IS NULL OR opened_at < ?7 OR (opened_at = ?7 AND alert_id < ?8)) "
           "AND (?10 IS NULL OR updated_at >= ?10) "
           "ORDER BY opened_at DESC, alert_id DESC LIMIT ?9"});
  std::lock_guard<std::mutex> lock(mu_);
  Stmt q(db_, sql.c_str());
  JOULE_RETURN_IF_ERROR(q.status());
  q.OptText(1, filter.device_id)
      .OptText(2, filter.owner_id)
      .OptText(3, filter.rule_id)
      .OptText(4, state)
      .OptInt(5, StoredMicrosFromNanos(filter.from_ns))
      .OptInt(6, StoredMicrosFromNanos(filter.to_ns))
      .OptInt(7, cursor_opened)
      .OptText(8, cursor_id)
      .Int(9, static_cast<int64_t>(limit) + 1)
      .OptInt(10, StoredMicrosFromNanos(filter.updated_since_ns));
  AlertPage page;
  while (true) {
    JOULE_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    if (page.alerts.size() == limit) {
      const Alert& last = page.alerts.back();
      page.next_cursor = std::to_string(last.opened_at_ns / 1000) + ":" + last.id;
      break;
    }
    page.alerts.push_back(ReadAlert(q));
  }
  return page;
}

Result<Alert> SqliteMetadataStore::SetAlertAcked(std::string_view id, bool acked) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt up(db_, "UPDATE alerts SET acked = ?2 WHERE alert_id = ?1");
  JOULE_RETURN_IF_ERROR(up.status());
  JOULE_RETURN_IF_ERROR(up.Text(1, id).Int(2, acked ? 1 : 0).Run());
  if (sqlite3_changes(db_) == 0) return Status::NotFound("alert not found: " + std::string(id));
  return GetAlertLocked(id);
}

Result<Alert> SqliteMetadataStore::SnoozeAlert(std::string_view id,
                                               std::optional<int64_t> until_ns) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt up(db_, "UPDATE alerts SET snoozed_until = ?2 WHERE alert_id = ?1");
  JOULE_RETURN_IF_ERROR(up.status());
  JOULE_RETURN_IF_ERROR(up.Text(1, id).OptInt(2, StoredMicrosFromNanos(until_ns)).Run());
  if (sqlite3_changes(db_) == 0) return Status::NotFound("alert not found: " + std::string(id));
  return GetAlertLocked(id);
}

}  // namespace joule::store

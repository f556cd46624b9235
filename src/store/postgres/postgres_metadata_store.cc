#include "store/postgres/postgres_metadata_store.h"

#include <libpq-fe.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <mutex>
#include <string_view>
#include <utility>

#include "common/logging.h"
#include "common/thread_priority.h"
#include "common/time_format.h"
#include "common/url_password.h"
#include "store/metadata_time.h"
#include "store/metadata_token.h"

namespace joule::store {
namespace {

// Migrations, in order; version = index + 1. Never edit a released one: append.
// `devices` is exactly CONTRACT §5 plus created_at/updated_at (with defaults, so plain
// INSERTs from psql work). Times are timestamptz; joule_us/joule_ts convert to and from
// microseconds since the epoch, which is what the C++ side exchanges.
const char* const kMigrations[] = {
    // 1: devices, credentials, rules, alerts; change notification.
    R"sql(
CREATE FUNCTION joule_us(t timestamptz) RETURNS bigint LANGUAGE sql IMMUTABLE STRICT
  AS $$ SELECT (extract(epoch FROM t) * 1000000)::bigint $$;
CREATE FUNCTION joule_ts(us bigint) RETURNS timestamptz LANGUAGE sql STABLE STRICT
  AS $$ SELECT timestamptz 'epoch' + us * interval '1 microsecond' $$;

CREATE TABLE devices (
  device_id    text PRIMARY KEY,
  owner_id     text NOT NULL,
  name         text,
  model        text,
  installed_at timestamptz,
  timezone     text NOT NULL DEFAULT 'UTC',
  location     text,
  config       jsonb,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX devices_id_bytes_idx ON devices (device_id COLLATE "C");
CREATE INDEX devices_owner_idx ON devices (owner_id, device_id COLLATE "C");

CREATE TABLE device_tokens (
  token_hash bytea PRIMARY KEY,
  device_id  text NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE ON UPDATE CASCADE,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX device_tokens_device_idx ON device_tokens (device_id);

CREATE TABLE owner_keys (
  key_id     text PRIMARY KEY,
  token_hash bytea NOT NULL UNIQUE,
  owner_id   text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX owner_keys_owner_idx ON owner_keys (owner_id);

CREATE TABLE rules (
  rule_id    text PRIMARY KEY,
  owner_id   text NOT NULL,
  body       json NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rules_owner_idx ON rules (owner_id, rule_id COLLATE "C");

CREATE TABLE alerts (
  alert_id      text PRIMARY KEY,
  rule_id       text NOT NULL,
  device_id     text NOT NULL,
  owner_id      text NOT NULL,
  state         text NOT NULL CHECK (state IN ('pending', 'firing', 'resolved')),
  acked         boolean NOT NULL DEFAULT false,
  snoozed_until timestamptz,
  opened_at     timestamptz NOT NULL,
  updated_at    timestamptz NOT NULL,
  body          json NOT NULL
);
CREATE INDEX alerts_device_idx ON alerts (device_id, opened_at);
CREATE INDEX alerts_owner_idx ON alerts (owner_id, opened_at);
CREATE INDEX alerts_opened_idx ON alerts (opened_at, alert_id COLLATE "C");

-- An UPDATE that does not set updated_at (e.g. from psql) still moves it.
CREATE FUNCTION joule_devices_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
    NEW.updated_at := now();
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER devices_touch BEFORE UPDATE ON devices
  FOR EACH ROW EXECUTE FUNCTION joule_devices_touch();

CREATE FUNCTION joule_devices_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    PERFORM pg_notify('joule_devices', OLD.device_id);
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    PERFORM pg_notify('joule_devices', NEW.device_id);
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER devices_notify AFTER INSERT OR UPDATE OR DELETE ON devices
  FOR EACH ROW EXECUTE FUNCTION joule_devices_notify();

CREATE FUNCTION joule_tokens_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('joule_metadata', 'tokens:' || OLD.device_id);
  IF TG_OP = 'UPDATE' THEN
    PERFORM pg_notify('joule_metadata', 'tokens:' || NEW.device_id);
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER device_tokens_notify AFTER UPDATE OR DELETE ON device_tokens
  FOR EACH ROW EXECUTE FUNCTION joule_tokens_notify();

CREATE FUNCTION joule_keys_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('joule_metadata', 'keys:' || OLD.owner_id);
  IF TG_OP = 'UPDATE' THEN
    PERFORM pg_notify('joule_metadata', 'keys:' || NEW.owner_id);
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER owner_keys_notify AFTER UPDATE OR DELETE ON owner_keys
  FOR EACH ROW EXECUTE FUNCTION joule_keys_notify();

CREATE FUNCTION joule_rules_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    PERFORM pg_notify('joule_metadata', 'rule:' || OLD.rule_id);
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    PERFORM pg_notify('joule_metadata', 'rule:' || NEW.rule_id);
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER rules_notify AFTER INSERT OR UPDATE OR DELETE ON rules
  FOR EACH ROW EXECUTE FUNCTION joule_rules_notify();

CREATE FUNCTION joule_truncate_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('joule_metadata', '*');
  RETURN NULL;
END $$;
CREATE TRIGGER devices_truncate AFTER TRUNCATE ON devices
  FOR EACH STATEMENT EXECUTE FUNCTION joule_truncate_notify();
CREATE TRIGGER device_tokens_truncate AFTER TRUNCATE ON device_tokens
  FOR EACH STATEMENT EXECUTE FUNCTION joule_truncate_notify();
CREATE TRIGGER owner_keys_truncate AFTER TRUNCATE ON owner_keys
  FOR EACH STATEMENT EXECUTE FUNCTION joule_truncate_notify();
CREATE TRIGGER rules_truncate AFTER TRUNCATE ON rules
  FOR EACH STATEMENT EXECUTE FUNCTION joule_truncate_notify();
)sql",
    // 2: the owner of every deleted device id (its history is kept under that id, so the id
    // may be registered again only for the same owner). A trigger, so that a DELETE from
    // plain SQL counts too.
    R"sql(
CREATE TABLE deleted_devices (
  device_id  text PRIMARY KEY,
  owner_id   text NOT NULL,
  deleted_at timestamptz NOT NULL
);
CREATE FUNCTION joule_device_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO deleted_devices (device_id, owner_id, deleted_at)
    VALUES (OLD.device_id, OLD.owner_id, now())
    ON CONFLICT (device_id) DO UPDATE
      SET owner_id = EXCLUDED.owner_id, deleted_at = EXCLUDED.deleted_at;
  RETURN NULL;
END $$;
CREATE TRIGGER devices_deleted AFTER DELETE ON devices
  FOR EACH ROW EXECUTE FUNCTION joule_device_deleted();
)sql",
    // 3: plain SQL keeps the deleted-device rule too. TRUNCATE fires no row trigger, so a
    // statement trigger notes every device before it goes; an INSERT (or a renaming
    // UPDATE) of an id deleted from another owner is refused as the API refuses it, one by
    // the same owner takes the id back; a rename notes the old id as deleted (its history
    // stays under it).
    R"sql(
CREATE FUNCTION joule_devices_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO deleted_devices (device_id, owner_id, deleted_at)
    SELECT device_id, owner_id, now() FROM devices
    ON CONFLICT (device_id) DO UPDATE
      SET owner_id = EXCLUDED.owner_id, deleted_at = EXCLUDED.deleted_at;
  RETURN NULL;
END $$;
CREATE TRIGGER devices_truncated BEFORE TRUNCATE ON devices
  FOR EACH STATEMENT EXECUTE FUNCTION joule_devices_truncated();

CREATE FUNCTION joule_devices_claim() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  previous text;
BEGIN
  SELECT owner_id INTO previous FROM deleted_devices WHERE device_id = NEW.device_id FOR UPDATE;
  IF FOUND THEN
    IF previous <> NEW.owner_id THEN
      RAISE EXCEPTION USING ERRCODE = 'unique_violation',
        MESSAGE = 'device id ' || NEW.device_id || ' belonged to a deleted device of another '
                  'owner, whose history is kept under it (deleted_devices)';
    END IF;
    DELETE FROM deleted_devices WHERE device_id = NEW.device_id;
  END IF;
  IF TG_OP = 'UPDATE' THEN
    INSERT INTO deleted_devices (device_id, owner_id, deleted_at)
      VALUES (OLD.device_id, OLD.owner_id, now())
      ON CONFLICT (device_id) DO UPDATE
        SET owner_id = EXCLUDED.owner_id, deleted_at = EXCLUDED.deleted_at;
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER devices_claim BEFORE INSERT ON devices
  FOR EACH ROW EXECUTE FUNCTION joule_devices_claim();
CREATE TRIGGER devices_claim_renamed BEFORE UPDATE OF device_id ON devices
  FOR EACH ROW WHEN (NEW.device_id IS DISTINCT FROM OLD.device_id)
  EXECUTE FUNCTION joule_devices_claim();
)sql",
    // 4: joule_us of 'infinity' / '-infinity' (which plain SQL may write) is the largest /
    // smallest bigint instead of an error that failed every read of the row — and of every
    // list holding it. Joule reads such a time as out of range (metadata_time.h).
    R"sql(
CREATE OR REPLACE FUNCTION joule_us(t timestamptz) RETURNS bigint LANGUAGE sql IMMUTABLE STRICT
  AS $$ SELECT CASE WHEN isfinite(t) THEN (extract(epoch FROM t) * 1000000)::bigint
                    WHEN t > timestamptz 'epoch' THEN 9223372036854775807::bigint
                    ELSE (-9223372036854775807)::bigint - 1 END $$;
)sql",
};
constexpr int kLatestVersion = sizeof(kMigrations) / sizeof(kMigrations[0]);
// Serializes concurrent Migrate() calls (several Joule processes starting at once).
constexpr const char* kMigrationLockKey = "74290501";

#define JOULE_DEVICE_COLUMNS                                                       \
  "device_id, owner_id, name, model, joule_us(installed_at), timezone, location, " \
  "config::text, joule_us(created_at), joule_us(updated_at)"
#define JOULE_RULE_COLUMNS \
  "rule_id, owner_id, body::text, joule_us(created_at), joule_us(updated_at)"
#define JOULE_ALERT_COLUMNS                                                         \
  "alert_id, rule_id, device_id, owner_id, state, acked, joule_us(snoozed_until), " \
  "joule_us(opened_at), joule_us(updated_at), body::text"

struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using PgResult = std::unique_ptr<PGresult, ResultDeleter>;

// Query parameters: text format, except bytes (binary).
class Params {
 public:
  Params& Text(std::string_view v) {
    values_.emplace_back(std::string(v));
    formats_.push_back(0);
    return *this;
  }
  Params& TextOrNull(std::string_view v) { return v.empty() ? Null() : Text(v); }
  Params& OptText(const std::optional<std::string>& v) { return v ? Text(*v) : Null(); }
  Params& Int(int64_t v) { return Text(std::to_string(v)); }
  Params& OptInt(std::optional<int64_t> v) { return v ? Int(*v) : Null(); }
  Params& Bool(bool v) { return Text(v ? "true" : "false"); }
  Params& Bytes(std::string_view v) {
    values_.emplace_back(std::string(v));
    formats_.push_back(1);
    return *this;
  }
  Params& Null() {
    values_.emplace_back(std::nullopt);
    formats_.push_back(0);
    return *this;
  }

  int size() const { return static_cast<int>(values_.size()); }
  void Fill(std::vector<const char*>* values, std::vector<int>* lengths) const {
    for (const auto& v : values_) {
      values->push_back(v ? v->data() : nullptr);
      lengths->push_back(v ? static_cast<int>(v->size()) : 0);
    }
  }
  const int* formats() const { return formats_.data(); }

 private:
  std::vector<std::optional<std::string>> values_;
  std::vector<int> formats_;
};

Status ErrorFromResult(PGconn* conn, const PGresult* res, std::string_view what) {
  std::string msg = "postgres: " + std::string(what) + ": ";
  const char* err = res ? PQresultErrorMessage(res) : PQerrorMessage(conn);
  msg += (err && *err) ? err : PQerrorMessage(conn);
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  if (PQstatus(conn) == CONNECTION_BAD) return Status::Unavailable(std::move(msg));
  const char* state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
  std::string_view sqlstate = state ? state : "";
  if (sqlstate == "23505") return Status::AlreadyExists(std::move(msg));
  if (sqlstate == "23503") return Status::NotFound(std::move(msg));
  if (sqlstate.starts_with("22") || sqlstate == "23514" || sqlstate == "23502") {
    return Status::InvalidArgument(std::move(msg));
  }
  // 53100 disk_full: nothing was committed, the write can succeed once the database
  // server has space (a 500 "internal" before session 31). The rest of class 53
  // (insufficient resources: out of memory, too many connections, a configured limit)
  // passes too: try again later.
  if (sqlstate == "53100") {
    return Status::Unavailable(std::string(kMetadataDiskFull) + " (" + msg + ")");
  }
  if (sqlstate.starts_with("08") || sqlstate.starts_with("57P") || sqlstate == "40001" ||
      sqlstate == "40P01" || sqlstate.starts_with("53")) {
    return Status::Unavailable(std::move(msg));
  }
  return Status::Internal(std::move(msg));
}

// ---------------------------------------------------------------- bounded waits
//
// No libpq call here waits without a bound: a PostgreSQL that accepts connections but does
// not answer (stopped, overloaded, a statement queued behind a lock) must not hold a caller
// — in particular an HTTP I/O thread checking a token — for longer than its operation's
// deadline (found by a black-box test: a table lock froze /healthz and every ingest).
// Connections are non-blocking; each statement is sent with PQsend* and awaited with
// poll() until the deadline of the operation, set per thread by WithConnection (an
// OperationDeadline). A statement that passes it leaves its connection unusable (the
// socket is shut down, so nothing waits on it again) and returns Unavailable.
using SteadyClock = std::chrono::steady_clock;
using Deadline = SteadyClock::time_point;

thread_local Deadline t_deadline = Deadline::max();
thread_local int t_abort_fd = -1;       // readable = give up now (shutdown)
thread_local bool t_timed_out = false;  // a wait of this operation reached its deadline

class OperationDeadline {
 public:
  explicit OperationDeadline(Deadline deadline) : saved_(t_deadline) {
    t_deadline = deadline;
    t_timed_out = false;
  }
  ~OperationDeadline() { t_deadline = saved_; }
  OperationDeadline(const OperationDeadline&) = delete;
  OperationDeadline& operator=(const OperationDeadline&) = delete;

 private:
  Deadline saved_;
};

Deadline DeadlineIn(std::chrono::milliseconds timeout) { return SteadyClock::now() + timeout; }

// Waits until `fd` has one of `events` (or an error). False at the deadline, or when
// t_abort_fd is readable.
bool WaitSocket(int fd, short events, Deadline deadline) {
  for (;;) {
    int timeout_ms = -1;
    if (deadline != Deadline::max()) {
      auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - SteadyClock::now());
      if (left.count() <= 0) return false;
      timeout_ms = static_cast<int>(std::min<int64_t>(left.count(), 1 << 30));
    }
    pollfd p[2] = {};
    p[0].fd = fd;
    p[0].events = events;
    p[1].fd = t_abort_fd;
    p[1].events = POLLIN;
    int rc = poll(p, t_abort_fd >= 0 ? 2 : 1, timeout_ms);
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) return true;  // let libpq meet the error
    if (rc == 0) continue;    // the deadline check above ends it
    if (t_abort_fd >= 0 && p[1].revents != 0) return false;
    return true;
  }
}

std::string Seconds(Deadline start, Deadline deadline) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - start).count();
  return std::to_string(ms / 1000) + (ms % 1000 ? "." + std::to_string(ms % 1000 / 100) : "") +
         " s";
}

// The statement in flight will never be awaited: shut the socket so that libpq sees the
// connection as broken the next time it reads, and no one reuses it.
Status TimedOut(PGconn* conn, std::string_view what) {
  t_timed_out = true;
  if (int fd = PQsocket(conn); fd >= 0) shutdown(fd, SHUT_RDWR);
  return Status::Unavailable("postgres: " + std::string(what) +
                             ": no answer in time (the database does not answer)");
}

// Awaits the results of the statement sent last; returns the first error, else the last
// result.
Result<PgResult> Await(PGconn* conn, std::string_view what) {
  if (PQsocket(conn) < 0) return ErrorFromResult(conn, nullptr, what);
  for (;;) {
    int flushed = PQflush(conn);
    if (flushed == 0) break;
    if (flushed < 0) return ErrorFromResult(conn, nullptr, what);
    if (!WaitSocket(PQsocket(conn), POLLIN | POLLOUT, t_deadline)) return TimedOut(conn, what);
    if (PQconsumeInput(conn) == 0) return ErrorFromResult(conn, nullptr, what);
  }
  PgResult kept;
  bool failed = false;
  for (;;) {
    while (PQisBusy(conn)) {
      if (!WaitSocket(PQsocket(conn), POLLIN, t_deadline)) return TimedOut(conn, what);
      if (PQconsumeInput(conn) == 0) return ErrorFromResult(conn, nullptr, what);
    }
    PgResult res(PQgetResult(conn));
    if (!res) break;
    if (failed) continue;
    ExecStatusType st = PQresultStatus(res.get());
    failed = st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK;
    kept = std::move(res);
  }
  if (!kept) return ErrorFromResult(conn, nullptr, what);
  if (failed) return ErrorFromResult(conn, kept.get(), what);
  return kept;
}

Result<PgResult> Exec(PGconn* conn, const char* sql, const Params& params = Params()) {
  std::vector<const char*> values;
  std::vector<int> lengths;
  params.Fill(&values, &lengths);
  if (PQsendQueryParams(conn, sql, params.size(), nullptr, values.data(), lengths.data(),
                        params.formats(), 0) == 0) {
    return ErrorFromResult(conn, nullptr, "query");
  }
  return Await(conn, "query");
}

// For constant scripts with several statements (migrations) and transaction control.
Status ExecScript(PGconn* conn, const char* sql) {
  if (PQsendQuery(conn, sql) == 0) return ErrorFromResult(conn, nullptr, "script");
  return Await(conn, "script").status();
}

// Rolls back unless committed.
class Transaction {
 public:
  explicit Transaction(PGconn* conn) : conn_(conn) {}
  ~Transaction() {
    if (begun_ && !done_ && PQstatus(conn_) == CONNECTION_OK) {
      [[maybe_unused]] Status st = ExecScript(conn_, "ROLLBACK");
    }
  }
  Status Begin() {
    JOULE_RETURN_IF_ERROR(ExecScript(conn_, "BEGIN"));
    begun_ = true;
    return Status::Ok();
  }
  Status Commit() {
    done_ = true;
    return ExecScript(conn_, "COMMIT");
  }

 private:
  PGconn* conn_;
  bool begun_ = false;
  bool done_ = false;
};

std::string Text(const PGresult* r, int row, int col) {
  return std::string(PQgetvalue(r, row, col), static_cast<size_t>(PQgetlength(r, row, col)));
}
int64_t Int(const PGresult* r, int row, int col) {
  int64_t v = 0;
  const char* p = PQgetvalue(r, row, col);
  std::from_chars(p, p + PQgetlength(r, row, col), v);
  return v;
}
std::optional<int64_t> OptInt(const PGresult* r, int row, int col) {
  if (PQgetisnull(r, row, col)) return std::nullopt;
  return Int(r, row, col);
}

Device ReadDevice(const PGresult* r, int row) {
  Device d;
  d.device_id = Text(r, row, 0);
  d.owner_id = Text(r, row, 1);
  d.name = Text(r, row, 2);
  d.model = Text(r, row, 3);
  d.installed_at_ns = InstalledAtFromStoredMicros(d.device_id, OptInt(r, row, 4));
  d.timezone = Text(r, row, 5);
  d.location = Text(r, row, 6);
  d.config_json = Text(r, row, 7);
  d.created_at_ns = NanosFromStoredMicros(Int(r, row, 8));
  d.updated_at_ns = NanosFromStoredMicros(Int(r, row, 9));
  return d;
}

Rule ReadRule(const PGresult* r, int row) {
  Rule rule;
  rule.id = Text(r, row, 0);
  rule.owner_id = Text(r, row, 1);
  rule.json = Text(r, row, 2);
  rule.created_at_ns = NanosFromStoredMicros(Int(r, row, 3));
  rule.updated_at_ns = NanosFromStoredMicros(Int(r, row, 4));
  return rule;
}

Alert ReadAlert(const PGresult* r, int row) {
  Alert a;
  a.id = Text(r, row, 0);
  a.rule_id = Text(r, row, 1);
  a.device_id = Text(r, row, 2);
  a.owner_id = Text(r, row, 3);
  a.state = ParseAlertState(Text(r, row, 4)).value_or(AlertState::kPending);
  a.acked = Text(r, row, 5) == "t";
  a.snoozed_until_ns = NanosFromStoredMicros(OptInt(r, row, 6));
  a.opened_at_ns = NanosFromStoredMicros(Int(r, row, 7));
  a.updated_at_ns = NanosFromStoredMicros(Int(r, row, 8));
  a.json = Text(r, row, 9);
  return a;
}

// Server notices (e.g. "terminating connection") are not for stderr; errors are
// reported through statuses.
void IgnoreNotice(void*, const char*) {}

// Whether a pooled connection, idle since its last use, is known to be dead. libpq only
// learns that the server closed a connection when it next reads from it, so PQstatus
// still says CONNECTION_OK for a connection whose backend a PostgreSQL restart (or
// pg_terminate_backend) killed meanwhile, and the first statement on it fails ("server
// closed the connection unexpectedly"). An idle connection has nothing to read: a
// readable socket means the server sent something unasked — in practice the FATAL
// "terminating connection" before it closes — or hung up. poll() without waiting costs one
// system call per acquisition, far less than a round trip; a connection flagged wrongly
// is merely reopened.
bool IdleConnectionIsDead(PGconn* conn) {
  if (PQstatus(conn) != CONNECTION_OK) return true;
  int fd = PQsocket(conn);
  if (fd < 0) return true;
  pollfd p{};
  p.fd = fd;
  p.events = POLLIN;
  return poll(&p, 1, 0) != 0;  // readable, hung up, in error (or poll failed: reopen)
}

// Connects without blocking past `deadline` (libpq's connect_timeout only bounds its
// blocking connect; the asynchronous one is bounded here). Returns the connection, in
// non-blocking mode, or an Unavailable naming the database. `deadline` is the earlier of
// the operation's and the connect timeout's.
Result<PGconn*> Connect(const std::string& url, Deadline deadline) {
  // An encrypted client key (sslkey) is opened with the URL's sslpassword or not at all:
  // without a hook of its own libpq lets OpenSSL ask for the pass phrase on the terminal
  // and wait, as the TLS listeners' keys did (found by a black-box test). libpq's default
  // hook answers sslpassword, or nothing.
  static std::once_flag key_hook;
  std::call_once(key_hook, [] { PQsetSSLKeyPassHook_OpenSSL(PQdefaultSSLKeyPassHook_OpenSSL); });
  const Deadline start = SteadyClock::now();
  PGconn* conn = PQconnectStart(url.c_str());
  if (conn == nullptr) return Status::Unavailable("postgres: cannot connect: out of memory");
  PQsetNoticeProcessor(conn, IgnoreNotice, nullptr);
  auto failed = [&](std::string reason) -> Status {
    // libpq's text may quote the connection string (a value it cannot use): not its password.
    std::string where = std::string(PQhost(conn) ? PQhost(conn) : "") + ":" +
                        (PQport(conn) ? PQport(conn) : "") + "/" + (PQdb(conn) ? PQdb(conn) : "");
    reason = RedactUrlPasswordIn(reason, url);
    while (!reason.empty() && (reason.back() == '\n' || reason.back() == ' ')) reason.pop_back();
    PQfinish(conn);
    return Status::Unavailable("postgres: cannot connect to " + where + ": " + reason);
  };
  PostgresPollingStatusType polling = PGRES_POLLING_WRITING;
  while (PQstatus(conn) != CONNECTION_BAD && polling != PGRES_POLLING_OK &&
         polling != PGRES_POLLING_FAILED) {
    const short events = polling == PGRES_POLLING_READING ? POLLIN : POLLOUT;
    if (!WaitSocket(PQsocket(conn), events, deadline)) {
      t_timed_out = true;
      return failed("timeout expired (no answer within " + Seconds(start, deadline) + ")");
    }
    polling = PQconnectPoll(conn);
  }
  if (PQstatus(conn) != CONNECTION_OK) return failed(PQerrorMessage(conn));
  if (PQsetnonblocking(conn, 1) != 0) return failed(PQerrorMessage(conn));
  return conn;
}

bool ParseAlertCursor(std::string_view cursor, int64_t* opened_us, std::string* id) {
  size_t colon = cursor.find(':');
  if (colon == std::string_view::npos) return false;
  auto [p, ec] = std::from_chars(cursor.data(), cursor.data() + colon, *opened_us);
  if (ec != std::errc() || p != cursor.data() + colon) return false;
  *id = std::string(cursor.substr(colon + 1));
  return true;
}

Result<std::string> InsertDeviceToken(PGconn* c, std::string_view device_id, int64_t now_us) {
  JOULE_ASSIGN_OR_RETURN(std::string token, GenerateToken(kDeviceTokenPrefix));
  JOULE_ASSIGN_OR_RETURN(PgResult r,
                         Exec(c,
                              "INSERT INTO device_tokens (token_hash, device_id, "
                              "created_at) VALUES ($1, $2, joule_ts($3))",
                              Params().Bytes(HashToken(token)).Text(device_id).Int(now_us)));
  return token;
}

Status DeviceExists(PGconn* c, std::string_view device_id, bool lock) {
  JOULE_ASSIGN_OR_RETURN(PgResult r,
                         Exec(c,
                              lock ? "SELECT 1 FROM devices WHERE device_id = $1 FOR UPDATE"
                                   : "SELECT 1 FROM devices WHERE device_id = $1",
                              Params().Text(device_id)));
  if (PQntuples(r.get()) == 0)
    return Status::NotFound("device not found: " + std::string(device_id));
  return Status::Ok();
}

}  // namespace

namespace {

// A decimal integer (an optional '-', digits), as the options' values must be.
bool IsDecimal(std::string_view v) {
  if (!v.empty() && v.front() == '-') v.remove_prefix(1);
  return !v.empty() && v.size() <= 9 &&
         std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// The values PQconninfoParse takes as they are and a connect refuses (found by the
// operator's black-box test, session 31: a port "notaport" or 99999, sslmode=bogus,
// connect_timeout=abc passed `joule config`, then `joule serve` exited 1). None of these
// options is a secret, so their values may be quoted.
Status CheckPostgresOption(std::string_view keyword, std::string_view value) {
  auto one_of = [&](std::initializer_list<std::string_view> allowed) -> Status {
    std::string list;
    for (std::string_view a : allowed) {
      if (value == a) return Status::Ok();
      list += (list.empty() ? "" : ", ") + std::string(a);
    }
    return Status::InvalidArgument(std::string(keyword) + " '" + std::string(value) +
                                   "' is not one of: " + list);
  };
  if (keyword == "port") {
    // A list, one per host ("5432,5433"); an empty entry is the default port.
    size_t start = 0;
    for (;;) {
      const size_t comma = value.find(',', start);
      const std::string_view port = value.substr(start, comma - start);
      int n = 0;
      if (!port.empty() &&
          (!IsDecimal(port) ||
           std::from_chars(port.data(), port.data() + port.size(), n).ec != std::errc() || n < 1 ||
           n > 65535)) {
        return Status::InvalidArgument("port '" + std::string(port) +
                                       "' is not a port number (1-65535)");
      }
      if (comma == std::string_view::npos) break;
      start = comma + 1;
    }
    return Status::Ok();
  }
  if (keyword == "sslmode") {
    return one_of({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"});
  }
  if (keyword == "gssencmode") return one_of({"disable", "prefer", "require"});
  if (keyword == "target_session_attrs") {
    return one_of({"any", "read-write", "read-only", "primary", "standby", "prefer-standby"});
  }
  if (keyword == "connect_timeout" || keyword == "keepalives" || keyword == "keepalives_idle" ||
      keyword == "keepalives_interval" || keyword == "keepalives_count" ||
      keyword == "tcp_user_timeout") {
    if (!IsDecimal(value)) {
      return Status::InvalidArgument(std::string(keyword) + " '" + std::string(value) +
                                     "' is not an integer");
    }
  }
  return Status::Ok();
}

}  // namespace

Status CheckPostgresUrl(const std::string& url) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(url.c_str(), &error);
  if (options != nullptr) {
    Status st;
    for (const PQconninfoOption* o = options; o->keyword != nullptr && st.ok(); ++o) {
      if (o->val != nullptr) st = CheckPostgresOption(o->keyword, o->val);
    }
    PQconninfoFree(options);
    return st;
  }
  std::string message = error != nullptr ? error : "out of memory";
  PQfreemem(error);
  while (!message.empty() && message.back() == '\n') message.pop_back();
  return Status::InvalidArgument(RedactUrlPasswordIn(message, url));
}

PostgresMetadataStore::PostgresMetadataStore(const MetadataStoreOptions& options,
                                             const Clock* clock)
    : url_(options.url),
      clock_(clock),
      pool_size_(static_cast<size_t>(options.pool_size < 1 ? 1 : options.pool_size)),
      lookup_timeout_(options.lookup_timeout),
      query_timeout_(options.query_timeout),
      statement_timeout_(
          std::max({kMigrateTimeout, options.query_timeout, options.lookup_timeout})) {
  // The URL's connect_timeout, as libpq reads it (0 or unset: none; 1 counts as 2).
  char* error = nullptr;
  if (PQconninfoOption* options = PQconninfoParse(url_.c_str(), &error)) {
    for (const PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
      if (std::string_view(o->keyword) != "connect_timeout" || o->val == nullptr) continue;
      int seconds = 0;
      std::from_chars(o->val, o->val + strlen(o->val), seconds);
      connect_timeout_seconds_ = seconds <= 0 ? 0 : std::max(seconds, 2);
    }
    PQconninfoFree(options);
  }
  PQfreemem(error);
}

Result<std::unique_ptr<PostgresMetadataStore>> PostgresMetadataStore::Open(
    const MetadataStoreOptions& options) {
  const std::string& url = options.url;
  if (url.empty()) return Status::InvalidArgument("postgres metadata store: empty metadata.url");
  if (Status st = CheckPostgresUrl(url); !st.ok()) {
    return Status::InvalidArgument("postgres metadata store: metadata.url: " + st.message());
  }
  if (options.lookup_timeout.count() < 1 || options.query_timeout.count() < 1) {
    return Status::InvalidArgument(
        "postgres metadata store: metadata.lookup_timeout and metadata.query_timeout must be "
        "at least 1 ms");
  }
  std::unique_ptr<PostgresMetadataStore> store(
      new PostgresMetadataStore(options, options.clock ? options.clock : SystemClock::Default()));
  JOULE_RETURN_IF_ERROR(store->Migrate());
  store->wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (store->wake_fd_ < 0) return Status::Internal("eventfd failed");
  store->listener_ = std::thread([s = store.get()] { s->ListenLoop(); });
  store->prober_ = std::thread([s = store.get()] { s->ProbeLoop(); });
  store->started_.store(true);
  std::unique_lock<std::mutex> lock(store->listener_mu_);
  store->listener_cv_.wait_for(lock, std::chrono::seconds(5),
                               [&] { return store->listener_tried_; });
  return store;
}

PostgresMetadataStore::~PostgresMetadataStore() {
  {
    std::lock_guard<std::mutex> lock(listener_mu_);
    stop_.store(true);
  }
  if (wake_fd_ >= 0) {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = write(wake_fd_, &one, sizeof(one));
  }
  listener_cv_.notify_all();
  if (listener_.joinable()) listener_.join();
  if (prober_.joinable()) prober_.join();
  if (wake_fd_ >= 0) close(wake_fd_);
  std::lock_guard<std::mutex> lock(pool_mu_);
  for (PGconn* c : idle_) PQfinish(c);
}

int64_t PostgresMetadataStore::NowMicros() const { return clock_->NowNanos() / 1000; }

Result<PGconn*> PostgresMetadataStore::OpenConnection() {
  Deadline deadline = t_deadline;
  if (connect_timeout_seconds_ > 0) {
    deadline = std::min(deadline, DeadlineIn(std::chrono::seconds(connect_timeout_seconds_)));
  }
  JOULE_ASSIGN_OR_RETURN(PGconn * conn, Connect(url_, deadline));
  // A server-side bound too, so that a statement the client gave up on (its connection
  // closed) does not run on — a backend waiting for a lock only notices the closed
  // connection once it has the lock. Kept when the role, database or URL set one. The
  // longest client bound (the migrations'), so that it never cuts a statement still awaited.
  Result<PgResult> set = Exec(conn,
                              "SELECT set_config('statement_timeout', $1, false) "
                              "WHERE current_setting('statement_timeout') = '0'",
                              Params().Text(std::to_string(statement_timeout_.count()) + "ms"));
  if (!set.ok()) {
    PQfinish(conn);
    return set.status();
  }
  return conn;
}

Result<PGconn*> PostgresMetadataStore::Acquire() {
  PGconn* conn = nullptr;
  {
    std::unique_lock<std::mutex> lock(pool_mu_);
    auto free = [&] { return !idle_.empty() || open_ < pool_size_; };
    if (t_deadline == Deadline::max()) {
      pool_cv_.wait(lock, free);
    } else if (!pool_cv_.wait_until(lock, t_deadline, free)) {
      t_timed_out = true;
      return Status::Unavailable(
          "postgres: no free connection in the pool in time (the database does not answer)");
    }
    if (!idle_.empty()) {
      conn = idle_.back();
      idle_.pop_back();
      if (!IdleConnectionIsDead(conn)) return conn;
      std::lock_guard<std::mutex> pids(pids_mu_);
      own_pids_.erase(PQbackendPID(conn));
      PQfinish(conn);
    } else {
      ++open_;
    }
  }
  Result<PGconn*> opened = OpenConnection();
  if (!opened.ok()) {
    {
      std::lock_guard<std::mutex> lock(pool_mu_);
      --open_;
    }
    pool_cv_.notify_one();
    return opened.status();
  }
  std::lock_guard<std::mutex> lock(pids_mu_);
  own_pids_.insert(PQbackendPID(*opened));
  return *opened;
}

void PostgresMetadataStore::Release(PGconn* conn, bool discard) {
  // A connection left inside a transaction (an error path that could not roll back) is
  // not reusable as is either.
  if (discard || PQstatus(conn) != CONNECTION_OK || PQtransactionStatus(conn) != PQTRANS_IDLE) {
    {
      std::lock_guard<std::mutex> lock(pids_mu_);
      own_pids_.erase(PQbackendPID(conn));
    }
    PQfinish(conn);
    std::lock_guard<std::mutex> lock(pool_mu_);
    --open_;
  } else {
    std::lock_guard<std::mutex> lock(pool_mu_);
    idle_.push_back(conn);
  }
  pool_cv_.notify_one();
}

void PostgresMetadataStore::NotAnswering(const Status& why) {
  // At start (the migrations) Open fails with the error instead.
  if (!started_.load()) return;
  if (!answering_.exchange(false)) return;
  logging::Warn(
      "metadata store does not answer: until it does, what the metadata cache does not hold "
      "is refused as unavailable (503) at once",
      {{"backend", "postgres"}, {"error", why.ToString()}});
  listener_cv_.notify_all();
}

std::chrono::milliseconds PostgresMetadataStore::TimeoutOf(Bound bound) const {
  switch (bound) {
    case Bound::kLookup:
      return lookup_timeout_;
    case Bound::kQuery:
      return query_timeout_;
    case Bound::kMigrate:
      break;
  }
  return kMigrateTimeout;
}

namespace {

// An operation's error once it ran out of time: after how long, and the key that sets it
// (an operator on a slow link learns what to raise).
Status GaveUp(const Status& why, std::chrono::milliseconds timeout, std::string_view key) {
  return Status::Unavailable(why.message() + " (gave up after " + std::to_string(timeout.count()) +
                             " ms: " + std::string(key) + ")");
}

}  // namespace

template <typename T, typename Fn>
Result<T> PostgresMetadataStore::WithConnection(bool retry, Fn&& fn, const bool* commit_sent,
                                                Bound bound) {
  if (!answering_.load()) {
    return Status::Unavailable(
        "postgres: the database does not answer (an operation ran out of time; retried every "
        "second)");
  }
  const std::chrono::milliseconds timeout = TimeoutOf(bound);
  const std::string_view key = bound == Bound::kLookup  ? "metadata.lookup_timeout"
                               : bound == Bound::kQuery ? "metadata.query_timeout"
                                                        : "the migrations' bound";
  const Deadline until = DeadlineIn(timeout);
  OperationDeadline deadline(until);
  // Named only when this bound ran out: a connect may give up earlier, at the URL's
  // connect_timeout, and says so itself.
  auto named = [&](const Status& why) {
    return SteadyClock::now() >= until ? GaveUp(why, timeout, key) : why;
  };
  for (int attempt = 0;; ++attempt) {
    Result<PGconn*> acquired = Acquire();
    if (!acquired.ok()) {
      if (!t_timed_out) return acquired.status();
      Status gave_up = named(acquired.status());
      NotAnswering(gave_up);
      return gave_up;
    }
    PGconn* conn = *acquired;
    Result<T> result = fn(conn);
    const bool broken = t_timed_out || PQstatus(conn) != CONNECTION_OK;
    Release(conn, broken);
    if (t_timed_out) {
      if (!result.ok()) result = named(result.status());
      NotAnswering(result.status());
      return result;
    }
    const bool repeatable = retry || (commit_sent != nullptr && !*commit_sent);
    if (result.ok() || !broken || !repeatable || attempt >= 1) return result;
  }
}

Status PostgresMetadataStore::Probe() {
  OperationDeadline deadline(DeadlineIn(lookup_timeout_));
  JOULE_ASSIGN_OR_RETURN(PGconn * conn, OpenConnection());
  // What the request path reads: a token (of either kind) and a device. A table lock that
  // holds these lookups holds this one too.
  Result<PgResult> r = Exec(conn,
                            "SELECT (SELECT count(*) FROM device_tokens WHERE token_hash = $1), "
                            "(SELECT count(*) FROM owner_keys WHERE token_hash = $1), "
                            "(SELECT count(*) FROM devices WHERE device_id = '')",
                            Params().Bytes(std::string(32, '\0')));
  PQfinish(conn);
  return r.status();
}

void PostgresMetadataStore::ProbeLoop() {
  SetUpThread("joule-pg-probe", 0);
  t_abort_fd = wake_fd_;
  while (!stop_.load()) {
    {
      std::unique_lock<std::mutex> lock(listener_mu_);
      listener_cv_.wait_for(lock, std::chrono::seconds(1),
                            [&] { return stop_.load() || !answering_.load(); });
    }
    if (stop_.load()) break;
    if (answering_.load()) continue;
    if (Probe().ok()) {
      answering_.store(true);
      logging::Info("metadata store answers again", {{"backend", "postgres"}});
      // What changed meanwhile may have been missed by a stalled listener.
      Publish({MetadataChange::Kind::kAll, ""});
    } else {
      std::unique_lock<std::mutex> lock(listener_mu_);
      listener_cv_.wait_for(lock, std::chrono::seconds(1), [&] { return stop_.load(); });
    }
  }
}

// ---------------------------------------------------------------- migrations

Status PostgresMetadataStore::Migrate() {
  Result<bool> r = WithConnection<bool>(
      true,
      [&](PGconn* c) -> Result<bool> {
        Transaction tx(c);
        JOULE_RETURN_IF_ERROR(tx.Begin());
        JOULE_ASSIGN_OR_RETURN(PgResult lock, Exec(c, "SELECT pg_advisory_xact_lock($1::bigint)",
                                                   Params().Text(kMigrationLockKey)));
        JOULE_RETURN_IF_ERROR(ExecScript(c,
                                         "CREATE TABLE IF NOT EXISTS schema_migrations ("
                                         "version integer PRIMARY KEY, "
                                         "applied_at timestamptz NOT NULL DEFAULT now())"));
        JOULE_ASSIGN_OR_RETURN(PgResult q,
                               Exec(c, "SELECT coalesce(max(version), 0) FROM schema_migrations"));
        int current = static_cast<int>(Int(q.get(), 0, 0));
        if (current > kLatestVersion) {
          return Status::Internal("metadata database is at schema version " +
                                  std::to_string(current) + ", newer than this Joule knows (" +
                                  std::to_string(kLatestVersion) + "); upgrade Joule");
        }
        for (int v = current + 1; v <= kLatestVersion; ++v) {
          JOULE_RETURN_IF_ERROR(ExecScript(c, kMigrations[v - 1]));
          JOULE_ASSIGN_OR_RETURN(
              PgResult ins,
              Exec(c,
                   "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, joule_ts($2))",
                   Params().Int(v).Int(NowMicros())));
        }
        JOULE_RETURN_IF_ERROR(tx.Commit());
        return true;
      },
      nullptr, Bound::kMigrate);
  return r.status();
}

Result<int> PostgresMetadataStore::SchemaVersion() {
  return WithConnection<int>(true, [&](PGconn* c) -> Result<int> {
    JOULE_ASSIGN_OR_RETURN(PgResult q,
                           Exec(c, "SELECT coalesce(max(version), 0) FROM schema_migrations"));
    return static_cast<int>(Int(q.get(), 0, 0));
  });
}

// ---------------------------------------------------------------- devices

Result<Device> PostgresMetadataStore::CreateDevice(const Device& device, std::string* token) {
  // Not retried once the COMMIT was sent: a retry after a commit whose reply was lost
  // would report AlreadyExists. A connection that broke before (on BEGIN or a statement
  // of the transaction) committed nothing, so that case is retried on a fresh one.
  bool commit_sent = false;
  auto create = [&](PGconn* c) -> Result<Device> {
    commit_sent = false;
    Transaction tx(c);
    JOULE_RETURN_IF_ERROR(tx.Begin());
    // An id deleted from another owner stays theirs (its history is kept under it); one
    // deleted by the same owner is registered again.
    JOULE_ASSIGN_OR_RETURN(
        PgResult deleted,
        Exec(c, "SELECT owner_id FROM deleted_devices WHERE device_id = $1 FOR UPDATE",
             Params().Text(device.device_id)));
    if (PQntuples(deleted.get()) > 0) {
      if (Text(deleted.get(), 0, 0) != device.owner_id) {
        return DeletedDeviceIdTaken(device.device_id);
      }
      JOULE_RETURN_IF_ERROR(Exec(c, "DELETE FROM deleted_devices WHERE device_id = $1",
                                 Params().Text(device.device_id))
                                .status());
    }
    int64_t now = NowMicros();
    Result<PgResult> ins =
        Exec(c,
             "INSERT INTO devices (device_id, owner_id, name, model, installed_at, timezone, "
             "location, config, created_at, updated_at) VALUES ($1, $2, $3, $4, joule_ts($5), "
             "$6, $7, $8::jsonb, joule_ts($9), joule_ts($9)) RETURNING " JOULE_DEVICE_COLUMNS,
             Params()
                 .Text(device.device_id)
                 .Text(device.owner_id)
                 .TextOrNull(device.name)
                 .TextOrNull(device.model)
                 .OptInt(StoredMicrosFromNanos(device.installed_at_ns))
                 .Text(device.timezone.empty() ? std::string_view("UTC") : device.timezone)
                 .TextOrNull(device.location)
                 .TextOrNull(device.config_json)
                 .Int(now));
    if (ins.status().code() == StatusCode::kAlreadyExists) {
      return Status::AlreadyExists("device already exists: " + device.device_id);
    }
    JOULE_RETURN_IF_ERROR(ins.status());
    Device d = ReadDevice(ins->get(), 0);
    if (token != nullptr) {
      JOULE_ASSIGN_OR_RETURN(*token, InsertDeviceToken(c, device.device_id, now));
    }
    commit_sent = true;
    JOULE_RETURN_IF_ERROR(tx.Commit());
    return d;
  };
  Result<Device> created = WithConnection<Device>(false, create, &commit_sent);
  if (created.ok()) Publish({MetadataChange::Kind::kDevice, device.device_id});
  return created;
}

Result<Device> PostgresMetadataStore::GetDevice(std::string_view device_id) {
  return Lookup<Device>([&](PGconn* c) -> Result<Device> {
    JOULE_ASSIGN_OR_RETURN(
        PgResult r, Exec(c, "SELECT " JOULE_DEVICE_COLUMNS " FROM devices WHERE device_id = $1",
                         Params().Text(device_id)));
    if (PQntuples(r.get()) == 0) {
      return Status::NotFound("device not found: " + std::string(device_id));
    }
    return ReadDevice(r.get(), 0);
  });
}

namespace {

// A text[] literal of `values`: each element quoted, `"` and `\` escaped (PostgreSQL's
// array input syntax), so any text is one element.
std::string TextArrayLiteral(std::span<const std::string_view> values) {
  std::string out = "{";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i) out += ',';
    out += '"';
    for (const char ch : values[i]) {
      if (ch == '"' || ch == '\\') out += '\\';
      out += ch;
    }
    out += '"';
  }
  out += '}';
  return out;
}

}  // namespace

Result<std::vector<Device>> PostgresMetadataStore::GetDevices(
    std::span<const std::string_view> device_ids) {
  constexpr size_t kIdsPerQuery = 10'000;  // limits.max_events_per_request's default
  std::vector<Device> found;
  for (size_t from = 0; from < device_ids.size(); from += kIdsPerQuery) {
    const std::string ids = TextArrayLiteral(
        device_ids.subspan(from, std::min(kIdsPerQuery, device_ids.size() - from)));
    JOULE_RETURN_IF_ERROR(Lookup<bool>([&](PGconn* c) -> Result<bool> {
                            JOULE_ASSIGN_OR_RETURN(
                                PgResult r, Exec(c,
                                                 "SELECT " JOULE_DEVICE_COLUMNS
                                                 " FROM devices WHERE device_id = ANY($1::text[])",
                                                 Params().Text(ids)));
                            const int n = PQntuples(r.get());
                            for (int i = 0; i < n; ++i) found.push_back(ReadDevice(r.get(), i));
                            return true;
                          }).status());
  }
  return found;
}

Result<std::optional<std::string>> PostgresMetadataStore::DeletedDeviceOwner(
    std::string_view device_id) {
  return WithConnection<std::optional<std::string>>(
      true, [&](PGconn* c) -> Result<std::optional<std::string>> {
        JOULE_ASSIGN_OR_RETURN(PgResult r,
                               Exec(c, "SELECT owner_id FROM deleted_devices WHERE device_id = $1",
                                    Params().Text(device_id)));
        if (PQntuples(r.get()) == 0) return std::optional<std::string>();
        return std::optional<std::string>(Text(r.get(), 0, 0));
      });
}

Result<DevicePage> PostgresMetadataStore::ListDevices(const ListDevicesOptions& options) {
  size_t limit = options.limit == 0 ? 1 : options.limit;
  return WithConnection<DevicePage>(true, [&](PGconn* c) -> Result<DevicePage> {
    // COLLATE "C": byte order, the same as SQLite's, whatever the database's locale.
    JOULE_ASSIGN_OR_RETURN(
        PgResult r,
        Exec(c,
             "SELECT " JOULE_DEVICE_COLUMNS
             " FROM devices WHERE ($1::text IS NULL OR owner_id = $1) "
             "AND ($4::text IS NULL OR model = $4) "
             "AND device_id COLLATE \"C\" > $2 ORDER BY device_id COLLATE \"C\" LIMIT $3",
             Params()
                 .OptText(options.owner_id)
                 .Text(options.after)
                 .Int(static_cast<int64_t>(limit) + 1)
                 .OptText(options.model)));
    DevicePage page;
    int n = PQntuples(r.get());
    for (int i = 0; i < n; ++i) {
      if (page.devices.size() == limit) {
        page.next_cursor = page.devices.back().device_id;
        break;
      }
      page.devices.push_back(ReadDevice(r.get(), i));
    }
    return page;
  });
}

Result<Device> PostgresMetadataStore::UpdateDevice(std::string_view device_id,
                                                   const DeviceUpdate& update) {
  Result<Device> updated = WithConnection<Device>(true, [&](PGconn* c) -> Result<Device> {
    Transaction tx(c);
    JOULE_RETURN_IF_ERROR(tx.Begin());
    JOULE_ASSIGN_OR_RETURN(
        PgResult cur,
        Exec(c, "SELECT " JOULE_DEVICE_COLUMNS " FROM devices WHERE device_id = $1 FOR UPDATE",
             Params().Text(device_id)));
    if (PQntuples(cur.get()) == 0) {
      return Status::NotFound("device not found: " + std::string(device_id));
    }
    Device d = ReadDevice(cur.get(), 0);
    if (update.owner_id) d.owner_id = *update.owner_id;
    if (update.name) d.name = *update.name;
    if (update.model) d.model = *update.model;
    if (update.location) d.location = *update.location;
    if (update.timezone) d.timezone = update.timezone->empty() ? "UTC" : *update.timezone;
    if (update.installed_at_ns) d.installed_at_ns = *update.installed_at_ns;
    if (update.config_json) d.config_json = *update.config_json;
    JOULE_ASSIGN_OR_RETURN(
        PgResult up,
        Exec(c,
             // installed_at only when the update sets it: a stored value read as absent
             // (out of range, metadata_time.h) stays as it is.
             "UPDATE devices SET owner_id = $2, name = $3, model = $4, installed_at = CASE "
             "WHEN $10 THEN joule_ts($5) ELSE installed_at END, timezone = $6, location = $7, "
             "config = $8::jsonb, updated_at = joule_ts($9) WHERE device_id = $1 "
             "RETURNING " JOULE_DEVICE_COLUMNS,
             Params()
                 .Text(device_id)
                 .Text(d.owner_id)
                 .TextOrNull(d.name)
                 .TextOrNull(d.model)
                 .OptInt(StoredMicrosFromNanos(d.installed_at_ns))
                 .Text(d.timezone)
                 .TextOrNull(d.location)
                 .TextOrNull(d.config_json)
                 .Int(NowMicros())
                 .Bool(update.installed_at_ns.has_value())));
    Device out = ReadDevice(up.get(), 0);
    JOULE_RETURN_IF_ERROR(tx.Commit());
    return out;
  });
  if (updated.ok()) {
    std::string id(device_id);
    Publish({MetadataChange::Kind::kDevice, id});
    if (update.owner_id) Publish({MetadataChange::Kind::kDeviceTokens, id});
  }
  return updated;
}

Status PostgresMetadataStore::DeleteDevice(std::string_view device_id) {
  Result<bool> r = WithConnection<bool>(true, [&](PGconn* c) -> Result<bool> {
    JOULE_ASSIGN_OR_RETURN(PgResult del, Exec(c, "DELETE FROM devices WHERE device_id = $1",
                                              Params().Text(device_id)));
    return std::string_view(PQcmdTuples(del.get())) != "0";
  });
  JOULE_RETURN_IF_ERROR(r.status());
  if (!*r) return Status::NotFound("device not found: " + std::string(device_id));
  std::string id(device_id);
  Publish({MetadataChange::Kind::kDevice, id});
  Publish({MetadataChange::Kind::kDeviceTokens, id});
  return Status::Ok();
}

// ---------------------------------------------------------------- credentials

Result<std::string> PostgresMetadataStore::IssueDeviceToken(std::string_view device_id) {
  return WithConnection<std::string>(true, [&](PGconn* c) -> Result<std::string> {
    Result<std::string> token = InsertDeviceToken(c, device_id, NowMicros());
    if (token.status().code() == StatusCode::kNotFound) {  // foreign key: no such device
      return Status::NotFound("device not found: " + std::string(device_id));
    }
    return token;
  });
}

Result<std::string> PostgresMetadataStore::RotateDeviceToken(std::string_view device_id) {
  Result<std::string> token =
      WithConnection<std::string>(true, [&](PGconn* c) -> Result<std::string> {
        Transaction tx(c);
        JOULE_RETURN_IF_ERROR(tx.Begin());
        JOULE_RETURN_IF_ERROR(DeviceExists(c, device_id, /*lock=*/true));
        JOULE_ASSIGN_OR_RETURN(
            PgResult del,
            Exec(c, "DELETE FROM device_tokens WHERE device_id = $1", Params().Text(device_id)));
        JOULE_ASSIGN_OR_RETURN(std::string t, InsertDeviceToken(c, device_id, NowMicros()));
        JOULE_RETURN_IF_ERROR(tx.Commit());
        return t;
      });
  if (token.ok()) Publish({MetadataChange::Kind::kDeviceTokens, std::string(device_id)});
  return token;
}

Status PostgresMetadataStore::RevokeDeviceTokens(std::string_view device_id) {
  Result<bool> r = WithConnection<bool>(true, [&](PGconn* c) -> Result<bool> {
    Transaction tx(c);
    JOULE_RETURN_IF_ERROR(tx.Begin());
    JOULE_RETURN_IF_ERROR(DeviceExists(c, device_id, /*lock=*/true));
    JOULE_ASSIGN_OR_RETURN(PgResult del, Exec(c, "DELETE FROM device_tokens WHERE device_id = $1",
                                              Params().Text(device_id)));
    JOULE_RETURN_IF_ERROR(tx.Commit());
    return true;
  });
  JOULE_RETURN_IF_ERROR(r.status());
  Publish({MetadataChange::Kind::kDeviceTokens, std::string(device_id)});
  return Status::Ok();
}

Result<OwnerKey> PostgresMetadataStore::CreateOwnerKey(std::string_view owner_id) {
  OwnerKey key;
  key.owner_id = owner_id;
  JOULE_ASSIGN_OR_RETURN(std::string hex, RandomHex(8));
  key.key_id = "key_" + hex;
  JOULE_ASSIGN_OR_RETURN(key.key, GenerateToken(kOwnerKeyPrefix));
  int64_t now = NowMicros();
  key.created_at_ns = now * 1000;
  Result<bool> r = WithConnection<bool>(true, [&](PGconn* c) -> Result<bool> {
    JOULE_ASSIGN_OR_RETURN(
        PgResult ins,
        Exec(c,
             "INSERT INTO owner_keys (key_id, token_hash, owner_id, created_at) "
             "VALUES ($1, $2, $3, joule_ts($4)) ON CONFLICT (key_id) DO NOTHING",
             Params().Text(key.key_id).Bytes(HashToken(key.key)).Text(owner_id).Int(now)));
    return true;
  });
  JOULE_RETURN_IF_ERROR(r.status());
  return key;
}

Status PostgresMetadataStore::RevokeOwnerKey(std::string_view key_id) {
  Result<std::string> owner =
      WithConnection<std::string>(true, [&](PGconn* c) -> Result<std::string> {
        JOULE_ASSIGN_OR_RETURN(
            PgResult del, Exec(c, "DELETE FROM owner_keys WHERE key_id = $1 RETURNING owner_id",
                               Params().Text(key_id)));
        if (PQntuples(del.get()) == 0) {
          return Status::NotFound("owner key not found: " + std::string(key_id));
        }
        return Text(del.get(), 0, 0);
      });
  JOULE_RETURN_IF_ERROR(owner.status());
  Publish({MetadataChange::Kind::kOwnerKeys, *owner});
  return Status::Ok();
}

Result<std::vector<OwnerKey>> PostgresMetadataStore::ListOwnerKeys(std::string_view owner_id) {
  return WithConnection<std::vector<OwnerKey>>(
      true, [&](PGconn* c) -> Result<std::vector<OwnerKey>> {
        JOULE_ASSIGN_OR_RETURN(PgResult q,
                               Exec(c,
                                    "SELECT key_id, owner_id, joule_us(created_at) FROM owner_keys "
                                    "WHERE owner_id = $1 ORDER BY created_at, key_id COLLATE \"C\"",
                                    Params().Text(owner_id)));
        std::vector<OwnerKey> keys;
        for (int i = 0; i < PQntuples(q.get()); ++i) {
          OwnerKey k;
          k.key_id = Text(q.get(), i, 0);
          k.owner_id = Text(q.get(), i, 1);
          k.created_at_ns = NanosFromStoredMicros(Int(q.get(), i, 2));
          keys.push_back(std::move(k));
        }
        return keys;
      });
}

Result<Principal> PostgresMetadataStore::AuthenticateToken(std::string_view token) {
  if (!TokenLooksValid(token)) return Status::Unauthenticated("malformed token");
  std::string hash = HashToken(token);
  bool device = token.starts_with(kDeviceTokenPrefix);
  return Lookup<Principal>([&](PGconn* c) -> Result<Principal> {
    JOULE_ASSIGN_OR_RETURN(
        PgResult q,
        Exec(c,
             device ? "SELECT encode(t.token_hash, 'hex'), t.device_id, d.owner_id "
                      "FROM device_tokens t JOIN devices d ON d.device_id = t.device_id "
                      "WHERE t.token_hash = $1"
                    : "SELECT encode(token_hash, 'hex'), owner_id, key_id FROM owner_keys "
                      "WHERE token_hash = $1",
             Params().Bytes(hash)));
    if (PQntuples(q.get()) == 0) return Status::Unauthenticated("unknown token");
    static constexpr char kHex[] = "0123456789abcdef";
    std::string hex;
    for (unsigned char ch : hash) {
      hex += kHex[ch >> 4];
      hex += kHex[ch & 15];
    }
    if (!HashesEqual(Text(q.get(), 0, 0), hex)) return Status::Unauthenticated("unknown token");
    Principal p;
    if (device) {
      p.kind = PrincipalKind::kDevice;
      p.device_id = Text(q.get(), 0, 1);
      p.owner_id = Text(q.get(), 0, 2);
    } else {
      p.kind = PrincipalKind::kOwner;
      p.owner_id = Text(q.get(), 0, 1);
      p.key_id = Text(q.get(), 0, 2);
    }
    return p;
  });
}

// ---------------------------------------------------------------- rules

Result<Rule> PostgresMetadataStore::CreateRule(const Rule& rule) {
  Result<Rule> created = WithConnection<Rule>(false, [&](PGconn* c) -> Result<Rule> {
    Result<PgResult> ins =
        Exec(c,
             "INSERT INTO rules (rule_id, owner_id, body, created_at, "
             "updated_at) VALUES ($1, $2, $3::json, joule_ts($4), joule_ts($4)) "
             "RETURNING " JOULE_RULE_COLUMNS,
             Params().Text(rule.id).Text(rule.owner_id).Text(rule.json).Int(NowMicros()));
    if (ins.status().code() == StatusCode::kAlreadyExists) {
      return Status::AlreadyExists("rule already exists: " + rule.id);
    }
    JOULE_RETURN_IF_ERROR(ins.status());
    return ReadRule(ins->get(), 0);
  });
  if (created.ok()) Publish({MetadataChange::Kind::kRule, rule.id});
  return created;
}

Result<Rule> PostgresMetadataStore::GetRule(std::string_view id) {
  return WithConnection<Rule>(true, [&](PGconn* c) -> Result<Rule> {
    JOULE_ASSIGN_OR_RETURN(
        PgResult q,
        Exec(c, "SELECT " JOULE_RULE_COLUMNS " FROM rules WHERE rule_id = $1", Params().Text(id)));
    if (PQntuples(q.get()) == 0) return Status::NotFound("rule not found: " + std::string(id));
    return ReadRule(q.get(), 0);
  });
}

Result<std::vector<Rule>> PostgresMetadataStore::ListRules(std::optional<std::string> owner_id) {
  return WithConnection<std::vector<Rule>>(true, [&](PGconn* c) -> Result<std::vector<Rule>> {
    JOULE_ASSIGN_OR_RETURN(PgResult q, Exec(c,
                                            "SELECT " JOULE_RULE_COLUMNS
                                            " FROM rules WHERE ($1::text IS NULL OR owner_id = $1) "
                                            "ORDER BY rule_id COLLATE \"C\"",
                                            Params().OptText(owner_id)));
    std::vector<Rule> rules;
    for (int i = 0; i < PQntuples(q.get()); ++i) rules.push_back(ReadRule(q.get(), i));
    return rules;
  });
}

Result<Rule> PostgresMetadataStore::ReplaceRule(const Rule& rule) {
  Result<Rule> replaced = WithConnection<Rule>(true, [&](PGconn* c) -> Result<Rule> {
    JOULE_ASSIGN_OR_RETURN(
        PgResult up,
        Exec(c,
             "UPDATE rules SET owner_id = $2, body = $3::json, updated_at = "
             "joule_ts($4) WHERE rule_id = $1 RETURNING " JOULE_RULE_COLUMNS,
             Params().Text(rule.id).Text(rule.owner_id).Text(rule.json).Int(NowMicros())));
    if (PQntuples(up.get()) == 0) return Status::NotFound("rule not found: " + rule.id);
    return ReadRule(up.get(), 0);
  });
  if (replaced.ok()) Publish({MetadataChange::Kind::kRule, rule.id});
  return replaced;
}

Status PostgresMetadataStore::DeleteRule(std::string_view id) {
  Result<bool> r = WithConnection<bool>(true, [&](PGconn* c) -> Result<bool> {
    JOULE_ASSIGN_OR_RETURN(PgResult del,
                           Exec(c, "DELETE FROM rules WHERE rule_id = $1", Params().Text(id)));
    return std::string_view(PQcmdTuples(del.get())) != "0";
  });
  JOULE_RETURN_IF_ERROR(r.status());
  if (!*r) return Status::NotFound("rule not found: " + std::string(id));
  Publish({MetadataChange::Kind::kRule, std::string(id)});
  return Status::Ok();
}

// ---------------------------------------------------------------- alerts

Result<bool> PostgresMetadataStore::UpsertAlert(const Alert& alert) {
  return WithConnection<bool>(true, [&](PGconn* c) -> Result<bool> {
    JOULE_ASSIGN_OR_RETURN(
        PgResult up,
        Exec(c,
             "INSERT INTO alerts (alert_id, rule_id, device_id, owner_id, state, acked, "
             "snoozed_until, opened_at, updated_at, body) VALUES ($1, $2, $3, $4, $5, $6, "
             "joule_ts($7), joule_ts($8), joule_ts($9), $10::json) "
             "ON CONFLICT (alert_id) DO UPDATE SET rule_id = EXCLUDED.rule_id, "
             "device_id = EXCLUDED.device_id, owner_id = EXCLUDED.owner_id, "
             "state = EXCLUDED.state, updated_at = EXCLUDED.updated_at, body = EXCLUDED.body "
             "WHERE EXCLUDED.updated_at >= alerts.updated_at",
             Params()
                 .Text(alert.id)
                 .Text(alert.rule_id)
                 .Text(alert.device_id)
                 .Text(alert.owner_id)
                 .Text(AlertStateName(alert.state))
                 .Bool(alert.acked)
                 .OptInt(StoredMicrosFromNanos(alert.snoozed_until_ns))
                 .Int(alert.opened_at_ns / 1000)
                 .Int(alert.updated_at_ns / 1000)
                 .Text(alert.json)));
    return std::string_view(PQcmdTuples(up.get())) != "0";
  });
}

Result<Alert> PostgresMetadataStore::GetAlert(std::string_view id) {
  return WithConnection<Alert>(true, [&](PGconn* c) -> Result<Alert> {
    JOULE_ASSIGN_OR_RETURN(PgResult q,
                           Exec(c, "SELECT " JOULE_ALERT_COLUMNS " FROM alerts WHERE alert_id = $1",
                                Params().Text(id)));
    if (PQntuples(q.get()) == 0) return Status::NotFound("alert not found: " + std::string(id));
    return ReadAlert(q.get(), 0);
  });
}

Result<AlertPage> PostgresMetadataStore::ListAlerts(const AlertFilter& filter) {
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
  return WithConnection<AlertPage>(true, [&](PGconn* c) -> Result<AlertPage> {
    JOULE_ASSIGN_OR_RETURN(
        PgResult q,
        Exec(c,
             "SELECT " JOULE_ALERT_COLUMNS
             " FROM alerts WHERE ($1::text IS NULL OR device_id = $1) "
             "AND ($2::text IS NULL OR owner_id = $2) AND ($3::text IS NULL OR rule_id = $3) "
             "AND ($4::text IS NULL OR state = $4) "
             "AND ($5::bigint IS NULL OR opened_at >= joule_ts($5)) "
             "AND ($6::bigint IS NULL OR opened_at < joule_ts($6)) "
             "AND ($7::bigint IS NULL OR opened_at < joule_ts($7) OR "
             "(opened_at = joule_ts($7) AND alert_id COLLATE \"C\" < $8::text)) "
             "AND ($10::bigint IS NULL OR updated_at >= joule_ts($10)) "
             "ORDER BY opened_at DESC, alert_id COLLATE \"C\" DESC LIMIT $9",
             Params()
                 .OptText(filter.device_id)
                 .OptText(filter.owner_id)
                 .OptText(filter.rule_id)
                 .OptText(state)
                 .OptInt(StoredMicrosFromNanos(filter.from_ns))
                 .OptInt(StoredMicrosFromNanos(filter.to_ns))
                 .OptInt(cursor_opened)
                 .OptText(cursor_id)
                 .Int(static_cast<int64_t>(limit) + 1)
                 .OptInt(StoredMicrosFromNanos(filter.updated_since_ns))));
    AlertPage page;
    for (int i = 0; i < PQntuples(q.get()); ++i) {
      if (page.alerts.size() == limit) {
        const Alert& last = page.alerts.back();
        page.next_cursor = std::to_string(last.opened_at_ns / 1000) + ":" + last.id;
        break;
      }
      page.alerts.push_back(ReadAlert(q.get(), i));
    }
    return page;
  });
}

Result<Alert> PostgresMetadataStore::SetAlertAcked(std::string_view id, bool acked) {
  return WithConnection<Alert>(true, [&](PGconn* c) -> Result<Alert> {
    JOULE_ASSIGN_OR_RETURN(PgResult up, Exec(c,
                                             "UPDATE alerts SET acked = $2 WHERE alert_id = $1 "
                                             "RETURNING " JOULE_ALERT_COLUMNS,
                                             Params().Text(id).Bool(acked)));
    if (PQntuples(up.get()) == 0) return Status::NotFound("alert not found: " + std::string(id));
    return ReadAlert(up.get(), 0);
  });
}

Result<Alert> PostgresMetadataStore::SnoozeAlert(std::string_view id,
                                                 std::optional<int64_t> until_ns) {
  return WithConnection<Alert>(true, [&](PGconn* c) -> Result<Alert> {
    JOULE_ASSIGN_OR_RETURN(
        PgResult up, Exec(c,
                          "UPDATE alerts SET snoozed_until = joule_ts($2) WHERE alert_id = $1 "
                          "RETURNING " JOULE_ALERT_COLUMNS,
                          Params().Text(id).OptInt(StoredMicrosFromNanos(until_ns))));
    if (PQntuples(up.get()) == 0) return Status::NotFound("alert not found: " + std::string(id));
    return ReadAlert(up.get(), 0);
  });
}

// ---------------------------------------------------------------- listener

void PostgresMetadataStore::ListenLoop() {
  SetUpThread("joule-pg-listen", 0);
  t_abort_fd = wake_fd_;
  auto mark_tried = [this] {
    std::lock_guard<std::mutex> lock(listener_mu_);
    listener_tried_ = true;
    listener_cv_.notify_all();
  };
  int backoff_ms = 100;
  // The listener's connection stands for the database (reachable()): its losses and
  // returns are logged, once per transition — an outage seen by no request (an idle
  // server, or only devices the cache holds ingesting) left no line at all (found by a
  // black-box test; /readyz said "down" meanwhile). down_since_ns: 0 while up.
  int64_t down_since_ns = 0;
  auto went_down = [&](std::string error) {
    if (down_since_ns != 0 || stop_.load()) return;
    down_since_ns = clock_->NowNanos();
    // libpq's messages span lines ("…unexpectedly\n\tThis probably means…"): one line.
    std::string line;
    for (char ch : error) {
      const bool space = ch == '\n' || ch == '\t' || ch == '\r' || ch == ' ';
      if (!space) {
        line.push_back(ch);
      } else if (!line.empty() && line.back() != ' ') {
        line.push_back(' ');
      }
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    error = std::move(line);
    logging::Warn("metadata store unavailable",
                  {{"backend", "postgres"},
                   {"error", error},
                   {"detail",
                    "the LISTEN connection is down; retried at least every 5 s (devices the "
                    "metadata cache holds go on ingesting)"}});
  };
  while (!stop_.load()) {
    PGconn* conn = nullptr;
    {
      OperationDeadline deadline(DeadlineIn(query_timeout_));
      Result<PGconn*> opened = OpenConnection();
      if (opened.ok()) {
        conn = *opened;
        if (Status listen = ExecScript(conn, "LISTEN joule_devices; LISTEN joule_metadata");
            !listen.ok()) {
          PQfinish(conn);
          conn = nullptr;
          went_down(listen.message());
        }
      } else {
        went_down(opened.status().message());
      }
    }
    if (conn != nullptr) {
      listener_connected_.store(true);
      if (down_since_ns != 0) {
        logging::Info("metadata store reachable again",
                      {{"backend", "postgres"},
                       {"down_since", FormatRfc3339Millis(down_since_ns)},
                       {"down_for_ms",
                        std::to_string((clock_->NowNanos() - down_since_ns) / kNanosPerMilli)}});
        down_since_ns = 0;
      }
      backoff_ms = 100;
      // Whatever changed while no one listened is unknown: everyone drops everything.
      Publish({MetadataChange::Kind::kAll, ""});
      mark_tried();
      while (!stop_.load()) {
        int sock = PQsocket(conn);
        if (sock < 0) break;
        fd_set fds;
        FD_ZERO(&fds);
        FD_SET(sock, &fds);
        FD_SET(wake_fd_, &fds);
        timeval tv{1, 0};
        int rc = select(std::max(sock, wake_fd_) + 1, &fds, nullptr, nullptr, &tv);
        if (rc < 0 && errno != EINTR) break;
        if (stop_.load()) break;
        if (PQconsumeInput(conn) == 0) break;  // connection lost
        while (PGnotify* n = PQnotifies(conn)) {
          bool own;
          {
            std::lock_guard<std::mutex> lock(pids_mu_);
            own = own_pids_.contains(n->be_pid);
          }
          if (own) {  // already published by the writing thread
            PQfreemem(n);
            continue;
          }
          std::string_view channel = n->relname;
          std::string_view payload = n->extra ? n->extra : "";
          MetadataChange change;
          if (channel == "joule_devices") {
            change = {MetadataChange::Kind::kDevice, std::string(payload)};
          } else if (payload.starts_with("tokens:")) {
            change = {MetadataChange::Kind::kDeviceTokens, std::string(payload.substr(7))};
          } else if (payload.starts_with("keys:")) {
            change = {MetadataChange::Kind::kOwnerKeys, std::string(payload.substr(5))};
          } else if (payload.starts_with("rule:")) {
            change = {MetadataChange::Kind::kRule, std::string(payload.substr(5))};
          } else {
            change = {MetadataChange::Kind::kAll, ""};
          }
          PQfreemem(n);
          Publish(change);
        }
        if (PQstatus(conn) != CONNECTION_OK) break;
      }
      listener_connected_.store(false);
      const char* lost = PQerrorMessage(conn);
      went_down(lost != nullptr && *lost != '\0' ? lost : "the connection was lost");
      PQfinish(conn);
    }
    mark_tried();
    if (stop_.load()) break;
    std::unique_lock<std::mutex> lock(listener_mu_);
    listener_cv_.wait_for(lock, std::chrono::milliseconds(backoff_ms),
                          [&] { return stop_.load(); });
    backoff_ms = std::min(backoff_ms * 2, 5000);
  }
}

}  // namespace joule::store

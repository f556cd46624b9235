// PostgresMetadataStore: MetadataStore on PostgreSQL through libpq.
// - Every query is parameterized (PQexecParams); only the constant migration scripts
//   and transaction control go through PQexec.
// - A small pool of connections (a mutex and a condition variable). A connection found
//   broken is reset before use; a query that fails because the connection broke returns
//   Unavailable, after one retry when the operation is safe to repeat.
// - Change notification: triggers (migration 1) NOTIFY `joule_devices` (payload: the
//   device_id) on any change to `devices`, and `joule_metadata` (payload "tokens:<device>",
//   "keys:<owner>", "rule:<id>", or "*" after TRUNCATE) on the other tables. A listener
//   thread with its own connection LISTENs, waits on the socket with select() and a
//   timeout, and publishes each notification to Subscribe() listeners. It reconnects
//   with backoff; after each (re)connect it publishes kAll, since notifications sent
//   while it was away are lost.
// - Bounded waits: no call waits on PostgreSQL without a deadline. A connect gives up after
//   the URL's connect_timeout (10 s when it sets none); the lookups of the request path
//   (AuthenticateToken, GetDevice, GetDevices) after the lookup timeout in all (pool wait,
//   connect and query), every other operation after the query timeout (both set by
//   MetadataStoreOptions: metadata.lookup_timeout, metadata.query_timeout; migrations:
//   kMigrateTimeout). An operation that gives up says after how long and which key bounds
//   it. Each connection also gets a server-side statement_timeout of the longest of these
//   (unless the role or URL sets one), so that a statement given up by the client does not
//   run on.
// - Not answering: after an operation ran out of time, the store counts as not answering
//   (reachable() false, logged once) and every operation fails at once with Unavailable
//   instead of each waiting out its timeout; a prober thread retries a token and device
//   lookup every second and lifts it (logged) when one answers.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "store/metadata_store.h"

struct pg_conn;

namespace joule::store {

// Whether `url` parses as a libpq connection string (a postgresql:// URI or "key=value"
// pairs: PQconninfoParse), without connecting; checked at config load so that a malformed
// metadata.url is refused naming the key. The error is libpq's, whose text quotes the
// string: with its password as "<set>". Also refused: what libpq parses but a connect
// would refuse — a port that is not 1-65535, an sslmode, gssencmode or target_session_attrs
// it does not know, a connect_timeout, keepalives* or tcp_user_timeout that is not an
// integer (their values are quoted; none is a secret).
Status CheckPostgresUrl(const std::string& url);

class PostgresMetadataStore final : public MetadataStore {
 public:
  // Connects, applies migrations, and starts the listener (waiting up to 5 s for its
  // first LISTEN, so changes made after Open returns are seen). Uses options.url, clock,
  // pool_size, lookup_timeout and query_timeout (each at least 1 ms, else InvalidArgument).
  static Result<std::unique_ptr<PostgresMetadataStore>> Open(const MetadataStoreOptions& options);
  ~PostgresMetadataStore() override;

  // Migrations' bound. The config bounds metadata.query_timeout by it (app/config.h), so
  // that the server-side statement_timeout, the longest bound, stays this.
  static constexpr std::chrono::milliseconds kMigrateTimeout{60000};
  static constexpr int kDefaultConnectTimeoutSeconds = 10;

  std::string_view backend() const override { return "postgres"; }
  // Whether the listener is connected (when not, external changes are not seen until it
  // reconnects and publishes kAll).
  bool listener_connected() const { return listener_connected_.load(); }
  // The listener's connection stands for the database: it notices a server that went
  // away within a second (select + PQconsumeInput) and reconnects within 5 s of its return.
  // And a store whose last operation ran out of time is not reachable until it answers
  // again (the prober).
  bool reachable() const override { return listener_connected() && answering(); }
  bool answering() const { return answering_.load(); }
  std::chrono::milliseconds lookup_timeout() const { return lookup_timeout_; }
  std::chrono::milliseconds query_timeout() const { return query_timeout_; }

  Status Migrate() override;
  Result<int> SchemaVersion() override;

  Result<Device> CreateDevice(const Device& device, std::string* token) override;
  Result<Device> GetDevice(std::string_view device_id) override;
  // One query (`device_id = ANY($1::text[])`) per 10,000 ids.
  Result<std::vector<Device>> GetDevices(std::span<const std::string_view> device_ids) override;
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
  PostgresMetadataStore(const MetadataStoreOptions& options, const Clock* clock);

  // Which bound an operation has (and which key sets it, for its error when it runs out).
  enum class Bound { kLookup, kQuery, kMigrate };
  std::chrono::milliseconds TimeoutOf(Bound bound) const;

  // Runs `fn` on a pooled connection. When it fails because the connection broke and
  // `retry` is true, runs it once more on a fresh connection. With `commit_sent` non-null
  // (a transaction that is not safe to repeat once committed), it is also run once more
  // when the connection broke while *commit_sent was still false: nothing was committed.
  //
  // The whole call (both attempts) has TimeoutOf(bound); when it runs out the store stops
  // answering (NotAnswering) until the prober sees it answer. While it does not answer,
  // fails at once with Unavailable.
  template <typename T, typename Fn>
  Result<T> WithConnection(bool retry, Fn&& fn, const bool* commit_sent = nullptr,
                           Bound bound = Bound::kQuery);
  template <typename T, typename Fn>
  Result<T> Lookup(Fn&& fn) {
    return WithConnection<T>(true, std::forward<Fn>(fn), nullptr, Bound::kLookup);
  }
  // A new connection by the earlier of now + connect timeout and the operation's deadline.
  Result<pg_conn*> OpenConnection();
  Result<pg_conn*> Acquire();
  // `discard`: the connection broke or was given up; it is closed, not pooled.
  void Release(pg_conn* conn, bool discard);
  void NotAnswering(const Status& why);
  Status Probe();
  void ProbeLoop();

  int64_t NowMicros() const;
  void ListenLoop();

  const std::string url_;
  const Clock* clock_;
  const size_t pool_size_;
  const std::chrono::milliseconds lookup_timeout_;
  const std::chrono::milliseconds query_timeout_;
  // The server-side statement_timeout: the longest client bound, so that it never cuts a
  // statement the client still waits for.
  const std::chrono::milliseconds statement_timeout_;

  std::mutex pool_mu_;
  std::condition_variable pool_cv_;
  std::vector<pg_conn*> idle_;
  size_t open_ = 0;  // connections handed out or idle

  // Backend pids of the pool's connections: notifications caused by our own writes were
  // already published in-process, so the listener skips them.
  std::mutex pids_mu_;
  std::unordered_set<int> own_pids_;

  int connect_timeout_seconds_ = kDefaultConnectTimeoutSeconds;  // 0: only the operation's
  std::atomic<bool> answering_{true};
  std::atomic<bool> started_{false};  // Open finished its migrations

  std::thread listener_;
  std::thread prober_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> listener_connected_{false};
  std::mutex listener_mu_;
  std::condition_variable listener_cv_;
  bool listener_tried_ = false;  // first attempt finished (guarded by listener_mu_)
  int wake_fd_ = -1;             // eventfd that wakes the listener for shutdown
};

}  // namespace joule::store

#include "store/redis/redis_latest_store.h"

#include <fmt/format.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>
#include <sys/time.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <csignal>
#include <utility>

#include "common/logging.h"
#include "common/metrics.h"
#include "common/time_format.h"
#include "common/url_password.h"
#include "model/aggregate_record.h"
#include "store/redis/reading_json.h"
#include "store/redis/record_json_decoder.h"

namespace joule::store {
namespace {

struct ReplyFree {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyFree>;

struct ContextFree {
  void operator()(redisContext* c) const { redisFree(c); }
};
using ContextPtr = std::unique_ptr<redisContext, ContextFree>;

// A command as its arguments (binary-safe).
using Command = std::vector<std::string>;

// Holds the id of the data dir that last connected (RedisLatestStore::Connect).
constexpr std::string_view kInstanceKey = "agg:instance";

// Compare-and-set of one record. The stored version is that of the hash field, else of
// the window key: the key outlives the field when the window has been trimmed from the
// hash, and the two are always written together, so neither can hold the lower version
// while the other exists. Fields are RFC 3339 strings of one fixed format, so their string
// order is time order and the trim drops the oldest.
constexpr std::string_view kRecordScript = R"lua(
-- KEYS[1] agg:device:{id}:latest   KEYS[2] agg:device:{id}:window:{start}
-- ARGV[1] window_start  ARGV[2] record JSON  ARGV[3] version  ARGV[4] window TTL (ms)
-- ARGV[5] windows kept  ARGV[6] updates channel  ARGV[7] '1': write whatever is held (a resync)
local function version_of(json)
  if not json then return nil end
  local ok, record = pcall(cjson.decode, json)
  if ok and type(record) == 'table' and type(record.version) == 'number' then
    return record.version
  end
  return nil
end
if ARGV[7] ~= '1' then
  local held = version_of(redis.call('HGET', KEYS[1], ARGV[1]))
  if not held then held = version_of(redis.call('GET', KEYS[2])) end
  if held and held >= tonumber(ARGV[3]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[4])
local limit = tonumber(ARGV[5])
if redis.call('HLEN', KEYS[1]) > limit then
  local fields = redis.call('HKEYS', KEYS[1])
  table.sort(fields)
  local excess = #fields - limit
  for i = 1, excess, 1000 do
    redis.call('HDEL', KEYS[1], unpack(fields, i, math.min(i + 999, excess)))
  end
end
redis.call('PUBLISH', ARGV[6], ARGV[2])
return 1
)lua";

// Keeps the reading with the newest event time (ties: the first write wins — a later copy
// of the same time is a duplicate the engine drops, CONTRACT §1 — as in
// MemoryLatestStore). The order key holds the event time as 20 decimal digits of
// (ns + 2^63), whose string order is time order at full nanosecond precision.
constexpr std::string_view kReadingScript = R"lua(
-- KEYS[1] agg:device:{id}:reading   KEYS[2] agg:device:{id}:reading:order
-- ARGV[1] reading JSON  ARGV[2] event time order string  ARGV[3] updates channel
local held = redis.call('GET', KEYS[2])
if held and held >= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[1])
return 1
)lua";

// Forgets what Redis holds for one device (ReplaceDevice): the hash, the window keys of its
// fields, the reading and its order key. Window keys of windows already trimmed from the
// hash are not known here; they expire (window TTL), and the forced writes that follow
// replace those of the windows rewritten.
constexpr std::string_view kForgetDeviceScript = R"lua(
-- KEYS[1] agg:device:{id}:latest  KEYS[2] agg:device:{id}:reading
-- KEYS[3] agg:device:{id}:reading:order  ARGV[1] agg:device:{id}:window:
local fields = redis.call('HKEYS', KEYS[1])
for i = 1, #fields do redis.call('DEL', ARGV[1] .. fields[i]) end
return redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
)lua";

std::string Sha1Hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &length, EVP_sha1(), nullptr) != 1) {
    return {};  // EVALSHA then fails with NOSCRIPT and the call falls back to EVAL
  }
  std::string hex;
  for (unsigned int i = 0; i < length; ++i)
    fmt::format_to(std::back_inserter(hex), "{:02x}", digest[i]);
  return hex;
}

}  // namespace

struct Script {
  std::string_view source;
  std::string sha;
};

namespace {

const Script& RecordScript() {
  static const Script script{kRecordScript, Sha1Hex(kRecordScript)};
  return script;
}

const Script& ReadingScript() {
  static const Script script{kReadingScript, Sha1Hex(kReadingScript)};
  return script;
}

const Script& ForgetDeviceScript() {
  static const Script script{kForgetDeviceScript, Sha1Hex(kForgetDeviceScript)};
  return script;
}

}  // namespace

// One EVALSHA (declared in the header for RedisLatestStore::RunCalls).
struct ScriptCall {
  const Script* script;
  std::vector<std::string> keys;
  std::vector<std::string> args;
  // The device written, for the first-write claim (RedisLatestStore::RunCalls); empty: none.
  // Points into the caller's records or events.
  std::string_view device;
};

namespace {

ScriptCall ForgetDeviceCall(std::string_view device_id) {
  return ScriptCall{
      &ForgetDeviceScript(),
      {RedisLatestKey(device_id), RedisReadingKey(device_id), RedisReadingOrderKey(device_id)},
      {fmt::format("agg:device:{}:window:", device_id)},
      {}};
}

Command EvalCommand(const ScriptCall& call, bool by_sha) {
  Command c;
  c.reserve(3 + call.keys.size() + call.args.size());
  c.emplace_back(by_sha ? "EVALSHA" : "EVAL");
  c.emplace_back(by_sha ? std::string_view(call.script->sha) : call.script->source);
  c.push_back(std::to_string(call.keys.size()));
  c.insert(c.end(), call.keys.begin(), call.keys.end());
  c.insert(c.end(), call.args.begin(), call.args.end());
  return c;
}

// Appends the command in RESP (the bytes redisFormatCommandArgv would produce).
void AppendRespArg(std::string_view arg, std::string* out) {
  char head[32];
  const auto [end, ec] = std::to_chars(head + 1, head + sizeof head - 2, arg.size());
  head[0] = '$';
  end[0] = '\r';
  end[1] = '\n';
  out->append(head, static_cast<size_t>(end + 2 - head));
  out->append(arg);
  out->append("\r\n", 2);
}

// EVALSHA/EVAL of `call` in RESP, appended to `out`: a pipeline of scripts is encoded into
// one reused buffer and handed to hiredis at once (no per-argument copies, no formatted
// command per script).
void AppendEvalResp(const ScriptCall& call, bool by_sha, std::string* out) {
  const size_t argc = 3 + call.keys.size() + call.args.size();
  char head[32];
  const auto [end, ec] = std::to_chars(head + 1, head + sizeof head - 2, argc);
  head[0] = '*';
  end[0] = '\r';
  end[1] = '\n';
  out->append(head, static_cast<size_t>(end + 2 - head));
  AppendRespArg(by_sha ? "EVALSHA" : "EVAL", out);
  AppendRespArg(by_sha ? std::string_view(call.script->sha) : call.script->source, out);
  char keys[24];
  const auto [keys_end, keys_ec] = std::to_chars(keys, keys + sizeof keys, call.keys.size());
  AppendRespArg(std::string_view(keys, static_cast<size_t>(keys_end - keys)), out);
  for (const std::string& k : call.keys) AppendRespArg(k, out);
  for (const std::string& a : call.args) AppendRespArg(a, out);
}

timeval ToTimeval(int64_t ns) {
  timeval tv;
  tv.tv_sec = static_cast<time_t>(ns / kNanosPerSecond);
  tv.tv_usec = static_cast<suseconds_t>((ns % kNanosPerSecond) / kNanosPerMicro);
  return tv;
}

std::string_view ReplyText(const redisReply* r) { return {r->str, r->len}; }

bool IsNoScript(const redisReply* r) {
  return r->type == REDIS_REPLY_ERROR && ReplyText(r).starts_with("NOSCRIPT");
}

// An error reply. Server states that pass are Unavailable: the caller may try again.
Status ServerError(const redisReply* r) {
  const std::string_view text = ReplyText(r);
  static constexpr std::array<std::string_view, 8> kTransient = {
      "LOADING", "BUSY", "OOM", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS"};
  for (std::string_view prefix : kTransient) {
    if (text.starts_with(prefix) && (text.size() == prefix.size() || text[prefix.size()] == ' ')) {
      return Status::Unavailable(fmt::format("redis: {}", text));
    }
  }
  return Status::Internal(fmt::format("redis: {}", text));
}

// "agg:device:{id}:latest" and the like → id (keys are built by the Redis*Key functions).
std::string_view DeviceOfKey(std::string_view key) {
  constexpr std::string_view kPrefix = "agg:device:";
  if (!key.starts_with(kPrefix)) return key;
  key.remove_prefix(kPrefix.size());
  const size_t colon = key.rfind(':');
  return colon == std::string_view::npos ? key : key.substr(0, colon);
}

Status UnexpectedReply(std::string_view command, const redisReply* r) {
  if (r->type == REDIS_REPLY_ERROR) return ServerError(r);
  return Status::Internal(fmt::format("redis: unexpected reply type {} to {}", r->type, command));
}

// hiredis writes with write(2), which raises SIGPIPE on a connection the peer closed;
// that must be an error return, not the end of the process.
void IgnoreSigpipeOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction current {};
    if (sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
      std::signal(SIGPIPE, SIG_IGN);
    }
  });
}

bool ParseInt(std::string_view s, int* out) {
  if (s.empty()) return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && end == s.data() + s.size();
}

std::string ReadingOrder(int64_t timestamp_ns) {
  return fmt::format("{:020}", static_cast<uint64_t>(timestamp_ns) ^ (uint64_t{1} << 63));
}

constexpr size_t kPipelineChunk = 256;

// Observes the seconds since construction into `h` (if any) when the status is Ok, else
// counts an error.
class CallTimer {
 public:
  CallTimer(Histogram* h, Counter* errors)
      : h_(h), errors_(errors), start_(std::chrono::steady_clock::now()) {}
  Status Done(Status st) const {
    if (st.ok()) {
      if (h_ != nullptr) {
        h_->Observe(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
      }
    } else if (errors_ != nullptr) {
      errors_->Inc();
    }
    return st;
  }

 private:
  Histogram* h_;
  Counter* errors_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace

Result<RedisEndpoint> ParseRedisUrl(std::string_view url) {
  auto bad = [&](std::string_view why) {  // the URL quoted without its password
    return Status::InvalidArgument(
        fmt::format("redis url \"{}\": {}", RedactUrlPassword(url), why));
  };
  constexpr std::string_view kScheme = "redis://";
  if (!url.starts_with(kScheme)) return bad("must start with redis://");
  std::string_view rest = url.substr(kScheme.size());
  RedisEndpoint ep;
  std::string_view authority = rest.substr(0, rest.find('/'));
  std::string_view path =
      rest.size() > authority.size() ? rest.substr(authority.size() + 1) : std::string_view();
  if (size_t at = authority.rfind('@'); at != std::string_view::npos) {
    std::string_view userinfo = authority.substr(0, at);
    authority = authority.substr(at + 1);
    size_t colon = userinfo.find(':');
    if (colon == std::string_view::npos) {
      ep.password = userinfo;  // redis://password@host
    } else {
      ep.username = userinfo.substr(0, colon);
      ep.password = userinfo.substr(colon + 1);
    }
  }
  std::string_view port;
  if (authority.starts_with('[')) {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return bad("unterminated [ in host");
    ep.host = authority.substr(1, close - 1);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return bad("junk after ]");
      port = after.substr(1);
    }
  } else {
    size_t colon = authority.rfind(':');
    ep.host = authority.substr(0, colon);
    if (colon != std::string_view::npos) port = authority.substr(colon + 1);
  }
  if (ep.host.empty()) return bad("missing host");
  if (!port.empty() && (!ParseInt(port, &ep.port) || ep.port < 1 || ep.port > 65535)) {
    return bad("port must be 1-65535");
  }
  if (!path.empty() && (!ParseInt(path, &ep.db) || ep.db < 0)) {
    return bad("database must be a non-negative integer");
  }
  return ep;
}

std::string RedisLatestKey(std::string_view device_id) {
  return fmt::format("agg:device:{}:latest", device_id);
}
std::string RedisWindowKey(std::string_view device_id, int64_t window_start_ns) {
  return fmt::format("agg:device:{}:window:{}", device_id, FormatRfc3339Millis(window_start_ns));
}
std::string RedisReadingKey(std::string_view device_id) {
  return fmt::format("agg:device:{}:reading", device_id);
}
std::string RedisReadingOrderKey(std::string_view device_id) {
  return fmt::format("agg:device:{}:reading:order", device_id);
}
std::string RedisUpdatesChannel(std::string_view device_id) {
  return fmt::format("agg:device:{}:updates", device_id);
}

// One pooled connection and the decoders used with it, guarded by `mu`.
struct RedisLatestStore::Slot {
  std::mutex mu;
  ContextPtr ctx;  // null: not connected
  // Set when the last failure dropped the connection for a reason other than a timeout
  // (closed or reset by the server): then a retry on a fresh connection is worthwhile.
  bool peer_closed = false;
  bool ever_connected = false;  // for the reconnect count
  RecordJsonDecoder record_decoder;
  ReadingJsonDecoder reading_decoder;
  std::string resp;                      // a pipeline of scripts in RESP (reused)
  std::vector<ReplyPtr> script_replies;  // their replies (storage reused)

  // Drops the connection after a hiredis error and describes it.
  Status ConnectionLost(int saved_errno) {
    const bool timed_out =
        ctx->err == REDIS_ERR_IO && (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK ||
                                     saved_errno == ETIMEDOUT || saved_errno == EINPROGRESS);
    std::string message = timed_out ? "timed out" : ctx->errstr;
    peer_closed = !timed_out;
    ctx.reset();
    return Status::Unavailable(fmt::format("redis: {}", message));
  }

  // Sends all commands, then reads one reply per command. Error replies are returned as
  // replies; a broken connection is an Unavailable status.
  Status Pipeline(std::span<const Command> commands, std::vector<ReplyPtr>* replies) {
    replies->clear();
    std::vector<const char*> argv;
    std::vector<size_t> lengths;
    for (const Command& command : commands) {
      argv.clear();
      lengths.clear();
      for (const std::string& arg : command) {
        argv.push_back(arg.data());
        lengths.push_back(arg.size());
      }
      if (redisAppendCommandArgv(ctx.get(), static_cast<int>(argv.size()), argv.data(),
                                 lengths.data()) != REDIS_OK) {
        return ConnectionLost(errno);
      }
    }
    return ReadReplies(commands.size(), replies);
  }

  // Reads one reply for each of the n commands sent (appends to `replies`).
  Status ReadReplies(size_t n, std::vector<ReplyPtr>* replies) {
    for (size_t i = 0; i < n; ++i) {
      void* reply = nullptr;
      errno = 0;
      if (redisGetReply(ctx.get(), &reply) != REDIS_OK || reply == nullptr) {
        return ConnectionLost(errno);
      }
      replies->emplace_back(static_cast<redisReply*>(reply));
    }
    return Status::Ok();
  }

  // Sends `n` commands already encoded in RESP, then reads one reply per command, as
  // Pipeline does.
  Status PipelineResp(std::string_view encoded, size_t n, std::vector<ReplyPtr>* replies) {
    replies->clear();
    if (redisAppendFormattedCommand(ctx.get(), encoded.data(), encoded.size()) != REDIS_OK) {
      return ConnectionLost(errno);
    }
    return ReadReplies(n, replies);
  }

  // Runs the scripts pipelined by EVALSHA, re-sending those the server does not know
  // (NOSCRIPT: after a restart or SCRIPT FLUSH) as EVAL.
  Status RunScripts(std::span<const ScriptCall> calls) {
    resp.clear();
    // The forget script goes by EVAL: a call answered NOSCRIPT is re-sent after the others,
    // which is harmless for the version-guarded writes but would run a forget after the
    // device's writes that follow it (found by integration_history with redis_test's SCRIPT
    // FLUSH alongside: the fresh reading was deleted).
    for (const ScriptCall& call : calls) {
      AppendEvalResp(call, /*by_sha=*/call.script != &ForgetDeviceScript(), &resp);
    }
    std::vector<ReplyPtr>& replies = script_replies;
    JOULE_RETURN_IF_ERROR(PipelineResp(resp, calls.size(), &replies));
    std::vector<size_t> unknown;
    for (size_t i = 0; i < replies.size(); ++i) {
      if (IsNoScript(replies[i].get())) unknown.push_back(i);
    }
    if (!unknown.empty()) {
      std::vector<Command> evals;
      for (size_t i : unknown) evals.push_back(EvalCommand(calls[i], /*by_sha=*/false));
      std::vector<ReplyPtr> eval_replies;
      JOULE_RETURN_IF_ERROR(Pipeline(evals, &eval_replies));
      for (size_t j = 0; j < unknown.size(); ++j) replies[unknown[j]] = std::move(eval_replies[j]);
    }
    for (size_t i = 0; i < replies.size(); ++i) {
      if (replies[i]->type == REDIS_REPLY_INTEGER) continue;
      Status st = UnexpectedReply("EVALSHA", replies[i].get());
      if (st.code() == StatusCode::kUnavailable || calls[i].keys.empty()) return st;
      // Which key refused (e.g. WRONGTYPE: a key of another type set by hand): the
      // operator must find it (RedisLatestStore::ReportWriteError).
      return Status(st.code(), fmt::format("{} (device {}, key {})", st.message(),
                                           DeviceOfKey(calls[i].keys[0]), calls[i].keys[0]));
    }
    return Status::Ok();
  }

  Status Connect(const RedisEndpoint& ep, const RedisLatestStoreOptions& options) {
    peer_closed = false;
    ContextPtr c(
        redisConnectWithTimeout(ep.host.c_str(), ep.port, ToTimeval(options.connect_timeout_ns)));
    if (c == nullptr) return Status::Unavailable("redis: cannot allocate a connection");
    if (c->err) {
      return Status::Unavailable(
          fmt::format("redis: cannot connect to {}:{}: {}", ep.host, ep.port, c->errstr));
    }
    if (redisSetTimeout(c.get(), ToTimeval(options.command_timeout_ns)) != REDIS_OK) {
      return Status::Unavailable(fmt::format("redis: cannot set timeouts: {}", c->errstr));
    }
    redisEnableKeepAlive(c.get());  // best effort: detects dead peers on idle connections
    ctx = std::move(c);
    std::vector<Command> setup;
    if (!ep.password.empty()) {
      setup.push_back(ep.username.empty() ? Command{"AUTH", ep.password}
                                          : Command{"AUTH", ep.username, ep.password});
    }
    if (ep.db != 0) setup.push_back({"SELECT", std::to_string(ep.db)});
    if (!options.client_name.empty()) setup.push_back({"CLIENT", "SETNAME", options.client_name});
    if (setup.empty()) return Status::Ok();
    std::vector<ReplyPtr> replies;
    JOULE_RETURN_IF_ERROR(Pipeline(setup, &replies));
    for (size_t i = 0; i < replies.size(); ++i) {
      if (replies[i]->type == REDIS_REPLY_ERROR) {
        ctx.reset();
        return Status::Unavailable(
            fmt::format("redis: {} failed: {}", setup[i][0], ReplyText(replies[i].get())));
      }
    }
    return Status::Ok();
  }
};

Result<std::unique_ptr<RedisLatestStore>> RedisLatestStore::Open(RedisLatestStoreOptions options) {
  JOULE_ASSIGN_OR_RETURN(RedisEndpoint endpoint, ParseRedisUrl(options.url));
  if (options.windows_per_device == 0) {
    return Status::InvalidArgument("redis latest store: windows_per_device must be at least 1");
  }
  if (options.window_ttl_ns < kNanosPerMilli) {
    return Status::InvalidArgument("redis latest store: window TTL must be at least 1ms");
  }
  if (options.connect_timeout_ns < kNanosPerMilli || options.command_timeout_ns < kNanosPerMilli) {
    return Status::InvalidArgument("redis latest store: timeouts must be at least 1ms");
  }
  if (options.connections == 0) {
    return Status::InvalidArgument("redis latest store: connections must be at least 1");
  }
  for (char ch : options.client_name) {
    if (ch <= ' ' || ch > '~') {
      return Status::InvalidArgument(
          "redis latest store: client name must be printable, no spaces");
    }
  }
  IgnoreSigpipeOnce();
  return std::unique_ptr<RedisLatestStore>(
      new RedisLatestStore(std::move(options), std::move(endpoint)));
}

RedisLatestStore::RedisLatestStore(RedisLatestStoreOptions options, RedisEndpoint endpoint)
    : options_(std::move(options)), endpoint_(std::move(endpoint)) {
  slots_.reserve(options_.connections);
  for (size_t i = 0; i < options_.connections; ++i) slots_.push_back(std::make_unique<Slot>());
  if (MetricsRegistry* m = options_.metrics) {
    instruments_.write_seconds =
        m->GetHistogram("joule_redis_write_seconds",
                        "Latency of successful Redis latest-store writes (one pipelined call)",
                        Histogram::LatencyBuckets());
    instruments_.read_seconds = m->GetHistogram("joule_redis_read_seconds",
                                                "Latency of successful Redis latest-store reads",
                                                Histogram::LatencyBuckets());
    const char* help = "Failed Redis calls (connection, timeout or server error)";
    instruments_.write_errors = m->GetCounter("joule_redis_errors_total", help, {{"op", "write"}});
    instruments_.read_errors = m->GetCounter("joule_redis_errors_total", help, {{"op", "read"}});
    instruments_.ping_errors = m->GetCounter("joule_redis_errors_total", help, {{"op", "ping"}});
    instruments_.connects = m->GetCounter("joule_redis_connects_total", "Redis connections opened");
    instruments_.reconnects = m->GetCounter("joule_redis_reconnects_total",
                                            "Redis connections opened again after one broke");
    instruments_.empty_instances = m->GetCounter(
        "joule_redis_empty_instances_total",
        "Connections that found a Redis without agg:instance (empty or new): its devices are "
        "rewritten from history");
    instruments_.foreign_instances = m->GetCounter(
        "joule_redis_foreign_instances_total",
        "Connections that found agg:instance naming another data dir: its devices are "
        "rewritten from history");
  }
}

RedisLatestStore::~RedisLatestStore() = default;

void RedisLatestStore::StartClaiming() {
  std::lock_guard lock(claims_mu_);
  claimed_.clear();
  claiming_.store(true, std::memory_order_release);
}

RedisLatestStore::Slot& RedisLatestStore::Acquire(std::unique_lock<std::mutex>* lock) {
  const size_t start = next_slot_.fetch_add(1, std::memory_order_relaxed) % slots_.size();
  for (size_t i = 0; i < slots_.size(); ++i) {
    Slot& slot = *slots_[(start + i) % slots_.size()];
    std::unique_lock<std::mutex> attempt(slot.mu, std::try_to_lock);
    if (attempt.owns_lock()) {
      *lock = std::move(attempt);
      return slot;
    }
  }
  Slot& slot = *slots_[start];
  *lock = std::unique_lock<std::mutex>(slot.mu);
  return slot;
}

template <typename Body>
Status RedisLatestStore::WithConnection(Body&& body) {
  std::unique_lock<std::mutex> lock;
  Slot& slot = Acquire(&lock);
  const bool pooled = slot.ctx != nullptr;
  if (!pooled) JOULE_RETURN_IF_ERROR(Connect(slot));
  Status st = body(slot);
  // A pooled connection the server has closed since its last use (restart, idle timeout,
  // CLIENT KILL) fails on first use: one more try on a fresh connection. Every operation
  // here is idempotent. A timeout is not retried: it would only double the wait.
  if (st.ok() || !pooled || slot.ctx != nullptr || !slot.peer_closed) return st;
  JOULE_RETURN_IF_ERROR(Connect(slot));
  return body(slot);
}

Status RedisLatestStore::Connect(Slot& slot) {
  JOULE_RETURN_IF_ERROR(slot.Connect(endpoint_, options_));
  // Which server is this? A new run_id means a restart: its data may be gone. And does it
  // hold what this data dir wrote? `agg:instance` holds the id of the data dir that claimed
  // it. Missing (SET NX sets it): an empty or new Redis (restarted without persistence, a
  // new backend), also when Joule itself restarted meanwhile (found by a black-box test: a
  // Redis that came back empty while Joule was down was never rewritten). Another id, seen
  // by the first connection to this server run (this process's first, or after a Redis
  // restart): another data dir's records, or an older one's (found by a black-box test: a
  // deleted data dir's partial window outranked the new data dir's final one by its
  // version); it is claimed. Later connections to the same run leave another id alone, so
  // that two data dirs on one Redis (unsupported) do not take it from each other on every
  // reconnect.
  std::vector<Command> info = {Command{"INFO", "server"}};
  if (!options_.instance_id.empty()) {
    info.push_back(Command{"SET", std::string(kInstanceKey), options_.instance_id, "NX", "GET"});
  }
  std::vector<ReplyPtr> replies;
  Status st = slot.Pipeline(info, &replies);
  if (!st.ok()) return st;
  std::string server_run;
  if (replies[0]->type == REDIS_REPLY_STRING) {
    std::string_view text = ReplyText(replies[0].get());
    constexpr std::string_view kKey = "run_id:";
    if (size_t at = text.find(kKey); at != std::string_view::npos) {
      std::string_view id = text.substr(at + kKey.size());
      server_run = id.substr(0, id.find_first_of("\r\n"));
    }
  }
  bool new_run = true;
  {
    std::lock_guard lock(run_id_mu_);
    new_run = server_run.empty() || server_run != run_id_;
  }
  if (replies.size() > 1) {
    const redisReply* marker = replies[1].get();
    if (marker->type == REDIS_REPLY_NIL) {  // the key was missing; it is ours now
      StartClaiming();
      instance_generation_.fetch_add(1, std::memory_order_acq_rel);
      if (instruments_.empty_instances != nullptr) instruments_.empty_instances->Inc();
    } else if (marker->type == REDIS_REPLY_STRING) {
      const std::string found(ReplyText(marker));
      if (found != options_.instance_id && new_run) {
        const std::array<Command, 1> claim = {
            Command{"SET", std::string(kInstanceKey), options_.instance_id}};
        std::vector<ReplyPtr> claimed;
        JOULE_RETURN_IF_ERROR(slot.Pipeline(claim, &claimed));
        if (claimed[0]->type != REDIS_REPLY_STATUS) return UnexpectedReply("SET", claimed[0].get());
        StartClaiming();
        instance_generation_.fetch_add(1, std::memory_order_acq_rel);
        if (instruments_.foreign_instances != nullptr) instruments_.foreign_instances->Inc();
        logging::Warn("redis held another data dir's records; rewriting every device from history",
                      {{"found", found}, {"ours", options_.instance_id}});
      }
    } else {
      return UnexpectedReply("SET NX GET", marker);
    }
  }
  if (!server_run.empty()) {
    std::lock_guard lock(run_id_mu_);
    if (!run_id_.empty() && run_id_ != server_run) {
      instance_generation_.fetch_add(1, std::memory_order_acq_rel);
    }
    run_id_ = server_run;
  }
  if (instruments_.connects != nullptr) instruments_.connects->Inc();
  if (slot.ever_connected && instruments_.reconnects != nullptr) instruments_.reconnects->Inc();
  slot.ever_connected = true;
  return Status::Ok();
}

namespace {

ScriptCall RecordCall(const model::AggregateRecord& r, const RedisLatestStoreOptions& options,
                      bool force = false) {
  std::string window_start = FormatRfc3339Millis(r.window_start_ns);
  ScriptCall call{&RecordScript(), {}, {}, {}};
  call.keys = {RedisLatestKey(r.device_id),
               fmt::format("agg:device:{}:window:{}", r.device_id, window_start)};
  call.args = {std::move(window_start),
               model::RecordToJson(r),
               std::to_string(r.version),
               std::to_string(std::max<int64_t>(1, options.window_ttl_ns / kNanosPerMilli)),
               std::to_string(options.windows_per_device),
               RedisUpdatesChannel(r.device_id),
               force ? "1" : "0"};
  call.device = r.device_id;
  return call;
}

}  // namespace

Status RedisLatestStore::RunCalls(Slot& slot, std::span<const ScriptCall> calls) {
  std::vector<ScriptCall> with_forgets;
  std::vector<std::string> claimed;  // by this call: unclaimed again if it fails
  if (claiming_.load(std::memory_order_acquire)) {
    std::lock_guard lock(claims_mu_);
    for (size_t i = 0; i < calls.size(); ++i) {
      const std::string_view device = calls[i].device;
      if (!device.empty() && claimed_.emplace(device).second) {
        if (with_forgets.empty()) with_forgets.assign(calls.begin(), calls.begin() + i);
        with_forgets.push_back(ForgetDeviceCall(device));
        claimed.emplace_back(device);
      }
      if (!with_forgets.empty()) with_forgets.push_back(calls[i]);
    }
    if (!with_forgets.empty()) calls = with_forgets;
  }
  for (size_t i = 0; i < calls.size(); i += kPipelineChunk) {
    const size_t n = std::min(kPipelineChunk, calls.size() - i);
    Status st = slot.RunScripts(calls.subspan(i, n));
    if (!st.ok()) {
      {
        std::lock_guard lock(claims_mu_);
        for (const std::string& device : claimed) claimed_.erase(device);
      }
      if (st.code() != StatusCode::kUnavailable) ReportWriteError(st);
      return st;
    }
  }
  return Status::Ok();
}

void RedisLatestStore::ReportWriteError(const Status& status) {
  constexpr int64_t kIntervalNs = 10 * kNanosPerSecond;
  const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::steady_clock::now().time_since_epoch())
                          .count();
  uint64_t suppressed = 0;
  {
    std::lock_guard lock(write_error_log_mu_);
    if (write_error_logged_ns_ != 0 && now - write_error_logged_ns_ < kIntervalNs) {
      ++write_errors_suppressed_;
      return;
    }
    write_error_logged_ns_ = now;
    suppressed = std::exchange(write_errors_suppressed_, 0);
  }
  logging::Error("redis refused a write; not retried (the key may need repair or deletion)",
                 {{"error", status.message()}, {"suppressed", std::to_string(suppressed)}});
}

Status RedisLatestStore::PutRecord(const model::AggregateRecord& record) {
  return PutRecords(std::span<const model::AggregateRecord>(&record, 1));
}

Status RedisLatestStore::PutRecords(std::span<const model::AggregateRecord> records) {
  std::vector<ScriptCall> calls;
  for (const model::AggregateRecord& r : records) {
    if (r.resolution == model::Resolution::kBase) calls.push_back(RecordCall(r, options_));
  }
  if (calls.empty()) return Status::Ok();
  const CallTimer timer(instruments_.write_seconds, instruments_.write_errors);
  return timer.Done(WithConnection([&](Slot& slot) { return RunCalls(slot, calls); }));
}

Status RedisLatestStore::ReplaceDevice(std::string_view device_id,
                                       std::span<const model::AggregateRecord> records,
                                       const model::Event* reading) {
  const std::string id(device_id);
  std::vector<ScriptCall> calls;
  calls.reserve(records.size() + 2);
  calls.push_back(ForgetDeviceCall(id));
  for (const model::AggregateRecord& r : records) {
    if (r.resolution == model::Resolution::kBase && r.device_id == id) {
      calls.push_back(RecordCall(r, options_, /*force=*/true));
      calls.back().device = {};  // forgotten above
    }
  }
  if (reading != nullptr && reading->device_id == id) {
    calls.push_back(ScriptCall{
        &ReadingScript(),
        {RedisReadingKey(id), RedisReadingOrderKey(id)},
        {ReadingToJson(*reading), ReadingOrder(reading->timestamp_ns), RedisUpdatesChannel(id)},
        {}});
  }
  const CallTimer timer(instruments_.write_seconds, instruments_.write_errors);
  return timer.Done(WithConnection([&](Slot& slot) {
    if (claiming_.load(std::memory_order_acquire)) {  // after connecting: it may start there
      std::lock_guard lock(claims_mu_);
      claimed_.insert(id);
    }
    return RunCalls(slot, calls);
  }));
}

Status RedisLatestStore::PutReading(const model::Event& event) {
  return PutReadings(std::span<const model::Event>(&event, 1));
}

Status RedisLatestStore::PutReadings(std::span<const model::Event> events) {
  if (events.empty()) return Status::Ok();
  std::vector<ScriptCall> calls;
  calls.reserve(events.size());
  for (const model::Event& e : events) {
    calls.push_back(ScriptCall{
        &ReadingScript(),
        {RedisReadingKey(e.device_id), RedisReadingOrderKey(e.device_id)},
        {ReadingToJson(e), ReadingOrder(e.timestamp_ns), RedisUpdatesChannel(e.device_id)},
        e.device_id});
  }
  const CallTimer timer(instruments_.write_seconds, instruments_.write_errors);
  return timer.Done(WithConnection([&](Slot& slot) { return RunCalls(slot, calls); }));
}

Result<bool> RedisLatestStore::Get(std::string_view device_id, size_t windows,
                                   LatestSnapshot* out) {
  const std::array<Command, 2> commands = {Command{"HGETALL", RedisLatestKey(device_id)},
                                           Command{"GET", RedisReadingKey(device_id)}};
  bool found = false;
  const CallTimer timer(instruments_.read_seconds, instruments_.read_errors);
  Status st = WithConnection([&](Slot& slot) -> Status {
    std::vector<ReplyPtr> replies;
    JOULE_RETURN_IF_ERROR(slot.Pipeline(commands, &replies));
    const redisReply* hash = replies[0].get();
    const redisReply* reading = replies[1].get();
    if (hash->type != REDIS_REPLY_ARRAY || hash->elements % 2 != 0) {
      return UnexpectedReply("HGETALL", hash);
    }
    if (reading->type != REDIS_REPLY_STRING && reading->type != REDIS_REPLY_NIL) {
      return UnexpectedReply("GET", reading);
    }
    struct Window {
      int64_t start_ns;
      const redisReply* json;
    };
    std::vector<Window> stored;
    stored.reserve(hash->elements / 2);
    for (size_t i = 0; i < hash->elements; i += 2) {
      const redisReply* field = hash->element[i];
      const redisReply* value = hash->element[i + 1];
      Window w{0, value};
      if (field->type != REDIS_REPLY_STRING || value->type != REDIS_REPLY_STRING ||
          !ParseRfc3339(ReplyText(field), &w.start_ns)) {
        return Status::Corruption(fmt::format("redis: bad field in {}", RedisLatestKey(device_id)));
      }
      stored.push_back(w);
    }
    std::sort(stored.begin(), stored.end(),
              [](const Window& a, const Window& b) { return a.start_ns > b.start_ns; });
    LatestSnapshot snapshot;
    const size_t n = std::min(windows, stored.size());
    snapshot.records.resize(n);
    for (size_t i = 0; i < n; ++i) {
      Status decoded = slot.record_decoder.Decode(ReplyText(stored[i].json), &snapshot.records[i]);
      if (!decoded.ok()) {
        return Status::Corruption(fmt::format("redis: {} field {}: {}", RedisLatestKey(device_id),
                                              FormatRfc3339Millis(stored[i].start_ns),
                                              decoded.message()));
      }
      snapshot.records[i].resolution = model::Resolution::kBase;  // the only kind stored
    }
    if (reading->type == REDIS_REPLY_STRING) {
      Status decoded = slot.reading_decoder.Decode(ReplyText(reading), &snapshot.reading);
      if (!decoded.ok()) {
        return Status::Corruption(
            fmt::format("redis: {}: {}", RedisReadingKey(device_id), decoded.message()));
      }
      snapshot.has_reading = true;
    }
    found = !stored.empty() || snapshot.has_reading;
    if (found) *out = std::move(snapshot);
    return Status::Ok();
  });
  st = timer.Done(std::move(st));
  if (!st.ok()) return st;
  return found;
}

Status RedisLatestStore::Ping() {
  const CallTimer timer(nullptr, instruments_.ping_errors);
  return timer.Done(WithConnection([](Slot& slot) {
    const std::array<Command, 1> ping = {Command{"PING"}};
    std::vector<ReplyPtr> replies;
    JOULE_RETURN_IF_ERROR(slot.Pipeline(ping, &replies));
    if (replies[0]->type != REDIS_REPLY_STATUS) return UnexpectedReply("PING", replies[0].get());
    return Status::Ok();
  }));
}

}  // namespace joule::store

#include "alert/outbox.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <simdjson.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/crc32c.h"
#include "common/json_writer.h"
#include "common/logging.h"
#include "common/sync_dir.h"

namespace joule::alert {
namespace {

constexpr uint64_t kCompactMinLines = 4096;

Status WriteAll(int fd, const std::string& data, const std::function<int()>& fault) {
  if (fault) {
    if (int err = fault(); err != 0) {
      errno = err;
      return Status::IoErrorFromErrno("outbox write");
    }
  }
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::IoErrorFromErrno("outbox write");
    }
    off += static_cast<size_t>(n);
  }
  return Status::Ok();
}

std::string Line(const std::string& json) {
  return fmt::format("{:08x} {}\n", crc32c::Value(json), json);
}

std::string AddJson(const Delivery& d) {
  JsonWriter w;
  w.BeginObject();
  w.Key("op");
  w.String("add");
  w.Key("id");
  w.String(d.id);
  w.Key("alert_id");
  w.String(d.alert_id);
  w.Key("event");
  w.String(d.event);
  w.Key("url");
  w.String(d.url);
  w.Key("secret");
  w.String(d.secret);
  w.Key("body");
  w.String(d.body);
  w.Key("created_ns");
  w.Int(d.created_ns);
  w.Key("trigger_ns");
  w.Int(d.trigger_ns);
  w.Key("attempts");
  w.Int(d.attempts);
  w.EndObject();
  return w.Take();
}

}  // namespace

Result<std::unique_ptr<Outbox>> Outbox::Open(std::string dir, bool fsync, size_t capacity) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::IoError(fmt::format("cannot create {}: {}", dir, ec.message()));
  std::unique_ptr<Outbox> box(new Outbox((std::filesystem::path(dir) / "outbox.log").string(),
                                         fsync, std::max<size_t>(1, capacity)));
  JOULE_RETURN_IF_ERROR(box->Recover());
  return box;
}

Outbox::~Outbox() {
  if (fd_ >= 0) ::close(fd_);
}

Status Outbox::Recover() {
  std::string data;
  {
    std::ifstream in(path_, std::ios::binary);
    if (in) {
      std::stringstream ss;
      ss << in.rdbuf();
      data = ss.str();
    }
  }
  size_t good = 0;
  simdjson::dom::parser parser;
  while (good < data.size()) {
    size_t nl = data.find('\n', good);
    if (nl == std::string::npos || nl - good < 10 || data[good + 8] != ' ') break;
    std::string_view hex(data.data() + good, 8);
    std::string_view json(data.data() + good + 9, nl - good - 9);
    uint32_t crc = 0;
    bool ok = true;
    for (char c : hex) {
      int v = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
      if (v < 0) ok = false;
      crc = crc * 16 + static_cast<uint32_t>(v < 0 ? 0 : v);
    }
    if (!ok || crc != crc32c::Value(json)) break;
    simdjson::dom::element e;
    if (parser.parse(json.data(), json.size()).get(e) != simdjson::SUCCESS) break;
    std::string_view op, id;
    if (e["op"].get_string().get(op) != simdjson::SUCCESS ||
        e["id"].get_string().get(id) != simdjson::SUCCESS) {
      break;
    }
    std::string sid(id);
    if (op == "add") {
      Delivery d;
      d.id = sid;
      std::string_view s;
      auto str = [&](const char* k, std::string* out) {
        if (e[k].get_string().get(s) == simdjson::SUCCESS) *out = std::string(s);
      };
      str("alert_id", &d.alert_id);
      str("event", &d.event);
      str("url", &d.url);
      str("secret", &d.secret);
      str("body", &d.body);
      int64_t n = 0;
      if (e["created_ns"].get_int64().get(n) == simdjson::SUCCESS) d.created_ns = n;
      if (e["trigger_ns"].get_int64().get(n) == simdjson::SUCCESS) d.trigger_ns = n;
      if (e["attempts"].get_int64().get(n) == simdjson::SUCCESS) d.attempts = static_cast<int>(n);
      if (!finished_ids_.count(sid) && !pending_.count(sid)) {
        NoteLocked(d.alert_id, 1, 0, 0);
        pending_.emplace(sid, std::move(d));
      }
    } else if (op == "attempt") {
      auto it = pending_.find(sid);
      int64_t n = 0;
      std::string_view err;
      if (it != pending_.end()) {
        if (e["attempts"].get_int64().get(n) == simdjson::SUCCESS)
          it->second.attempts = static_cast<int>(n);
        if (e["error"].get_string().get(err) == simdjson::SUCCESS) it->second.last_error = err;
        DeliveryStatus& st = by_alert_[it->second.alert_id];
        st.attempts = std::max(st.attempts, it->second.attempts);
        st.last_error = it->second.last_error;
      }
    } else if (op == "done") {
      std::string_view result;
      bool delivered =
          e["result"].get_string().get(result) == simdjson::SUCCESS && result == "delivered";
      auto it = pending_.find(sid);
      if (it != pending_.end()) {
        int64_t n = 0;
        if (e["attempts"].get_int64().get(n) != simdjson::SUCCESS) n = 0;
        NoteFinishLocked(sid, it->second.alert_id, delivered, static_cast<int>(n));
        NoteLocked(it->second.alert_id, -1, delivered ? 1 : 0, delivered ? 0 : 1);
        if (!delivered) ++dead_;
        pending_.erase(it);
      }
      finished_ids_.insert(sid);
    }
    ++lines_;
    good = nl + 1;
  }
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd_ < 0) return Status::IoErrorFromErrno("open " + path_);
  if (good < data.size()) {
    // A torn or damaged tail: everything after the last good line is dropped.
    if (::ftruncate(fd_, static_cast<off_t>(good)) != 0)
      return Status::IoErrorFromErrno("truncate " + path_);
    if (fsync_ && ::fsync(fd_) != 0) return Status::IoErrorFromErrno("fsync " + path_);
  }
  if (::lseek(fd_, static_cast<off_t>(good), SEEK_SET) < 0)
    return Status::IoErrorFromErrno("seek " + path_);
  (void)SyncDir(std::filesystem::path(path_).parent_path().string());
  return Status::Ok();
}

void Outbox::NoteLocked(const std::string& alert_id, int dp, int dd, int dx) {
  DeliveryStatus& s = by_alert_[alert_id];
  s.pending += dp;
  s.delivered += dd;
  s.dead += dx;
}

Status Outbox::WriteLocked(int fd, const std::string& data) {
  return WriteAll(fd, data, write_fault_);
}

void Outbox::AppendLocked(const std::string& json, bool sync) {
  if (behind_) return;  // memory is the truth until CatchUp rewrites the file
  if (Status st = WriteLocked(fd_, Line(json)); !st.ok()) {
    // A full disk, typically. Nothing accepted is lost: memory holds it, and nothing more
    // is appended after what may be a partial line (recovery cuts it) until CatchUp
    // rewrites the whole file.
    behind_ = true;
    logging::Error(
        "alert outbox cannot write: deliveries are kept in memory and sent; the file is "
        "rewritten when the disk has space",
        {{"path", path_}, {"pending", std::to_string(pending_.size())}, {"error", st.ToString()}});
    return;
  }
  if (!sync) return;
  if (fsync_ && ::fdatasync(fd_) != 0) {
    // A failed fsync leaves the file in an unknown state: fatal (CONVENTIONS).
    logging::Error("alert outbox: fatal I/O error, aborting (fail-stop)",
                   {{"op", "fdatasync"}, {"path", path_}, {"error", std::strerror(errno)}});
    std::abort();
  }
  ++lines_;
}

Result<bool> Outbox::Add(const Delivery& delivery) {
  std::lock_guard lock(mu_);
  if (pending_.count(delivery.id) || finished_ids_.count(delivery.id)) return false;
  if (pending_.size() >= capacity_) {
    by_alert_[delivery.alert_id].dropped++;
    return Status::ResourceExhausted(fmt::format(
        "alert outbox full ({} deliveries pending; alerts.outbox_capacity)", pending_.size()));
  }
  AppendLocked(AddJson(delivery));
  NoteLocked(delivery.alert_id, 1, 0, 0);
  pending_.emplace(delivery.id, delivery);
  return true;
}

void Outbox::NoteFinishLocked(const std::string& id, const std::string& alert_id, bool delivered,
                              int attempts) {
  DeliveryStatus& st = by_alert_[alert_id];
  st.attempts = std::max(st.attempts, attempts);
  if (!delivered) return;
  // The error stays while another delivery of the alert is still failing.
  st.last_error.clear();
  for (const auto& [other, d] : pending_) {
    if (other != id && d.alert_id == alert_id && !d.last_error.empty())
      st.last_error = d.last_error;
  }
}

Status Outbox::RecordAttempt(const std::string& id, int attempts, const std::string& error) {
  std::lock_guard lock(mu_);
  auto it = pending_.find(id);
  if (it == pending_.end()) return Status::NotFound("no such delivery");
  it->second.attempts = attempts;
  it->second.last_error = error;
  DeliveryStatus& st = by_alert_[it->second.alert_id];
  st.attempts = std::max(st.attempts, attempts);
  st.last_error = error;
  JsonWriter w;
  w.BeginObject();
  w.Key("op");
  w.String("attempt");
  w.Key("id");
  w.String(id);
  w.Key("attempts");
  w.Int(attempts);
  w.Key("error");
  w.String(error);
  w.EndObject();
  // Attempt counts only bound retries across restarts; no fsync needed for them.
  AppendLocked(w.Take(), /*sync=*/false);
  return Status::Ok();
}

Status Outbox::Finish(const std::string& id, bool delivered, int attempts) {
  std::lock_guard lock(mu_);
  auto it = pending_.find(id);
  if (it == pending_.end()) return Status::NotFound("no such delivery");
  JsonWriter w;
  w.BeginObject();
  w.Key("op");
  w.String("done");
  w.Key("id");
  w.String(id);
  w.Key("result");
  w.String(delivered ? "delivered" : "dead");
  if (attempts > 0) {
    w.Key("attempts");
    w.Int(attempts);
  }
  w.EndObject();
  AppendLocked(w.Take());
  NoteFinishLocked(id, it->second.alert_id, delivered, attempts);
  NoteLocked(it->second.alert_id, -1, delivered ? 1 : 0, delivered ? 0 : 1);
  if (!delivered) ++dead_;
  pending_.erase(it);
  finished_ids_.insert(id);
  if (!behind_ && lines_ > kCompactMinLines && lines_ > 4 * (pending_.size() + 1)) {
    return CompactLocked();
  }
  return Status::Ok();
}

Status Outbox::CatchUp() {
  std::lock_guard lock(mu_);
  if (!behind_) return Status::Ok();
  // The ids finished since start stay known in memory (duplicates of re-derived
  // transitions are still dropped while running).
  std::unordered_set<std::string> finished = finished_ids_;
  JOULE_RETURN_IF_ERROR(CompactLocked());
  finished_ids_ = std::move(finished);
  behind_ = false;
  logging::Info("alert outbox written again: the deliveries kept in memory are durable",
                {{"path", path_}, {"pending", std::to_string(pending_.size())}});
  return Status::Ok();
}

bool Outbox::behind() const {
  std::lock_guard lock(mu_);
  return behind_;
}

void Outbox::SetWriteFaultForTest(std::function<int()> fault) {
  std::lock_guard lock(mu_);
  write_fault_ = std::move(fault);
}

Status Outbox::CompactLocked() {
  std::string tmp = path_ + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Status::IoErrorFromErrno("open " + tmp);
  std::string data;
  for (const auto& [id, d] : pending_) data += Line(AddJson(d));
  Status st = WriteLocked(fd, data);
  if (st.ok() && fsync_ && ::fsync(fd) != 0) st = Status::IoErrorFromErrno("fsync " + tmp);
  ::close(fd);
  if (st.ok() && ::rename(tmp.c_str(), path_.c_str()) != 0) {
    st = Status::IoErrorFromErrno("rename " + tmp);
  }
  if (!st.ok()) {
    ::unlink(tmp.c_str());  // it would hold space (a full disk is the usual cause)
    return st;
  }
  (void)SyncDir(std::filesystem::path(path_).parent_path().string());
  ::close(fd_);
  fd_ = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC, 0600);
  if (fd_ < 0) {
    behind_ = true;  // the file holds everything; appends wait for a CatchUp
    return Status::IoErrorFromErrno("open " + path_);
  }
  lines_ = pending_.size();
  // Finished ids are forgotten; a re-derived transition after this is rare and harmless
  // (at-least-once).
  finished_ids_.clear();
  return Status::Ok();
}

std::vector<Delivery> Outbox::Pending() const {
  std::lock_guard lock(mu_);
  std::vector<Delivery> out;
  for (const auto& [id, d] : pending_) out.push_back(d);
  return out;
}

std::optional<DeliveryStatus> Outbox::StatusOf(const std::string& alert_id) const {
  std::lock_guard lock(mu_);
  auto it = by_alert_.find(alert_id);
  if (it == by_alert_.end()) return std::nullopt;
  return it->second;
}

size_t Outbox::pending_count() const {
  std::lock_guard lock(mu_);
  return pending_.size();
}

uint64_t Outbox::dead_count() const {
  std::lock_guard lock(mu_);
  return dead_;
}

}  // namespace joule::alert

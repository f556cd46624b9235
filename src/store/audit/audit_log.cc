#include "store/audit/audit_log.h"

#include <fcntl.h>
#include <simdjson.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/json_writer.h"
#include "common/time_format.h"

namespace joule::store {
namespace {

Status Errno(std::string_view what, const std::string& path) {
  return Status::IoError(std::string(what) + " " + path + ": " + std::strerror(errno));
}

bool ActionMatches(const std::string& filter, const std::string& action) {
  if (filter.empty()) return true;
  if (filter.back() == '.') return action.compare(0, filter.size(), filter) == 0;
  return action == filter;
}

}  // namespace

AuditLog::AuditLog(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}

AuditLog::~AuditLog() {
  if (fd_ >= 0) ::close(fd_);
}

Result<std::unique_ptr<AuditLog>> AuditLog::Open(const std::string& path) {
  std::error_code ec;
  const std::filesystem::path p(path);
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path(), ec);
  if (ec)
    return Status::Internal("cannot create " + p.parent_path().string() + ": " + ec.message());
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return Errno("cannot open audit log", path);
  std::unique_ptr<AuditLog> log(new AuditLog(fd, path));
  JOULE_RETURN_IF_ERROR(log->Index());
  return log;
}

Status AuditLog::Index() {
  const off_t size = ::lseek(fd_, 0, SEEK_END);
  if (size < 0) return Errno("cannot size audit log", path_);
  std::string data(static_cast<size_t>(size), '\0');
  size_t got = 0;
  while (got < data.size()) {
    const ssize_t n = ::pread(fd_, data.data() + got, data.size() - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Errno("cannot read audit log", path_);
    got += static_cast<size_t>(n);
  }
  simdjson::ondemand::parser parser;
  size_t pos = 0;
  while (pos < data.size()) {
    const size_t nl = data.find('\n', pos);
    if (nl == std::string::npos) break;  // torn tail: cut below
    const std::string_view line(data.data() + pos, nl - pos);
    simdjson::padded_string padded(line);
    IndexEntry e{pos, static_cast<uint32_t>(line.size()), 0, {}, {}, {}};
    auto doc = parser.iterate(padded);
    std::string_view time, action, actor, target_id;
    const bool ok =
        !doc.error() && !doc["time"].get_string().get(time) &&
        !doc["actor"].get_string().get(actor) && !doc["action"].get_string().get(action) &&
        !doc["target"]["id"].get_string().get(target_id) && ParseRfc3339(time, &e.time_ns);
    if (!ok) {
      return Status::Corruption("audit log " + path_ + ": unreadable entry at byte " +
                                std::to_string(pos));
    }
    e.action.assign(action);
    e.actor.assign(actor);
    e.target_id.assign(target_id);
    index_.push_back(std::move(e));
    pos = nl + 1;
  }
  if (pos < data.size() && ::ftruncate(fd_, static_cast<off_t>(pos)) != 0) {
    return Errno("cannot cut the torn tail of", path_);
  }
  end_ = pos;
  return Status::Ok();
}

std::string AuditLog::Encode(uint64_t seq, const AuditEntry& entry) {
  JsonWriter w;
  w.BeginObject();
  w.Key("seq");
  w.Uint(seq);
  w.Key("time");
  w.String(FormatRfc3339Millis(entry.time_ns));
  w.Key("actor");
  w.String(entry.actor);
  w.Key("action");
  w.String(entry.action);
  w.Key("target");
  w.BeginObject();
  w.Key("kind");
  w.String(entry.target_kind);
  w.Key("id");
  w.String(entry.target_id);
  w.EndObject();
  w.Key("remote_address");
  w.String(entry.remote_address);
  w.Key("details");
  if (entry.details_json.empty()) {
    w.BeginObject();
    w.EndObject();
  } else {
    w.Raw(entry.details_json);
  }
  w.EndObject();
  return w.Take();
}

Status AuditLog::Append(const AuditEntry& entry) {
  std::lock_guard lock(mu_);
  std::string line = Encode(index_.size() + 1, entry);
  const uint32_t length = static_cast<uint32_t>(line.size());
  line.push_back('\n');
  size_t done = 0;
  while (done < line.size()) {
    const ssize_t n =
        ::pwrite(fd_, line.data() + done, line.size() - done, static_cast<off_t>(end_ + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const Status st = Errno("cannot append to", path_);
      (void)::ftruncate(fd_, static_cast<off_t>(end_));  // no half line left behind
      return st;
    }
    done += static_cast<size_t>(n);
  }
  if (::fdatasync(fd_) != 0) return Errno("cannot fdatasync", path_);
  index_.push_back({end_, length, entry.time_ns, entry.action, entry.actor, entry.target_id});
  end_ += line.size();
  return Status::Ok();
}

Result<AuditPage> AuditLog::Query(const AuditQuery& q) const {
  std::lock_guard lock(mu_);
  AuditPage page;
  for (size_t i = q.after; i < index_.size(); ++i) {
    const IndexEntry& e = index_[i];
    if (e.time_ns < q.from_ns || e.time_ns >= q.to_ns) continue;
    if (!ActionMatches(q.action, e.action)) continue;
    if (!q.actor.empty() && q.actor != e.actor) continue;
    if (!q.target_id.empty() && q.target_id != e.target_id) continue;
    if (page.lines.size() == q.limit) {
      page.next = i;  // the next page resumes at index i (limit >= 1, so i >= 1)
      return page;
    }
    std::string line(e.length, '\0');
    const ssize_t n = ::pread(fd_, line.data(), line.size(), static_cast<off_t>(e.offset));
    if (n != static_cast<ssize_t>(line.size())) return Errno("cannot read", path_);
    page.lines.push_back(std::move(line));
  }
  return page;
}

size_t AuditLog::size() const {
  std::lock_guard lock(mu_);
  return index_.size();
}

}  // namespace joule::store

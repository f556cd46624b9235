#include "alert/pending_alert_writes.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <simdjson.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
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

constexpr const char* kFileName = "pending_alert_writes.log";

}  // namespace

std::string PendingAlertToJson(const store::Alert& a) {
  JsonWriter w;
  w.BeginObject();
  w.Key("id");
  w.String(a.id);
  w.Key("rule_id");
  w.String(a.rule_id);
  w.Key("device_id");
  w.String(a.device_id);
  w.Key("owner_id");
  w.String(a.owner_id);
  w.Key("state");
  w.String(store::AlertStateName(a.state));
  w.Key("acked");
  w.Bool(a.acked);
  w.Key("snoozed_until_ns");
  if (a.snoozed_until_ns) {
    w.Int(*a.snoozed_until_ns);
  } else {
    w.Null();
  }
  w.Key("opened_at_ns");
  w.Int(a.opened_at_ns);
  w.Key("updated_at_ns");
  w.Int(a.updated_at_ns);
  w.Key("body");
  w.String(a.json);
  w.EndObject();
  return w.Take();
}

Result<store::Alert> PendingAlertFromJson(std::string_view json) {
  simdjson::dom::parser parser;
  simdjson::dom::element e;
  if (parser.parse(json.data(), json.size()).get(e) != simdjson::SUCCESS) {
    return Status::Corruption("not JSON");
  }
  store::Alert a;
  std::string_view s;
  auto str = [&](const char* k, std::string* out) {
    if (e[k].get_string().get(s) != simdjson::SUCCESS) return false;
    *out = std::string(s);
    return true;
  };
  std::string state;
  if (!str("id", &a.id) || !str("rule_id", &a.rule_id) || !str("device_id", &a.device_id) ||
      !str("owner_id", &a.owner_id) || !str("state", &state) || !str("body", &a.json)) {
    return Status::Corruption("a field is missing");
  }
  std::optional<store::AlertState> st = store::ParseAlertState(state);
  if (!st) return Status::Corruption("unknown state " + state);
  a.state = *st;
  bool acked = false;
  if (e["acked"].get_bool().get(acked) == simdjson::SUCCESS) a.acked = acked;
  int64_t n = 0;
  if (e["snoozed_until_ns"].get_int64().get(n) == simdjson::SUCCESS) a.snoozed_until_ns = n;
  if (e["opened_at_ns"].get_int64().get(n) != simdjson::SUCCESS) {
    return Status::Corruption("opened_at_ns is missing");
  }
  a.opened_at_ns = n;
  if (e["updated_at_ns"].get_int64().get(n) != simdjson::SUCCESS) {
    return Status::Corruption("updated_at_ns is missing");
  }
  a.updated_at_ns = n;
  return a;
}

Result<std::unique_ptr<PendingAlertWrites>> PendingAlertWrites::Open(const std::string& dir,
                                                                     bool fsync) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::IoError(fmt::format("cannot create {}: {}", dir, ec.message()));
  std::unique_ptr<PendingAlertWrites> p(
      new PendingAlertWrites((std::filesystem::path(dir) / kFileName).string(), fsync));
  JOULE_RETURN_IF_ERROR(p->Load());
  return p;
}

Status PendingAlertWrites::Load() {
  std::ifstream in(path_, std::ios::binary);
  if (!in) return Status::Ok();  // none
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string data = ss.str();
  size_t pos = 0;
  size_t line_no = 0;
  while (pos < data.size()) {
    size_t nl = data.find('\n', pos);
    if (nl == std::string::npos) nl = data.size();
    std::string_view line(data.data() + pos, nl - pos);
    pos = nl + 1;
    ++line_no;
    if (line.empty()) continue;
    Status bad = Status::Ok();
    if (line.size() < 10 || line[8] != ' ') {
      bad = Status::Corruption("not \"<crc> <json>\"");
    } else {
      char* end = nullptr;
      std::string hex(line.substr(0, 8));
      const uint32_t crc = static_cast<uint32_t>(std::strtoul(hex.c_str(), &end, 16));
      std::string_view json = line.substr(9);
      if (end != hex.c_str() + 8 || crc != crc32c::Value(json)) {
        bad = Status::Corruption("CRC mismatch");
      } else {
        Result<store::Alert> a = PendingAlertFromJson(json);
        if (a.ok()) {
          Put(*a);
        } else {
          bad = a.status();
        }
      }
    }
    if (!bad.ok()) {
      logging::Warn("damaged line in the pending alert writes skipped",
                    {{"path", path_}, {"line", std::to_string(line_no)}, {"error", bad.message()}});
    }
  }
  dirty_ = false;
  return Status::Ok();
}

void PendingAlertWrites::Put(const store::Alert& alert) {
  auto it = by_id_.find(alert.id);
  if (it != by_id_.end() && it->second.updated_at_ns > alert.updated_at_ns) return;
  by_id_[alert.id] = alert;
  size_.store(by_id_.size(), std::memory_order_relaxed);
  dirty_ = true;
}

void PendingAlertWrites::Erase(const std::string& id) {
  if (by_id_.erase(id) == 0) return;
  size_.store(by_id_.size(), std::memory_order_relaxed);
  dirty_ = true;
}

std::optional<store::Alert> PendingAlertWrites::Get(const std::string& id) const {
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return std::nullopt;
  return it->second;
}

std::vector<store::Alert> PendingAlertWrites::All() const {
  std::vector<store::Alert> out;
  out.reserve(by_id_.size());
  for (const auto& [id, a] : by_id_) out.push_back(a);
  std::stable_sort(out.begin(), out.end(), [](const store::Alert& a, const store::Alert& b) {
    return a.updated_at_ns < b.updated_at_ns;
  });
  return out;
}

Status PendingAlertWrites::Save() {
  if (!dirty_) return Status::Ok();
  const std::string dir = std::filesystem::path(path_).parent_path().string();
  if (by_id_.empty()) {
    if (::unlink(path_.c_str()) != 0 && errno != ENOENT)
      return Status::IoErrorFromErrno("unlink " + path_);
    (void)SyncDir(dir);
    dirty_ = false;
    return Status::Ok();
  }
  std::string data;
  for (const store::Alert& a : All()) {
    const std::string json = PendingAlertToJson(a);
    data += fmt::format("{:08x} {}\n", crc32c::Value(json), json);
  }
  const std::string tmp = path_ + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Status::IoErrorFromErrno("open " + tmp);
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      Status st = Status::IoErrorFromErrno("write " + tmp);
      ::close(fd);
      return st;
    }
    off += static_cast<size_t>(n);
  }
  if (fsync_ && ::fsync(fd) != 0) {
    // A failed fsync leaves the file in an unknown state: fatal (CONVENTIONS).
    logging::Error("fsync failed", {{"path", tmp}, {"error", std::strerror(errno)}});
    std::abort();
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path_.c_str()) != 0) return Status::IoErrorFromErrno("rename " + tmp);
  (void)SyncDir(dir);
  dirty_ = false;
  return Status::Ok();
}

}  // namespace joule::alert

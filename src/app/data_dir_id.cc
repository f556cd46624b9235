#include "app/data_dir_id.h"

#include <fmt/format.h>
#include <sys/random.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "app/processor_checkpoint.h"

namespace joule::app {
namespace {

constexpr size_t kIdBytes = 16;

bool IsId(const std::string& s) {
  if (s.size() != 2 * kIdBytes) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::string IdPath(const std::string& data_dir) {
  return (std::filesystem::path(data_dir) / "data_dir_id").string();
}

Result<std::string> NewIdAt(const std::string& path) {
  unsigned char buf[kIdBytes];
  if (getrandom(buf, sizeof buf, 0) != static_cast<ssize_t>(sizeof buf)) {
    return Status::IoError("getrandom failed");
  }
  std::string id;
  for (unsigned char b : buf) id += fmt::format("{:02x}", b);
  JOULE_RETURN_IF_ERROR(WriteFileAtomically(path, id + "\n"));
  return id;
}

Result<std::string> NewId(const std::string& data_dir) { return NewIdAt(IdPath(data_dir)); }

Result<std::string> LoadOrCreateIdAt(const std::string& path) {
  if (std::ifstream in(path, std::ios::binary); in) {
    std::stringstream text;
    text << in.rdbuf();
    std::string s = text.str();
    if (!s.empty() && s.back() == '\n') s.pop_back();
    if (!IsId(s)) return Status::Corruption(fmt::format("{} does not hold an id", path));
    return s;
  }
  return NewIdAt(path);
}

}  // namespace

Result<std::string> LoadOrCreateDataDirId(const std::string& data_dir) {
  return LoadOrCreateIdAt(IdPath(data_dir));
}

Result<std::string> LoadOrCreateWebhookIdSalt(const std::string& alerts_dir) {
  std::error_code ec;
  std::filesystem::create_directories(alerts_dir, ec);
  return LoadOrCreateIdAt((std::filesystem::path(alerts_dir) / "webhook_id_salt").string());
}

Status RenewDataDirId(const std::string& data_dir) { return NewId(data_dir).status(); }

}  // namespace joule::app

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

Result<std::string> NewId(const std::string& data_dir) {
  unsigned char buf[kIdBytes];
  if (getrandom(buf, sizeof buf, 0) != static_cast<ssize_t>(sizeof buf)) {
    return Status::IoError("getrandom failed");
  }
  std::string id;
  for (unsigned char b : buf) id += fmt::format("{:02x}", b);
  JOULE_RETURN_IF_ERROR(WriteFileAtomically(IdPath(data_dir), id + "\n"));
  return id;
}

}  // namespace

Result<std::string> LoadOrCreateDataDirId(const std::string& data_dir) {
  const std::string path = IdPath(data_dir);
  if (std::ifstream in(path, std::ios::binary); in) {
    std::stringstream text;
    text << in.rdbuf();
    std::string s = text.str();
    if (!s.empty() && s.back() == '\n') s.pop_back();
    if (!IsId(s)) return Status::Corruption(fmt::format("{} does not hold a data dir id", path));
    return s;
  }
  return NewId(data_dir);
}

Status RenewDataDirId(const std::string& data_dir) { return NewId(data_dir).status(); }

}  // namespace joule::app

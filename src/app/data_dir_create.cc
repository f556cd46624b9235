#include "app/data_dir_create.h"

#include <filesystem>

namespace joule::app {

Status CreateDataDir(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const bool existed = fs::exists(dir, ec);
  if (existed && !fs::is_directory(dir, ec)) {
    return Status::InvalidArgument(dir + " exists and is not a directory");
  }
  fs::create_directories(dir, ec);
  if (ec) return Status::IoError("cannot create " + dir + ": " + ec.message());
  if (!existed) fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace, ec);
  return Status::Ok();
}

std::string NoDataDirMessage(const std::string& dir) {
  std::error_code ec;
  if (std::filesystem::exists(dir, ec)) {
    return "cannot use data dir " + dir +
           ": it exists and is not a directory (point storage.data_dir elsewhere)";
  }
  return "no data dir at " + dir + " (is storage.data_dir right?)";
}

}  // namespace joule::app

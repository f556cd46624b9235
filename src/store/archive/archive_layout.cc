#include "store/archive/archive_layout.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <limits>
#include <system_error>

#include "common/clock.h"
#include "common/time_format.h"

namespace joule::store {
namespace {

bool ParseUint(std::string_view s, uint64_t* out) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size();
}

}  // namespace

int64_t ArchiveHourOf(int64_t t) {
  int64_t q = t / kNanosPerHour;
  if (t % kNanosPerHour != 0 && t < 0) --q;
  return q * kNanosPerHour;
}

std::string ArchiveHourDir(int64_t hour_start_ns) {
  int64_t days = hour_start_ns / kNanosPerDay;
  if (hour_start_ns % kNanosPerDay != 0 && hour_start_ns < 0) --days;
  const int64_t hour = (hour_start_ns - days * kNanosPerDay) / kNanosPerHour;
  int64_t y;
  unsigned m, d;
  CivilFromDays(days, &y, &m, &d);
  return fmt::format("dt={:04d}-{:02d}-{:02d}/hour={:02d}", y, m, d, hour);
}

std::optional<int64_t> ParseArchiveHourDir(std::string_view dt, std::string_view hour) {
  if (dt.size() != 13 || dt.substr(0, 3) != "dt=" || dt[7] != '-' || dt[10] != '-') {
    return std::nullopt;
  }
  if (hour.size() != 7 || hour.substr(0, 5) != "hour=") return std::nullopt;
  uint64_t y, m, d, h;
  if (!ParseUint(dt.substr(3, 4), &y) || !ParseUint(dt.substr(8, 2), &m) ||
      !ParseUint(dt.substr(11, 2), &d) || !ParseUint(hour.substr(5, 2), &h)) {
    return std::nullopt;
  }
  if (m < 1 || m > 12 || d < 1 || d > 31 || h > 23) return std::nullopt;
  return DaysFromCivil(static_cast<int64_t>(y), static_cast<unsigned>(m),
                       static_cast<unsigned>(d)) *
             kNanosPerDay +
         static_cast<int64_t>(h) * kNanosPerHour;
}

std::string ArchiveFileName(uint64_t seq) { return fmt::format("part-{:010d}.ndjson.zst", seq); }

std::optional<uint64_t> ParseArchiveFileName(std::string_view name) {
  constexpr std::string_view kPrefix = "part-", kSuffix = ".ndjson.zst";
  if (name.size() <= kPrefix.size() + kSuffix.size() || name.substr(0, kPrefix.size()) != kPrefix ||
      name.substr(name.size() - kSuffix.size()) != kSuffix) {
    return std::nullopt;
  }
  uint64_t seq;
  if (!ParseUint(name.substr(kPrefix.size(), name.size() - kPrefix.size() - kSuffix.size()),
                 &seq)) {
    return std::nullopt;
  }
  return seq;
}

Result<std::vector<ArchiveFile>> ListArchiveFiles(const std::string& root, int64_t from_ns,
                                                  int64_t to_ns) {
  namespace fs = std::filesystem;
  std::vector<ArchiveFile> out;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return out;
  const int64_t from_hour = ArchiveHourOf(from_ns);
  for (const auto& dt : fs::directory_iterator(root, ec)) {
    const std::string dt_name = dt.path().filename().string();
    if (dt_name.rfind("dt=", 0) != 0 || !dt.is_directory()) continue;
    std::error_code ec2;
    for (const auto& hour : fs::directory_iterator(dt.path(), ec2)) {
      std::optional<int64_t> start = ParseArchiveHourDir(dt_name, hour.path().filename().string());
      if (!start || *start < from_hour || *start >= to_ns || !hour.is_directory()) continue;
      std::error_code ec3;
      for (const auto& file : fs::directory_iterator(hour.path(), ec3)) {
        std::optional<uint64_t> seq = ParseArchiveFileName(file.path().filename().string());
        if (seq) out.push_back({*start, *seq, file.path().string()});
      }
      if (ec3)
        return Status::IoError(fmt::format("list {}: {}", hour.path().string(), ec3.message()));
    }
    if (ec2) return Status::IoError(fmt::format("list {}: {}", dt.path().string(), ec2.message()));
  }
  if (ec) return Status::IoError(fmt::format("list {}: {}", root, ec.message()));
  std::sort(out.begin(), out.end(), [](const ArchiveFile& a, const ArchiveFile& b) {
    return a.hour_start_ns != b.hour_start_ns ? a.hour_start_ns < b.hour_start_ns : a.seq < b.seq;
  });
  return out;
}

}  // namespace joule::store

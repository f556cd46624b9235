#include "app/latest_backlog_file.h"

#include <fmt/format.h>

#include <charconv>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "app/processor_checkpoint.h"

namespace joule::app {
namespace {

constexpr std::string_view kHeader = "joule-latest-backlog 1";
constexpr int64_t kNone = std::numeric_limits<int64_t>::max();

}  // namespace

std::string EncodeLatestBacklog(const std::vector<store::LatestCatchUp::Marker>& markers) {
  std::string out(kHeader);
  out += '\n';
  for (const auto& m : markers) {
    if (m.from_ns == kNone) {
      out += '-';
    } else {
      out += std::to_string(m.from_ns);
    }
    out += ' ';
    if (m.reading) out += 'r';
    if (m.newest) out += 'n';
    if (!m.reading && !m.newest) out += '-';
    out += ' ';
    out += m.device_id;
    out += '\n';
  }
  return out;
}

Status DecodeLatestBacklog(std::string_view data, std::vector<store::LatestCatchUp::Marker>* out) {
  out->clear();
  size_t line_no = 0;
  while (!data.empty()) {
    const size_t nl = data.find('\n');
    if (nl == std::string_view::npos) return Status::Corruption("latest backlog: truncated line");
    std::string_view line = data.substr(0, nl);
    data.remove_prefix(nl + 1);
    if (line_no++ == 0) {
      if (line != kHeader) return Status::Corruption("latest backlog: bad header");
      continue;
    }
    const size_t a = line.find(' ');
    const size_t b = a == std::string_view::npos ? a : line.find(' ', a + 1);
    if (b == std::string_view::npos || b + 1 >= line.size()) {
      return Status::Corruption(fmt::format("latest backlog: bad line {}", line_no));
    }
    store::LatestCatchUp::Marker m;
    std::string_view from = line.substr(0, a);
    std::string_view flags = line.substr(a + 1, b - a - 1);
    if (from == "-") {
      m.from_ns = kNone;
    } else {
      auto [p, ec] = std::from_chars(from.data(), from.data() + from.size(), m.from_ns);
      if (ec != std::errc() || p != from.data() + from.size()) {
        return Status::Corruption(fmt::format("latest backlog: bad time on line {}", line_no));
      }
    }
    if (flags != "-") {
      for (char f : flags) {
        if (f == 'r') {
          m.reading = true;
        } else if (f == 'n') {
          m.newest = true;
        } else {
          return Status::Corruption(fmt::format("latest backlog: bad flags on line {}", line_no));
        }
      }
    }
    m.device_id = std::string(line.substr(b + 1));
    out->push_back(std::move(m));
  }
  if (line_no == 0) return Status::Corruption("latest backlog: empty file");
  return Status::Ok();
}

Status WriteLatestBacklogFile(const std::string& path,
                              const std::vector<store::LatestCatchUp::Marker>& markers) {
  if (markers.empty()) {
    std::error_code ec;
    std::filesystem::remove(path, ec);
    if (ec) return Status::IoError(fmt::format("remove {}: {}", path, ec.message()));
    return Status::Ok();
  }
  return WriteFileAtomically(path, EncodeLatestBacklog(markers));
}

Result<std::vector<store::LatestCatchUp::Marker>> ReadLatestBacklogFile(const std::string& path) {
  std::vector<store::LatestCatchUp::Marker> markers;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (!std::filesystem::exists(path)) return markers;
    return Status::IoError(fmt::format("cannot read {}", path));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  Status st = DecodeLatestBacklog(ss.str(), &markers);
  if (!st.ok()) return Status::Corruption(fmt::format("{}: {}", path, st.message()));
  return markers;
}

}  // namespace joule::app

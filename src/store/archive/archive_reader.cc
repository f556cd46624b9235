#include "store/archive/archive_reader.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <simdjson.h>
#include <unistd.h>
#include <zstd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "common/time_format.h"
#include "store/archive/archive_layout.h"

namespace joule::store {
namespace {

namespace od = simdjson::ondemand;

struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
};

std::string_view TrimRight(std::string_view s) {
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\n' || s.back() == '\r' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

}  // namespace

Status ReadArchiveFile(const std::string& path,
                       const std::function<Status(std::string_view line)>& fn) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::IoError(fmt::format("open {}: {}", path, std::strerror(errno)));
  FdCloser closer{fd};
  std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> dctx(ZSTD_createDCtx(), ZSTD_freeDCtx);
  if (!dctx) return Status::Internal("zstd: cannot create a context");
  std::vector<char> in(ZSTD_DStreamInSize());
  std::vector<char> out(ZSTD_DStreamOutSize());
  std::string pending;  // an incomplete line
  size_t last_ret = 0;
  bool any_input = false;
  while (true) {
    ssize_t n = ::read(fd, in.data(), in.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::IoError(fmt::format("read {}: {}", path, std::strerror(errno)));
    }
    if (n == 0) break;
    any_input = true;
    ZSTD_inBuffer input{in.data(), static_cast<size_t>(n), 0};
    while (input.pos < input.size) {
      ZSTD_outBuffer output{out.data(), out.size(), 0};
      last_ret = ZSTD_decompressStream(dctx.get(), &output, &input);
      if (ZSTD_isError(last_ret)) {
        return Status::Corruption(fmt::format("{}: zstd: {}", path, ZSTD_getErrorName(last_ret)));
      }
      std::string_view chunk(out.data(), output.pos);
      size_t start = 0;
      while (true) {
        size_t nl = chunk.find('\n', start);
        if (nl == std::string_view::npos) {
          pending.append(chunk.substr(start));
          break;
        }
        if (pending.empty()) {
          JOULE_RETURN_IF_ERROR(fn(chunk.substr(start, nl - start)));
        } else {
          pending.append(chunk.substr(start, nl - start));
          JOULE_RETURN_IF_ERROR(fn(pending));
          pending.clear();
        }
        start = nl + 1;
      }
    }
  }
  if (any_input && last_ret != 0)
    return Status::Corruption(fmt::format("{}: truncated zstd stream", path));
  if (!pending.empty()) return Status::Corruption(fmt::format("{}: last row has no newline", path));
  return Status::Ok();
}

Status ParseArchiveRow(std::string_view row, model::Event* e) {
  thread_local od::parser parser;
  thread_local std::string buffer;
  buffer.assign(row);
  buffer.reserve(row.size() + simdjson::SIMDJSON_PADDING);
  auto bad = [&](std::string_view why) {
    return Status::InvalidArgument(fmt::format("archive row: {}", why));
  };
  e->device_id.clear();
  e->event_id.clear();
  e->meta_json.clear();
  e->metrics.clear();
  e->timestamp_ns = 0;
  e->received_at_ns = 0;
  try {
    od::document doc = parser.iterate(buffer.data(), buffer.size(), buffer.capacity());
    od::object obj = doc.get_object();
    bool has_ts = false;
    for (auto field : obj) {
      std::string_view key = field.unescaped_key();
      od::value v = field.value();
      if (key == "device_id") {
        e->device_id = std::string_view(v.get_string());
      } else if (key == "timestamp" || key == "received_at") {
        std::string_view s = v.get_string();
        int64_t ns;
        if (!ParseRfc3339(s, &ns)) return bad("bad time");
        if (key == "timestamp") {
          e->timestamp_ns = ns;
          has_ts = true;
        } else {
          e->received_at_ns = ns;
        }
      } else if (key == "event_id") {
        e->event_id = std::string_view(v.get_string());
      } else if (key == "metrics") {
        for (auto m : v.get_object()) {
          model::MetricSample sample;
          sample.name = std::string_view(m.unescaped_key());
          sample.value = m.value().get_double();
          e->metrics.push_back(std::move(sample));
        }
      } else if (key == "meta") {
        od::object meta = v.get_object();
        e->meta_json = TrimRight(std::string_view(meta.raw_json()));
      }
    }
    if (e->device_id.empty() || !has_ts || e->metrics.empty()) return bad("missing fields");
  } catch (const simdjson::simdjson_error& err) {
    return bad(err.what());
  }
  return Status::Ok();
}

Status ScanArchive(
    const std::string& root, int64_t from_ns, int64_t to_ns,
    const std::function<Status(const model::Event& event, std::string_view row)>& fn,
    const std::function<void(const ArchiveFile& file, size_t index, size_t total)>& on_file) {
  JOULE_ASSIGN_OR_RETURN(std::vector<ArchiveFile> files, ListArchiveFiles(root, from_ns, to_ns));
  model::Event event;
  for (size_t i = 0; i < files.size(); ++i) {
    if (on_file) on_file(files[i], i, files.size());
    JOULE_RETURN_IF_ERROR(ReadArchiveFile(files[i].path, [&](std::string_view line) -> Status {
      if (line.empty()) return Status::Ok();
      Status st = ParseArchiveRow(line, &event);
      if (!st.ok()) return Status::Corruption(fmt::format("{}: {}", files[i].path, st.message()));
      if (event.timestamp_ns < from_ns || event.timestamp_ns >= to_ns) return Status::Ok();
      return fn(event, line);
    }));
  }
  return Status::Ok();
}

}  // namespace joule::store

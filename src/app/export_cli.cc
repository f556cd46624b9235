#include "app/export_cli.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <set>
#include <vector>

#include "api/query_params.h"
#include "app/archive_retention_note.h"
#include "app/archive_seal.h"
#include "app/data_dir_create.h"
#include "app/data_dir_lock.h"
#include "app/metadata_open.h"
#include "common/clock.h"
#include "common/csv_text.h"
#include "common/time_format.h"
#include "store/archive/archive_layout.h"
#include "store/archive/archive_reader.h"
#include "store/metadata_store.h"

namespace joule::app {
namespace {

struct Row {
  model::Event event;
  std::string json;
  uint64_t seq;  // archive order, the tie-breaker
};

void AppendCsvField(std::string* out, std::string_view s) {
  const bool quote = s.find_first_of(",\"\n\r") != std::string_view::npos;
  if (quote) out->push_back('"');
  // Text a spreadsheet would run as a formula gets a leading apostrophe (common/csv_text.h).
  if (CsvTextNeedsGuard(s)) out->push_back('\'');
  if (!quote) {
    out->append(s);
    return;
  }
  for (char c : s) {
    if (c == '"') out->push_back('"');
    out->push_back(c);
  }
  out->push_back('"');
}

}  // namespace

int RunExport(const Config& config, const ExportCliOptions& options) {
  auto fail = [](const std::string& message, int code = 1) {
    fmt::print(stderr, "joule export: {}\n", message);
    return code;
  };
  // As the API reads them (api/query_params.h): RFC 3339 or epoch milliseconds, clamped to
  // [1900-01-01, 2170-01-01), so `--to 9999-12-31T23:59:59Z` is "everything from --from on"
  // (it was refused: int64 nanoseconds end in 2262; found by a black-box test).
  Result<int64_t> from_time = api::ParseTimeParam("--from", options.from);
  if (!from_time.ok()) return fail(from_time.status().message(), 2);
  Result<int64_t> to_time = api::ParseTimeParam("--to", options.to);
  if (!to_time.ok()) return fail(to_time.status().message(), 2);
  const int64_t from = *from_time, to = *to_time;
  if (to <= from) return fail("--to must be after --from", 2);
  if (options.format != "ndjson" && options.format != "csv") {
    return fail("--format must be ndjson or csv", 2);
  }
  if (!options.device_id.empty() && !options.owner_id.empty()) {
    return fail("give --device or --owner, not both", 2);
  }
  // Before the metadata store's open, which would create the data dir (or say only
  // "exists and is not a directory" under "metadata store:").
  if (!std::filesystem::is_directory(config.data_dir)) {
    return fail(NoDataDirMessage(config.data_dir));
  }
  std::set<std::string, std::less<>> devices;
  if (!options.device_id.empty()) devices.insert(options.device_id);
  if (!options.owner_id.empty()) {
    Result<std::unique_ptr<store::MetadataStore>> metadata = OpenMetadataStore(config);
    if (!metadata.ok()) return fail("metadata store: " + metadata.status().ToString());
    store::ListDevicesOptions lo;
    lo.owner_id = options.owner_id;
    while (true) {
      Result<store::DevicePage> page = (*metadata)->ListDevices(lo);
      if (!page.ok()) return fail("metadata store: " + page.status().ToString());
      for (const auto& d : page->devices) devices.insert(d.device_id);
      if (page->next_cursor.empty()) break;
      lo.after = page->next_cursor;
    }
    if (devices.empty()) return fail(fmt::format("owner {} has no devices", options.owner_id));
  }
  const bool filter = !options.device_id.empty() || !options.owner_id.empty();
  const std::string root = (std::filesystem::path(config.data_dir) / "archive").string();
  // A stopped server's log tail (after a kill -9, not yet in archive files) is archived
  // first, so that every acknowledged event is exported (found by a black-box test: the
  // events of the last minutes before a crash were missing). A running server holds the
  // data dir: its archiver publishes files every archive.max_file_age, and what it has not
  // published yet is not exported.
  std::optional<DataDirLock> dir_lock;
  // With the archive off, nothing is sealed and no event accepted meanwhile is in it: said
  // first, instead of the running server's "not yet written" note (they never will be).
  if (!config.archive_enabled) fmt::print(stderr, "joule export: {}\n", kArchiveDisabledNote);
  // Another offline command (an export, a replay) holding it is waited for: it was taken for a
  // running server, and the log tail was left out (found by a black-box test).
  if (Result<DataDirLock> locked = DataDirLock::AcquireWaiting(
          config.data_dir, "export", kDataDirLockWait,
          [](const std::string& m) { fmt::print(stderr, "joule export: {}\n", m); });
      locked.ok()) {
    dir_lock.emplace(std::move(*locked));
    if (config.archive_enabled) {
      Status sealed = SealLogTail(config, root);
      if (!sealed.ok()) return fail("archive: " + sealed.ToString());
    }
  } else if (locked.status().code() == StatusCode::kUnavailable) {
    if (config.archive_enabled) {
      fmt::print(stderr,
                 "joule export: a running server holds the data dir: events it has not yet "
                 "written to archive files (up to archive.max_file_age ago) are not included\n");
    }
  } else if (locked.status().code() == StatusCode::kPermissionDenied) {
    // A read-only data dir (a backup, a read-only mount): export only reads the archive
    // files; no server can be writing to it through this path, and the log tail cannot be
    // sealed into it.
    fmt::print(stderr,
               "joule export: the data dir is not writable ({}): exporting its archive files "
               "only (a crashed server's log tail, not yet in archive files, is not included)\n",
               locked.status().message());
  } else {
    return fail(locked.status().ToString());
  }
  if (std::string note = ArchiveRetentionNote(config, from, SystemClock::Default()->NowNanos());
      !note.empty()) {
    fmt::print(stderr, "joule export: {}\n", note);
  }
  const bool csv = options.format == "csv";

  // One hour at a time, sorted by event time: memory is bounded by an hour of events.
  std::vector<Row> hour_rows;
  uint64_t matched = 0;
  int64_t current_hour = 0;
  uint64_t seq = 0;
  std::string out;
  if (csv) out = "device_id,timestamp,received_at,event_id,metric,value,meta\n";
  // A failed write (a full disk, /dev/full, a closed pipe) ends the export with exit 1: it
  // exited 0 with a truncated file (found by a black-box test).
  int write_errno = 0;
  auto write_out = [&] {
    errno = 0;
    if (write_errno == 0 && !out.empty() &&
        std::fwrite(out.data(), 1, out.size(), stdout) != out.size()) {
      write_errno = errno != 0 ? errno : EIO;
    }
    out.clear();
  };
  auto flush = [&] {
    std::stable_sort(hour_rows.begin(), hour_rows.end(), [](const Row& a, const Row& b) {
      return std::tie(a.event.timestamp_ns, a.event.device_id, a.seq) <
             std::tie(b.event.timestamp_ns, b.event.device_id, b.seq);
    });
    for (const Row& r : hour_rows) {
      if (!csv) {
        out += r.json;
        out.push_back('\n');
      } else {
        for (const auto& m : r.event.metrics) {
          AppendCsvField(&out, r.event.device_id);
          out.push_back(',');
          out += FormatRfc3339Exact(r.event.timestamp_ns);
          out.push_back(',');
          out += FormatRfc3339Millis(r.event.received_at_ns);
          out.push_back(',');
          AppendCsvField(&out, r.event.event_id);
          out.push_back(',');
          out += m.name;
          out.push_back(',');
          fmt::format_to(std::back_inserter(out), "{}", m.value);
          out.push_back(',');
          AppendCsvField(&out, r.event.meta_json);
          out.push_back('\n');
        }
      }
      if (out.size() >= (1 << 16)) write_out();
    }
    hour_rows.clear();
  };
  Status st = store::ScanArchive(root, from, to, [&](const model::Event& e, std::string_view row) {
    if (filter && !devices.count(e.device_id)) return Status::Ok();
    ++matched;
    const int64_t hour = store::ArchiveHourOf(e.timestamp_ns);
    if (!hour_rows.empty() && hour != current_hour) flush();
    if (write_errno != 0) return Status::IoError("write failed");  // stops the scan
    current_hour = hour;
    hour_rows.push_back({e, std::string(row), seq++});
    return Status::Ok();
  });
  flush();
  write_out();
  if (write_errno == 0 && std::fflush(stdout) != 0) write_errno = errno != 0 ? errno : EIO;
  if (write_errno != 0) {
    return fail(fmt::format("writing to standard output failed: {} (the output is incomplete)",
                            std::strerror(write_errno)));
  }
  if (!st.ok()) return fail(st.ToString());
  // `--device` of an id the metadata store does not know and no rows: said, as `--owner` of
  // an unknown owner is (it was silent, exit 0; found by a black-box test). Exit 0 all the
  // same: a deleted device (or one an auth-disabled server took without registration) keeps
  // its archived events, and another range may have them.
  if (!options.device_id.empty() && matched == 0) {
    Result<std::unique_ptr<store::MetadataStore>> metadata = OpenMetadataStore(config);
    if (metadata.ok()) {
      Result<store::Device> device = (*metadata)->GetDevice(options.device_id);
      if (!device.ok() && device.status().code() == StatusCode::kNotFound) {
        fmt::print(stderr,
                   "joule export: device {} is not registered and has no archived events "
                   "from {} to {}\n",
                   options.device_id, FormatRfc3339Millis(from), FormatRfc3339Millis(to));
      }
    }
  }
  return 0;
}

}  // namespace joule::app

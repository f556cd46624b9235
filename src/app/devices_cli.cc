#include "app/devices_cli.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "api/device_fields.h"
#include "app/data_dir_create.h"
#include "app/data_dir_lock.h"
#include "app/metadata_open.h"
#include "common/csv_text.h"
#include "common/time_format.h"
#include "store/metadata_cache.h"
#include "store/metadata_time.h"

namespace joule::app {
namespace {

constexpr size_t kMaxErrorsShown = 100;
constexpr size_t kExportPage = 1000;

enum Column : unsigned {
  kDeviceId = 1u << 0,
  kOwnerId = 1u << 1,
  kName = 1u << 2,
  kModel = 1u << 3,
  kLocation = 1u << 4,
  kTimezone = 1u << 5,
  kInstalledAt = 1u << 6,
  kConfig = 1u << 7,
};

const std::pair<std::string_view, Column> kColumns[] = {
    {"device_id", kDeviceId},
    {"owner_id", kOwnerId},
    {"name", kName},
    {"model", kModel},
    {"location", kLocation},
    {"timezone", kTimezone},
    {"installed_at", kInstalledAt},
    {"config", kConfig},
};

constexpr std::string_view kHeader =
    "device_id,owner_id,name,model,location,timezone,installed_at,config";

struct CsvRecord {
  size_t line = 0;  // 1-based line where the record starts
  std::vector<std::string> fields;
};

// RFC 4180: fields separated by ',', records by CRLF or LF; a field may be enclosed in
// double quotes, inside which "" is a quote and commas and line breaks are literal. A
// UTF-8 byte order mark at the start is skipped; blank lines are skipped.
bool ParseCsvRecords(std::string_view text, std::vector<CsvRecord>* records, size_t* error_line,
                     std::string* error) {
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
  size_t i = 0, line = 1;
  const size_t n = text.size();
  while (i < n) {
    CsvRecord rec;
    rec.line = line;
    while (true) {  // one field per iteration
      std::string field;
      if (i < n && text[i] == '"') {
        ++i;
        while (true) {
          if (i >= n) {
            *error_line = rec.line;
            *error = "unterminated quoted field";
            return false;
          }
          char c = text[i++];
          if (c == '"') {
            if (i < n && text[i] == '"') {
              field += '"';
              ++i;
            } else {
              break;
            }
          } else {
            if (c == '\n') ++line;
            field += c;
          }
        }
        if (i < n && text[i] != ',' && text[i] != '\n' && text[i] != '\r') {
          *error_line = line;
          *error =
              "unexpected character after a closing quote (a quote inside a field must "
              "be doubled)";
          return false;
        }
      } else {
        while (i < n && text[i] != ',' && text[i] != '\n' && text[i] != '\r') {
          if (text[i] == '"') {
            *error_line = line;
            *error = "a quote inside an unquoted field (quote the field and double the quote)";
            return false;
          }
          field += text[i++];
        }
      }
      rec.fields.push_back(std::move(field));
      if (i < n && text[i] == ',') {
        ++i;
        continue;
      }
      break;
    }
    // End of record: CRLF, LF, lone CR, or end of text.
    if (i < n && text[i] == '\r') ++i;
    if (i < n && text[i] == '\n') ++i;
    ++line;
    const bool blank = rec.fields.size() == 1 && rec.fields[0].empty();
    if (!blank) records->push_back(std::move(rec));
  }
  return true;
}

bool SameInstalledAt(const store::Device& a, const store::Device& b) {
  return store::StoredMicrosFromNanos(a.installed_at_ns) ==
         store::StoredMicrosFromNanos(b.installed_at_ns);  // the database keeps microseconds
}

bool SameDevice(const store::Device& a, const store::Device& b) {
  // (Both branches string_views: `t.empty() ? "UTC" : t` is a temporary std::string, and
  // the view of it dangled — found by ASan.)
  auto tz = [](const std::string& t) -> std::string_view {
    return t.empty() ? std::string_view("UTC") : std::string_view(t);
  };
  return a.owner_id == b.owner_id && a.name == b.name && a.model == b.model &&
         a.location == b.location && tz(a.timezone) == tz(b.timezone) && SameInstalledAt(a, b) &&
         api::SameDeviceConfig(a.config_json, b.config_json);
}

// installed_at only when the row changes it: an export's empty cell for a stored value read
// as absent (out of range, store/metadata_time.h) does not clear that value when another
// column of the row changes.
store::DeviceUpdate UpdateFor(const store::Device& existing, const DeviceRow& row) {
  const store::Device& d = row.device;
  store::DeviceUpdate u;
  u.owner_id = d.owner_id;
  if (row.columns & kName) u.name = d.name;
  if (row.columns & kModel) u.model = d.model;
  if (row.columns & kLocation) u.location = d.location;
  if (row.columns & kTimezone) u.timezone = d.timezone;
  if ((row.columns & kInstalledAt) && !SameInstalledAt(existing, d)) {
    u.installed_at_ns = d.installed_at_ns;
  }
  if ((row.columns & kConfig) && !api::SameDeviceConfig(existing.config_json, d.config_json)) {
    u.config_json = d.config_json;  // "" clears it
  }
  return u;
}

// The existing device with the row's columns applied (to decide whether it changes).
store::Device Merged(const store::Device& existing, const DeviceRow& row) {
  store::Device m = existing;
  const store::Device& d = row.device;
  m.owner_id = d.owner_id;
  if (row.columns & kName) m.name = d.name;
  if (row.columns & kModel) m.model = d.model;
  if (row.columns & kLocation) m.location = d.location;
  if (row.columns & kTimezone) m.timezone = d.timezone;
  if (row.columns & kInstalledAt) m.installed_at_ns = d.installed_at_ns;
  if (row.columns & kConfig) m.config_json = d.config_json;
  return m;
}

void PrintErrors(const std::vector<std::string>& errors) {
  for (size_t i = 0; i < errors.size() && i < kMaxErrorsShown; ++i) {
    fmt::print(stderr, "{}\n", errors[i]);
  }
  if (errors.size() > kMaxErrorsShown) {
    fmt::print(stderr, "... and {} more errors\n", errors.size() - kMaxErrorsShown);
  }
}

}  // namespace

std::string RunningServerImportNote(const Config& config) {
  // PostgreSQL announces every change to the server (LISTEN/NOTIFY): nothing to say.
  if (config.metadata_backend != "sqlite") return "";
  std::error_code ec;
  if (!std::filesystem::is_directory(config.data_dir, ec)) return "";
  // Taken and dropped at once: the import does not keep a server from starting.
  Result<DataDirLock> locked = DataDirLock::Acquire(config.data_dir, "devices import");
  if (locked.ok() || locked.status().code() != StatusCode::kUnavailable) return "";
  // An export or a replay holds it: no server caches the devices.
  if (const std::string holder = ReadDataDirLockHolder(config.data_dir).command;
      !holder.empty() && holder != "serve") {
    return "";
  }
  const int64_t minutes = store::MetadataCacheOptions().positive_ttl_ns / kNanosPerMinute;
  return fmt::format(
      "warning: a running server holds the data dir {} (its lock {}/joule.lock); importing "
      "into its SQLite metadata store anyway: that server sees new devices within seconds, "
      "but changes to existing devices only when its metadata cache entries expire, within "
      "{} minutes. For an immediate effect use the HTTP API (POST /v1/devices, PATCH "
      "/v1/devices/{{id}}) or restart the server",
      config.data_dir, config.data_dir, minutes);
}

std::string CsvField(std::string_view raw) {
  // Text a spreadsheet would run as a formula gets a leading apostrophe, which the import
  // drops again (common/csv_text.h).
  const std::string guarded = CsvTextGuarded(raw);
  const std::string_view value = guarded;
  const bool quote = value.find_first_of(",\"\r\n") != std::string_view::npos ||
                     (!value.empty() && (value.front() == ' ' || value.back() == ' '));
  if (!quote) return std::string(value);
  std::string out = "\"";
  for (char c : value) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

std::vector<DeviceRow> ParseDevicesCsv(std::string_view csv, const std::string& name,
                                       std::vector<std::string>* errors) {
  std::vector<DeviceRow> rows;
  std::vector<CsvRecord> records;
  size_t error_line = 0;
  std::string error;
  if (!ParseCsvRecords(csv, &records, &error_line, &error)) {
    errors->push_back(fmt::format("{}:{}: {}", name, error_line, error));
    return rows;
  }
  if (records.empty()) {
    errors->push_back(fmt::format("{}:1: empty file: expected the header {}", name, kHeader));
    return rows;
  }
  // Header.
  const CsvRecord& header = records[0];
  std::vector<Column> layout;
  unsigned present = 0;
  for (const std::string& h : header.fields) {
    auto it = std::find_if(std::begin(kColumns), std::end(kColumns),
                           [&](const auto& c) { return c.first == h; });
    if (it == std::end(kColumns)) {
      errors->push_back(fmt::format(
          "{}:{}: unknown column \"{}\" (allowed: device_id, owner_id, name, model, location, "
          "timezone, installed_at, config)",
          name, header.line, h));
      continue;
    }
    if (present & it->second) {
      errors->push_back(fmt::format("{}:{}: column \"{}\" appears twice", name, header.line, h));
    }
    present |= it->second;
    layout.push_back(it->second);
  }
  for (unsigned required : {kDeviceId, kOwnerId}) {
    if (!(present & required)) {
      auto it = std::find_if(std::begin(kColumns), std::end(kColumns),
                             [&](const auto& c) { return c.second == required; });
      errors->push_back(
          fmt::format("{}:{}: the header has no \"{}\" column", name, header.line, it->first));
    }
  }
  if (!errors->empty()) return rows;

  std::map<std::string, size_t, std::less<>> first_line;
  for (size_t r = 1; r < records.size(); ++r) {
    const CsvRecord& rec = records[r];
    auto fail = [&](const std::string& message) {
      errors->push_back(fmt::format("{}:{}: {}", name, rec.line, message));
    };
    if (rec.fields.size() != layout.size()) {
      fail(fmt::format("expected {} fields, got {}", layout.size(), rec.fields.size()));
      continue;
    }
    DeviceRow row;
    row.line = rec.line;
    row.columns = present;
    store::Device& d = row.device;
    bool ok = true;
    for (size_t c = 0; c < layout.size(); ++c) {
      // An export guards text a spreadsheet would run (common/csv_text.h): one leading
      // apostrophe is dropped.
      const std::string v(CsvTextUnguarded(rec.fields[c]));
      Status st;
      switch (layout[c]) {
        case kDeviceId:
          d.device_id = v;
          st = api::ValidateDeviceIdField(v);
          break;
        case kOwnerId:
          d.owner_id = v;
          st = api::ValidateOwnerId(v);
          break;
        case kName:
          d.name = v;
          st = api::ValidateDeviceText("name", v);
          break;
        case kModel:
          d.model = v;
          st = api::ValidateDeviceText("model", v);
          break;
        case kLocation:
          d.location = v;
          st = api::ValidateDeviceText("location", v);
          break;
        case kTimezone:
          d.timezone = v.empty() ? "UTC" : v;
          st = api::ValidateTimezone(d.timezone);
          break;
        case kInstalledAt:
          if (!v.empty()) {
            Result<int64_t> t = api::ParseInstalledAt(v);
            if (t.ok()) {
              d.installed_at_ns = *t;
            } else {
              st = t.status();
            }
          }
          break;
        case kConfig:
          if (Result<std::string> config = api::ParseDeviceConfig(v); config.ok()) {
            d.config_json = std::move(*config);
          } else {
            st = config.status();
          }
          break;
      }
      if (!st.ok()) {
        fail(st.message());
        ok = false;
      }
    }
    if (!ok) continue;
    auto [it, inserted] = first_line.emplace(d.device_id, rec.line);
    if (!inserted) {
      fail(fmt::format("device_id \"{}\" already appears on line {}", d.device_id, it->second));
      continue;
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

Result<DevicesImportReport> ImportDevices(
    store::MetadataStore& metadata, const std::vector<DeviceRow>& rows, bool dry_run, int threads,
    std::vector<std::pair<std::string, std::string>>* tokens) {
  enum class Outcome { kNone, kCreated, kUpdated, kUnchanged, kFailed };
  std::vector<Outcome> outcomes(rows.size(), Outcome::kNone);
  std::vector<std::string> row_tokens(rows.size());
  std::vector<std::string> row_errors(rows.size());
  std::atomic<size_t> next{0};

  bool checking = true;  // the first pass only checks; read by the workers
  auto apply = [&](size_t i) {
    const bool dry_run = checking;
    const DeviceRow& row = rows[i];
    std::string last_error;  // of a create or update that lost a race
    for (int attempt = 0; attempt < 2; ++attempt) {
      Result<store::Device> existing = metadata.GetDevice(row.device.device_id);
      if (!existing.ok() && existing.status().code() != StatusCode::kNotFound) {
        row_errors[i] = existing.status().ToString();
        outcomes[i] = Outcome::kFailed;
        return;
      }
      if (existing.ok()) {
        if (SameDevice(*existing, Merged(*existing, row))) {
          outcomes[i] = Outcome::kUnchanged;
          return;
        }
        if (!dry_run) {
          Result<store::Device> updated =
              metadata.UpdateDevice(row.device.device_id, UpdateFor(*existing, row));
          if (!updated.ok()) {
            if (updated.status().code() == StatusCode::kNotFound) {  // deleted meanwhile
              last_error = updated.status().ToString();
              continue;
            }
            row_errors[i] = updated.status().ToString();
            outcomes[i] = Outcome::kFailed;
            return;
          }
        }
        outcomes[i] = Outcome::kUpdated;
        return;
      }
      // An id deleted from another owner stays theirs (CreateDevice refuses it): say so,
      // also in a dry run, rather than taking the refusal for a race.
      Result<std::optional<std::string>> deleted_owner =
          metadata.DeletedDeviceOwner(row.device.device_id);
      if (!deleted_owner.ok()) {
        row_errors[i] = deleted_owner.status().ToString();
        outcomes[i] = Outcome::kFailed;
        return;
      }
      if (*deleted_owner && **deleted_owner != row.device.owner_id) {
        row_errors[i] = store::DeletedDeviceIdTaken(row.device.device_id).ToString();
        outcomes[i] = Outcome::kFailed;
        return;
      }
      if (!dry_run) {
        std::string token;
        Result<store::Device> created =
            metadata.CreateDevice(row.device, tokens ? &token : nullptr);
        if (!created.ok()) {
          if (created.status().code() == StatusCode::kAlreadyExists) {  // raced
            last_error = created.status().ToString();
            continue;
          }
          row_errors[i] = created.status().ToString();
          outcomes[i] = Outcome::kFailed;
          return;
        }
        row_tokens[i] = std::move(token);
      }
      outcomes[i] = Outcome::kCreated;
      return;
    }
    row_errors[i] = "device changed concurrently; run the import again (" + last_error + ")";
    outcomes[i] = Outcome::kFailed;
  };

  auto run_all = [&] {
    next = 0;
    const int n = std::max(1, std::min<int>(threads, static_cast<int>(rows.size())));
    std::vector<std::thread> workers;
    for (int t = 0; t < n; ++t) {
      workers.emplace_back([&] {
        for (size_t i = next++; i < rows.size(); i = next++) apply(i);
      });
    }
    for (auto& w : workers) w.join();
    return Status::Ok();  // rows that failed are reported one by one; the others stay
  };
  // The checks --dry-run makes come first in a real import too: a row that would fail
  // (an id deleted from another owner) fails the import before anything is written — the
  // real run used to create the other rows, and write their tokens, then fail that one
  // (found by a black-box test).
  JOULE_RETURN_IF_ERROR(run_all());
  const bool refused = !dry_run && std::any_of(outcomes.begin(), outcomes.end(), [](Outcome o) {
    return o == Outcome::kFailed || o == Outcome::kNone;
  });
  if (!dry_run && !refused) {
    checking = false;
    std::fill(outcomes.begin(), outcomes.end(), Outcome::kNone);
    std::fill(row_errors.begin(), row_errors.end(), std::string());
    // One transaction on SQLite (one fsync instead of one per row); on PostgreSQL the
    // threads write concurrently. A failed commit writes nothing and fails the import.
    JOULE_RETURN_IF_ERROR(metadata.WriteBatch(run_all));
  }

  DevicesImportReport report;
  report.refused = refused;
  report.rows = rows.size();
  for (size_t i = 0; i < rows.size(); ++i) {
    switch (outcomes[i]) {
      case Outcome::kCreated:
        ++report.created;
        if (tokens && !row_tokens[i].empty()) {
          tokens->emplace_back(rows[i].device.device_id, row_tokens[i]);
        }
        break;
      case Outcome::kUpdated:
        ++report.updated;
        break;
      case Outcome::kUnchanged:
        ++report.unchanged;
        break;
      case Outcome::kFailed:
      case Outcome::kNone:
        report.errors.push_back(fmt::format("{}: device \"{}\": {}", rows[i].line,
                                            rows[i].device.device_id, row_errors[i]));
        break;
    }
  }
  return report;
}

namespace {

// `s` for a message: printable ASCII as it is, anything else as \xHH.
std::string Printable(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += fmt::format("\\x{:02x}", c);
    }
  }
  return out;
}

}  // namespace

Status ExportDevices(store::MetadataStore& metadata, const std::optional<std::string>& owner_id,
                     std::FILE* out, std::FILE* warnings, size_t* unimportable) {
  std::string buf = std::string(kHeader) + "\n";
  store::ListDevicesOptions options;
  options.owner_id = owner_id;
  options.limit = kExportPage;
  size_t line = 1;
  size_t refused = 0;
  while (true) {
    JOULE_ASSIGN_OR_RETURN(store::DevicePage page, metadata.ListDevices(options));
    for (const store::Device& d : page.devices) {
      const size_t row_start = buf.size();
      buf += CsvField(d.device_id);
      buf += ',';
      buf += CsvField(d.owner_id);
      buf += ',';
      buf += CsvField(d.name);
      buf += ',';
      buf += CsvField(d.model);
      buf += ',';
      buf += CsvField(d.location);
      buf += ',';
      buf += CsvField(d.timezone.empty() ? "UTC" : d.timezone);
      buf += ',';
      if (d.installed_at_ns) AppendRfc3339Millis(&buf, *d.installed_at_ns);
      buf += ',';
      buf += CsvField(d.config_json);  // JSON text, quoted (it holds quotes); "" = none
      buf += '\n';
      // Checked as import checks it: the row's own text, parsed as a file of one row.
      line += static_cast<size_t>(std::count(buf.begin() + row_start, buf.end(), '\n'));
      std::vector<std::string> problems;
      ParseDevicesCsv(std::string(kHeader) + "\n" + buf.substr(row_start), "", &problems);
      if (!problems.empty()) {
        ++refused;
        if (warnings != nullptr) {
          std::string why;
          for (std::string_view p : problems) {
            // ":LINE: message" (the file name is empty, the line that of the one-row file).
            if (size_t colon = p.find(':', 1); colon != std::string_view::npos) {
              p.remove_prefix(colon + 1);
            }
            while (p.starts_with(' ')) p.remove_prefix(1);
            why += (why.empty() ? "" : "; ") + Printable(p);
          }
          fmt::print(warnings, "joule: warning: line {}: device \"{}\": will not import: {}\n",
                     line, Printable(d.device_id), why);
        }
      }
    }
    if (std::fwrite(buf.data(), 1, buf.size(), out) != buf.size()) {
      return Status::IoError(fmt::format("write failed: {}", std::strerror(errno)));
    }
    buf.clear();
    if (page.next_cursor.empty()) break;
    options.after = page.next_cursor;
  }
  if (std::fflush(out) != 0)
    return Status::IoError(fmt::format("write failed: {}", std::strerror(errno)));
  if (refused > 0 && warnings != nullptr) {
    fmt::print(warnings,
               "joule: warning: {} exported {} not import as {} (above): written around the "
               "API (plain SQL); correct them in the database or in the file\n",
               refused, refused == 1 ? "row will" : "rows will",
               refused == 1 ? "it is" : "they are");
  }
  if (unimportable != nullptr) *unimportable = refused;
  return Status::Ok();
}

int RunDevicesImport(const Config& config, const DevicesImportOptions& options) {
  std::string text;
  {
    std::ifstream in(options.csv_path, std::ios::binary);
    if (!in) {
      fmt::print(stderr, "joule: cannot read {}: {}\n", options.csv_path, std::strerror(errno));
      return 2;
    }
    std::ostringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  }
  std::vector<std::string> errors;
  std::vector<DeviceRow> rows = ParseDevicesCsv(text, options.csv_path, &errors);
  if (!errors.empty()) {
    PrintErrors(errors);
    fmt::print(stderr, "joule: {} invalid; nothing imported ({} errors)\n", options.csv_path,
               errors.size());
    return 1;
  }

  // Open the tokens file before writing anything, so a bad path fails early.
  std::FILE* tokens_file = nullptr;
  // Only a regular file is made 0600 and fsynced: a FIFO, /dev/null or a shell's
  // >(...) pipe keeps its mode (chmod of /dev/null as root broke it for everyone) and has
  // nothing to sync (fsync is EINVAL there; both found by a black-box test).
  bool tokens_file_regular = false;
  const bool want_tokens = !options.tokens_out.empty() && !options.dry_run;
  if (want_tokens) {
    if (options.tokens_out == "-") {
      tokens_file = stdout;
    } else {
      int fd = ::open(options.tokens_out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      struct stat st {};
      if (fd >= 0 && ::fstat(fd, &st) != 0) {
        ::close(fd);
        fd = -1;
      }
      tokens_file_regular = fd >= 0 && S_ISREG(st.st_mode);
      // An existing file keeps its mode on open: tokens are secrets, so 0600 in any case
      // (a world-readable tokens file was found by a black-box test).
      if (tokens_file_regular && ::fchmod(fd, 0600) != 0) {
        ::close(fd);
        fd = -1;
      }
      if (fd < 0 || !(tokens_file = ::fdopen(fd, "w"))) {
        fmt::print(stderr, "joule: cannot write {}: {}\n", options.tokens_out,
                   std::strerror(errno));
        if (fd >= 0) ::close(fd);
        return 2;
      }
    }
    // The header is written (and synced) before any device is created: a full disk or
    // /dev/full fails here, with nothing imported, instead of after the devices exist and
    // their one-time tokens are lost (found by a black-box test).
    errno = 0;
    constexpr std::string_view kTokensHeader = "device_id,token\n";
    if (std::fwrite(kTokensHeader.data(), 1, kTokensHeader.size(), tokens_file) !=
            kTokensHeader.size() ||
        std::fflush(tokens_file) != 0 ||
        (tokens_file_regular && ::fsync(::fileno(tokens_file)) != 0)) {
      const int err = errno != 0 ? errno : EIO;
      if (tokens_file != stdout) std::fclose(tokens_file);
      fmt::print(stderr, "joule: cannot write {}: {}; nothing imported\n",
                 options.tokens_out == "-" ? "standard output" : options.tokens_out,
                 std::strerror(err));
      return 2;
    }
  }

  if (!options.dry_run) {
    if (std::string note = RunningServerImportNote(config); !note.empty()) {
      fmt::print(stderr, "joule devices import: {}\n", note);
    }
  }
  Result<std::unique_ptr<store::MetadataStore>> metadata = OpenMetadataStore(config);
  if (!metadata.ok()) {
    std::error_code ec;
    if (config.metadata_backend == "sqlite" && config.metadata_url.empty() &&
        std::filesystem::exists(config.data_dir, ec) &&
        !std::filesystem::is_directory(config.data_dir, ec)) {
      // (SQLite's open creates the data dir: said as serve and export say it)
      fmt::print(stderr, "joule: {}\n", NoDataDirMessage(config.data_dir));
    } else {
      fmt::print(stderr, "joule: cannot open the metadata store ({}): {}\n",
                 config.metadata_backend, metadata.status().ToString());
    }
    if (tokens_file && tokens_file != stdout) std::fclose(tokens_file);
    return 1;
  }
  std::vector<std::pair<std::string, std::string>> tokens;
  Result<DevicesImportReport> report = ImportDevices(
      **metadata, rows, options.dry_run, options.threads, want_tokens ? &tokens : nullptr);
  int code = 0;
  // Whatever was created, its tokens are written (they exist nowhere else).
  if (tokens_file) {
    std::string out;
    for (const auto& [id, token] : tokens) out += CsvField(id) + "," + token + "\n";
    errno = 0;
    const bool ok = std::fwrite(out.data(), 1, out.size(), tokens_file) == out.size() &&
                    std::fflush(tokens_file) == 0 &&
                    (!tokens_file_regular || ::fsync(::fileno(tokens_file)) == 0);
    const int err = errno != 0 ? errno : EIO;
    if (tokens_file != stdout) std::fclose(tokens_file);
    if (!ok) {
      // The devices exist; their tokens exist nowhere else. A new token per device is the
      // way back (the old one was never seen, so nothing that works is revoked).
      std::string ids;
      for (size_t i = 0; i < tokens.size() && i < 20; ++i) {
        ids += (i ? ", " : "") + tokens[i].first;
      }
      if (tokens.size() > 20) ids += fmt::format(", … ({} in all)", tokens.size());
      fmt::print(stderr,
                 "joule: writing {} failed: {}: the {} devices created have no usable token; "
                 "give each a new one with POST /v1/devices/{{id}}/token (admin; CONTRACT "
                 "§3): {}\n",
                 options.tokens_out, std::strerror(err), tokens.size(), ids);
      code = 1;
    }
  }
  if (!report.ok()) {
    fmt::print(stderr, "joule: import failed: {}\n", report.status().ToString());
    return 1;
  }
  std::vector<std::string> failures;
  for (const std::string& e : report->errors) failures.push_back(options.csv_path + ":" + e);
  PrintErrors(failures);
  if (report->refused) {
    fmt::print(stderr,
               "joule: nothing imported: {} of the {} rows would fail (above; the others: {} to "
               "create, {} to update, {} unchanged); fix them and run the import again\n",
               report->errors.size(), report->rows, report->created, report->updated,
               report->unchanged);
    return 1;
  }
  fmt::print(stderr, "joule: {}{} rows: {} created, {} updated, {} unchanged, {} failed\n",
             options.dry_run ? "dry run: " : "", report->rows, report->created, report->updated,
             report->unchanged, report->errors.size());
  if (report->created > 0 && !want_tokens && !options.dry_run) {
    fmt::print(stderr,
               "joule: the {} new devices have no token yet: pass --tokens-out FILE, or rotate "
               "with POST /v1/devices/{{id}}/token\n",
               report->created);
  }
  if (!report->errors.empty()) code = 1;
  return code;
}

int RunDevicesExport(const Config& config, const std::optional<std::string>& owner_id) {
  if (owner_id) {
    Status st = api::ValidateOwnerId(*owner_id);
    if (!st.ok()) {
      fmt::print(stderr, "joule: --owner: {}\n", st.message());
      return 2;
    }
  }
  // A command that only reads creates nothing: on a data dir that does not exist, export
  // printed the CSV header, exited 0 and created the dir and an empty metadata.db (found by a
  // black-box test). As `joule export` and `joule replay` say it.
  if (config.metadata_backend == "sqlite") {
    std::error_code ec;
    if (config.metadata_url.empty() && !std::filesystem::is_directory(config.data_dir, ec)) {
      fmt::print(stderr, "joule: {}\n", NoDataDirMessage(config.data_dir));
      return 1;
    }
    Result<store::MetadataStoreOptions> options = MetadataStoreOptionsFrom(config);
    if (options.ok() && !std::filesystem::exists(options->url, ec)) {
      fmt::print(stderr,
                 "joule: no metadata store at {} (is {} right? `joule serve` and `joule devices "
                 "import` create it)\n",
                 options->url, config.metadata_url.empty() ? "storage.data_dir" : "metadata.url");
      return 1;
    }
  }
  Result<std::unique_ptr<store::MetadataStore>> metadata = OpenMetadataStore(config);
  if (!metadata.ok()) {
    fmt::print(stderr, "joule: cannot open the metadata store ({}): {}\n", config.metadata_backend,
               metadata.status().ToString());
    return 1;
  }
  Status st = ExportDevices(**metadata, owner_id, stdout, stderr);
  if (!st.ok()) {
    // In the words every command uses for its stdout (docs/OPERATIONS.md; found by a
    // black-box test: it said "export failed: io_error: write failed: …").
    constexpr std::string_view kWriteFailed = "write failed: ";
    if (st.code() == StatusCode::kIoError && st.message().rfind(kWriteFailed, 0) == 0) {
      fmt::print(stderr, "joule: writing to standard output failed: {}\n",
                 st.message().substr(kWriteFailed.size()));
    } else {
      fmt::print(stderr, "joule: export failed: {}\n", st.ToString());
    }
    return 1;
  }
  return 0;
}

}  // namespace joule::app

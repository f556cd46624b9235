// `joule devices import FILE` and `joule devices export`: device metadata in bulk, as CSV
// (RFC 4180) with the header
//   device_id,owner_id,name,model,location,timezone,installed_at,config
// (config: the device's config object as JSON text, a quoted CSV field such as
// "{""whole_home"":true}"; empty = none) working directly on the configured metadata store (same
// config and environment as `joule serve`; the server may be running).
//
// Import:
// - Columns are matched by header name, in any order; device_id and owner_id are
//   required, the others optional. An empty timezone is "UTC"; an empty installed_at or
//   config is none. Every row is validated like POST /v1/devices before anything is
//   written (config: a JSON object under the API's limits, api::ParseDeviceConfig); any
//   error is reported as FILE:LINE: message and nothing is written.
// - Idempotent: a new device is created, an existing one is updated to the row's values
//   (only the CSV's columns: a file without a config column leaves config untouched), an
//   unchanged one is left alone (config compared as JSON: PostgreSQL respaces it). Running
//   the same file twice changes nothing the second time.
// - New devices get a device token only when `tokens_out` is set: the tokens are written
//   there as CSV `device_id,token` (mode 0600; "-" = stdout). They are never printed
//   otherwise; without it new devices have no token until POST /v1/devices/{id}/token.
// - With SQLite, a running server notices changed rows after its cache TTL (new devices
//   within seconds); with PostgreSQL, at once (LISTEN/NOTIFY). Import does not refuse to
//   run next to a server (that is supported, as export and replay work next to one), but
//   on SQLite it says so when the data dir's lock shows a running server
//   (RunningServerImportNote).
#pragma once

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "app/config.h"
#include "common/status.h"
#include "store/metadata_store.h"

namespace joule::app {

struct DevicesImportOptions {
  std::string csv_path;
  std::string tokens_out;  // "" = issue no tokens; "-" = stdout
  bool dry_run = false;    // validate and report what would change, write nothing
  int threads = 4;         // concurrent writes (PostgreSQL uses a connection pool)
};

struct DevicesImportReport {
  size_t rows = 0;
  size_t created = 0;
  size_t updated = 0;
  size_t unchanged = 0;
  std::vector<std::string> errors;  // "LINE: device \"ID\": message"
  // A real import whose check pass (what --dry-run does) failed a row: nothing was
  // written; `errors` are the check's, the counts what the import would have done.
  bool refused = false;
};

// Parses and validates `csv` (the file's text; `name` labels error messages). Rows come
// back in file order with their line numbers; `errors` gets every problem found.
struct DeviceRow {
  size_t line = 0;
  unsigned columns = 0;  // which CSV columns the file has (the others are left alone)
  store::Device device;
};
std::vector<DeviceRow> ParseDevicesCsv(std::string_view csv, const std::string& name,
                                       std::vector<std::string>* errors);

// Applies validated rows to `metadata`. Tokens of created devices go to `tokens`
// (device_id, token) when non-null. A real import first checks every row against the
// store as --dry-run does (an id deleted from another owner, a store error) and writes
// nothing when any fails (report.refused). A row failing while written (the store gone
// meanwhile, a concurrent change) still leaves the rows written before it: they are
// counted, and their tokens returned.
Result<DevicesImportReport> ImportDevices(store::MetadataStore& metadata,
                                          const std::vector<DeviceRow>& rows, bool dry_run,
                                          int threads,
                                          std::vector<std::pair<std::string, std::string>>* tokens);

// Writes the header and every device (one owner's when set), ordered by device_id.
// Rows an import would refuse (written by plain SQL: an id outside the id syntax, a time
// zone that is not IANA, …) are written too — the export is also a copy of the table — and
// each is named on `warnings` when non-null ("will not import: …", with the export's line);
// `*unimportable` (when non-null) gets their number.
Status ExportDevices(store::MetadataStore& metadata, const std::optional<std::string>& owner_id,
                     std::FILE* out, std::FILE* warnings = nullptr, size_t* unimportable = nullptr);

// With SQLite metadata and a running server on config.data_dir (its lock is held): the
// warning import prints (the server sees changes to existing devices only after its cache
// TTL; the HTTP API takes effect at once). "" otherwise (PostgreSQL, no server, no dir).
std::string RunningServerImportNote(const Config& config);

// RFC 4180 field: quoted when it holds a comma, quote, CR or LF (or leading/trailing space).
std::string CsvField(std::string_view value);

// The subcommands; return the process exit code (0 ok, 1 failed, 2 usage/config).
int RunDevicesImport(const Config& config, const DevicesImportOptions& options);
int RunDevicesExport(const Config& config, const std::optional<std::string>& owner_id);

}  // namespace joule::app

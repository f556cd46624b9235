// `joule replay` (docs/formats/archive.md, "Replay"): on a stopped server's data dir it
// replays in-process; when a running server holds the data dir (the history store's
// RocksDB LOCK), or with --server, it asks that server to do it (POST /v1/admin/replay),
// follows the job (GET /v1/admin/replay/{id}) and prints its progress.
#pragma once

#include <string>

#include "app/config.h"

namespace joule::app {

struct ReplayCliOptions {
  std::string from, to;  // RFC 3339
  std::string device_id;
  std::string owner_id;
  bool dry_run = false;
  // Remote mode: the server's base URL (http://host:port or https://host:port) and admin
  // token. Without --server, a locked data dir means a running server: its URL comes from
  // server.http_listen (https when server.tls_cert_file and tls_key_file are set) and the
  // token from --admin-token, auth.admin_token or {data_dir}/admin_token (a 401/403 names the
  // source of the token sent). Over https the server's
  // certificate is trusted when it is the one in server.tls_cert_file, or when it verifies
  // against the system's CAs plus `cacert` with the host name checked (client_tls.h).
  std::string server;
  std::string admin_token;
  std::string cacert;
};

// Returns the process exit code: 0 done, 1 failed, 2 bad arguments, 3 the data dir is
// locked and no server could be asked.
int RunReplay(const Config& config, const ReplayCliOptions& options);

}  // namespace joule::app

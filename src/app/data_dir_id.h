// The data dir's identity: a random id created once in `{data_dir}/data_dir_id` (32 hex
// digits and a newline, written atomically). The Redis latest store keeps it as the value of
// `agg:instance`, so that a Redis last written by another data dir (or by an older, deleted
// one) is told apart from one that holds this data dir's records (src/store/README.md).
#pragma once

#include <string>

#include "common/status.h"

namespace joule::app {

// Reads the id; creates the file with a new random id when it does not exist. Corruption
// when the file holds anything else than an id.
Result<std::string> LoadOrCreateDataDirId(const std::string& data_dir);

// Replaces the id with a new random one. For a run without Redis (latest.backend = memory):
// Redis misses what is emitted meanwhile, and the next run with Redis must rewrite it as it
// would a Redis last written by another data dir.
Status RenewDataDirId(const std::string& data_dir);

// The webhook-id salt of this data dir's alerts (`{alerts_dir}/webhook_id_salt`, created
// once, never renewed, unlike the data dir id: a transition re-derived after a restart must
// get the webhook-id it had; alert/alert_engine.h AlertEngineOptions::webhook_id_salt).
Result<std::string> LoadOrCreateWebhookIdSalt(const std::string& alerts_dir);

}  // namespace joule::app

// Opening the configured metadata store (CONTRACT §5 metadata.backend / metadata.url):
// shared by `joule serve` and the `joule devices` subcommands, so both reach the same
// database from the same config and environment.
#pragma once

#include <memory>

#include "app/config.h"
#include "common/metrics.h"
#include "common/status.h"
#include "store/metadata_cache.h"
#include "store/metadata_store.h"

namespace joule::app {

// SQLite: metadata.url, else {data_dir}/metadata.db. PostgreSQL: metadata.url (required).
Result<store::MetadataStoreOptions> MetadataStoreOptionsFrom(const Config& config);

// Opens the store (creating data_dir for SQLite) and applies migrations.
Result<std::unique_ptr<store::MetadataStore>> OpenMetadataStore(const Config& config);

// The store behind a MetadataCache, as the server uses it. `metrics` may be null.
Result<std::unique_ptr<store::MetadataCache>> OpenCachedMetadata(const Config& config,
                                                                 MetricsRegistry* metrics);

}  // namespace joule::app

#include "app/metadata_open.h"

#include <chrono>
#include <filesystem>
#include <system_error>

#include "app/data_dir_create.h"

namespace joule::app {

Result<store::MetadataStoreOptions> MetadataStoreOptionsFrom(const Config& config) {
  store::MetadataStoreOptions o;
  JOULE_ASSIGN_OR_RETURN(o.backend, store::ParseMetadataBackend(config.metadata_backend));
  o.lookup_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::nanoseconds(config.metadata_lookup_timeout_ns));
  o.query_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::nanoseconds(config.metadata_query_timeout_ns));
  if (o.backend == store::MetadataBackend::kPostgres) {
    o.url = config.metadata_url;
    if (o.url.empty()) {
      return Status::InvalidArgument("metadata.backend = \"postgres\" needs metadata.url");
    }
  } else {
    o.url = config.metadata_url.empty()
                ? (std::filesystem::path(config.data_dir) / "metadata.db").string()
                : config.metadata_url;
  }
  return o;
}

Result<std::unique_ptr<store::MetadataStore>> OpenMetadataStore(const Config& config) {
  JOULE_ASSIGN_OR_RETURN(store::MetadataStoreOptions o, MetadataStoreOptionsFrom(config));
  if (o.backend == store::MetadataBackend::kSqlite) {
    if (config.metadata_url.empty()) {
      // The data dir (`joule devices import` before any server ran: the first step of a
      // restore) is made as `joule serve` makes it: 0700 (found by a black-box test: 0755).
      JOULE_RETURN_IF_ERROR(CreateDataDir(config.data_dir));
    } else if (std::filesystem::path parent = std::filesystem::path(o.url).parent_path();
               !parent.empty()) {
      std::error_code ec;
      std::filesystem::create_directories(parent, ec);
      if (ec) return Status::IoError("cannot create " + parent.string() + ": " + ec.message());
    }
  }
  JOULE_ASSIGN_OR_RETURN(std::unique_ptr<store::MetadataStore> raw, store::OpenMetadataStore(o));
  JOULE_RETURN_IF_ERROR(raw->Migrate());
  return raw;
}

Result<std::unique_ptr<store::MetadataCache>> OpenCachedMetadata(const Config& config,
                                                                 MetricsRegistry* metrics) {
  JOULE_ASSIGN_OR_RETURN(std::unique_ptr<store::MetadataStore> raw, OpenMetadataStore(config));
  store::MetadataCacheOptions co;
  co.metrics = metrics;
  return std::make_unique<store::MetadataCache>(std::move(raw), co);
}

}  // namespace joule::app

#include "store/metadata_store.h"

#include <utility>

#include "store/postgres/postgres_metadata_store.h"
#include "store/sqlite/sqlite_metadata_store.h"

namespace joule::store {

std::string_view AlertStateName(AlertState state) {
  switch (state) {
    case AlertState::kPending:
      return "pending";
    case AlertState::kFiring:
      return "firing";
    case AlertState::kResolved:
      return "resolved";
  }
  return "pending";
}

std::optional<AlertState> ParseAlertState(std::string_view name) {
  if (name == "pending") return AlertState::kPending;
  if (name == "firing") return AlertState::kFiring;
  if (name == "resolved") return AlertState::kResolved;
  return std::nullopt;
}

Status DeletedDeviceIdTaken(std::string_view device_id) {
  return Status::AlreadyExists(
      "device id " + std::string(device_id) +
      " belonged to a deleted device of another owner, whose history is kept under it; "
      "register the device under another id");
}

bool IsMetadataDiskFull(const Status& status) {
  return status.code() == StatusCode::kUnavailable &&
         std::string_view(status.message()).starts_with(kMetadataDiskFull);
}

Result<std::vector<Device>> MetadataStore::GetDevices(
    std::span<const std::string_view> device_ids) {
  std::vector<Device> found;
  for (std::string_view id : device_ids) {
    Result<Device> d = GetDevice(id);
    if (d.ok()) {
      found.push_back(std::move(*d));
    } else if (d.status().code() != StatusCode::kNotFound) {
      return d.status();
    }
  }
  return found;
}

Status MetadataStore::DevicesRegistered(std::span<const std::string_view> device_ids,
                                        std::vector<bool>* registered) {
  registered->assign(device_ids.size(), false);
  for (size_t i = 0; i < device_ids.size(); ++i) {
    Result<bool> known = DeviceRegistered(device_ids[i]);
    if (!known.ok()) return known.status();
    (*registered)[i] = *known;
  }
  return Status::Ok();
}

uint64_t MetadataStore::Subscribe(Listener listener) {
  std::lock_guard<std::mutex> lock(listeners_mu_);
  uint64_t id = next_subscription_++;
  listeners_.emplace_back(id, std::move(listener));
  return id;
}

void MetadataStore::Unsubscribe(uint64_t subscription) {
  std::lock_guard<std::mutex> lock(listeners_mu_);
  std::erase_if(listeners_, [&](const auto& entry) { return entry.first == subscription; });
}

void MetadataStore::Publish(const MetadataChange& change) {
  std::lock_guard<std::mutex> lock(listeners_mu_);
  for (auto& [id, listener] : listeners_) listener(change);
}

Result<MetadataBackend> ParseMetadataBackend(std::string_view name) {
  if (name == "sqlite") return MetadataBackend::kSqlite;
  if (name == "postgres" || name == "postgresql") return MetadataBackend::kPostgres;
  return Status::InvalidArgument("metadata.backend must be \"sqlite\" or \"postgres\", not \"" +
                                 std::string(name) + "\"");
}

Result<std::unique_ptr<MetadataStore>> OpenMetadataStore(const MetadataStoreOptions& options) {
  const Clock* clock = options.clock ? options.clock : SystemClock::Default();
  std::unique_ptr<MetadataStore> store;
  switch (options.backend) {
    case MetadataBackend::kSqlite: {
      JOULE_ASSIGN_OR_RETURN(store, SqliteMetadataStore::Open(options.url, clock));
      break;
    }
    case MetadataBackend::kPostgres: {
      MetadataStoreOptions with_clock = options;
      with_clock.clock = clock;
      JOULE_ASSIGN_OR_RETURN(store, PostgresMetadataStore::Open(with_clock));
      break;
    }
  }
  return store;
}

Result<std::unique_ptr<MetadataStore>> OpenMetadataStore(MetadataBackend backend,
                                                         std::string url_or_path) {
  MetadataStoreOptions options;
  options.backend = backend;
  options.url = std::move(url_or_path);
  return OpenMetadataStore(options);
}

}  // namespace joule::store

#include "app/archive_seal.h"

#include <fmt/format.h>

#include <filesystem>
#include <memory>

#include "app/archiver.h"
#include "app/log_partitions.h"
#include "common/clock.h"
#include "log/log.h"

namespace joule::app {

// Log retention is off in this process: it must not delete what the server's processors
// have not consumed.
Status SealLogTail(const Config& config, const std::string& archive_dir, uint64_t* log_records) {
  if (log_records != nullptr) *log_records = 0;
  log::LogOptions lo;
  lo.dir = (std::filesystem::path(config.data_dir) / "log").string();
  if (!std::filesystem::is_directory(lo.dir)) return Status::Ok();
  JOULE_ASSIGN_OR_RETURN(lo.partitions, ResolveLogPartitions(config));
  lo.segment_bytes = config.log_segment_bytes;
  lo.fsync = config.durability == "fsync";
  lo.retention_bytes = 0;
  lo.retention_age_ns = 0;
  lo.retention_interval_ns = 0;
  lo.clock = SystemClock::Default();
  // As the server's: bytes recovery cuts are copied there first.
  lo.quarantine_dir = (std::filesystem::path(config.data_dir) / "quarantine").string();
  SetLogRecoveryOptions(config, lo.partitions, &lo);
  JOULE_ASSIGN_OR_RETURN(std::unique_ptr<log::Log> log, log::Log::Open(lo, nullptr));
  if (log_records != nullptr) {
    for (uint32_t p = 0; p < lo.partitions; ++p) *log_records += log->DurableEnd(p).value;
  }
  ArchiverOptions ao;
  ao.dir = archive_dir;
  ao.max_file_bytes = config.archive_max_file_bytes;
  ao.max_file_age_ns = config.archive_max_file_age_ns;
  ao.retention_ns = 0;  // the server enforces archive retention
  Archiver archiver(ao, log.get(), SystemClock::Default(), nullptr);
  JOULE_RETURN_IF_ERROR(archiver.Start());
  JOULE_RETURN_IF_ERROR(archiver.Stop());  // archives everything durable and seals it
  if (archiver.LagRecords() > 0) {
    return Status::IoError(
        fmt::format("{} log records could not be archived (see the log)", archiver.LagRecords()));
  }
  return Status::Ok();
}

}  // namespace joule::app

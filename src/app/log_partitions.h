// The log's partition count for a data dir: `storage.log_partitions`, where 0 (the
// default) means "the existing log's count, else one partition per processor thread".
//
// Why 2 (= stream.processor_threads) for a new log rather than the earlier default of 8: with
// fsync every group-commit round costs one fdatasync per partition file an ingest batch
// touches (each HTTP batch touches all of them), so fewer partitions mean fewer device
// round trips and less kernel CPU per round, while each processor thread still reads its
// own partition (docs/benchmarks/HISTORY.md, "Session 6: fsync on vs off").
#pragma once

#include <cstdint>
#include <vector>

#include "app/config.h"
#include "common/status.h"
#include "log/log.h"

namespace joule::app {

// An existing log (`{data_dir}/log/p-NNN`) keeps its count: records were placed by
// hash(device_id) % count. InvalidArgument when `storage.log_partitions` is set (non-zero)
// and differs from the existing log's count.
Result<uint32_t> ResolveLogPartitions(const Config& config);

// A data dir that has run (a processor checkpoint, the archive's checkpoint or
// `engine_epoch`) needs its log: InvalidArgument naming `{data_dir}/log` when that
// directory is missing or holds no partition directory (moved or deleted), or when a
// partition directory holds no segment file (`rm log/p-*/*.seg`) while a consumer's
// checkpoint read records of it, before the log's opener would create a new, empty one. A
// new data dir passes, and so does one a restore seeded (empty partition directories,
// checkpoints at offset 0).
Status CheckLogPresent(const Config& config);

// The log options every opener of a data dir's log shares for its recovery: the durable
// checkpoints of its consumers (the processors' `checkpoints/processor-*.ckpt`, the
// archiver's `archive/_archiver.ckpt`), so that a tail cut below an offset they passed is
// refused as damage to acknowledged records, and `storage.log_damage` (docs/OPERATIONS.md,
// "A damaged log segment"). A checkpoint that cannot be read is left out (its consumer
// reports it when it starts).
void SetLogRecoveryOptions(const Config& config, uint32_t partitions, log::LogOptions* options);

}  // namespace joule::app

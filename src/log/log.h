// Log: the embedded, partitioned, durable segment log that sits between ingest and the
// processors (the Kinesis of the reference design). On-disk format, recovery and retention
// rules: docs/formats/log.md.
//
// Contract:
//  * Partitions are independent; offsets within a partition are 0, 1, 2, … without gaps.
//  * Append() is thread-safe and never blocks on I/O. After it returns OK the records are in
//    memory and have offsets; after their DurableCallback fires they are fsynced (or, with
//    `fsync = false`, written to the kernel) and visible to readers.
//  * One background writer thread performs all I/O and group-commits: every batch waiting
//    when it wakes (plus, with fsync, those arriving within `group_commit_window_ns` after
//    it found work) shares one fdatasync per touched segment file. With fsync, up to
//    `max_rounds_in_flight` rounds have their fdatasyncs in flight at once (the next round
//    is written while the previous one syncs); callbacks fire round by round, in order. A failed
//    fsync, or a failed write other than a full disk, aborts the process (fail-stop). A full disk
//    (ENOSPC/EDQUOT on write or segment creation), or no file descriptor for the next
//    segment (EMFILE/ENFILE), refuses the round instead: its bytes are cut off again and its
//    callbacks get Unavailable; later rounds try again. A refused round stores nothing: a
//    segment that a round would take past segment_bytes rolls before the round writes.
//  * Readers only ever see durable records.
//  * Retention deletes whole sealed segments and never a record at or above the committed
//    offset of any registered consumer.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "log/read_batch.h"
#include "log/record_batch.h"
#include "model/log_offset.h"

namespace joule {
class Clock;
class MetricsRegistry;
}  // namespace joule

namespace joule::log {

class FileLayer;

struct LogRecord {
  model::LogOffset offset;
  int64_t append_time_ns = 0;  // wall time at which Append accepted the batch
  std::string payload;
};

struct LogOptions {
  std::string dir;  // created if missing
  uint32_t partitions = 8;
  uint64_t segment_bytes = 64ull << 20;
  bool fsync = true;             // false = durability "none": callbacks fire after write(2)
  uint64_t retention_bytes = 0;  // per partition; 0 = unlimited
  int64_t retention_age_ns = 0;  // 0 = forever
  uint64_t max_pending_bytes = 64ull << 20;
  // With fsync: when the writer wakes to less than 1 MiB of pending appends it waits this
  // long for more before committing, so that concurrent batches share one fdatasync per
  // partition file instead of each paying for its own (every ingest batch touches most
  // partitions). Adds at most this much to an acknowledgement's latency. 0 = commit at once:
  // batches that arrive while `max_rounds_in_flight` rounds sync still share the next round
  // (the default since session 13; src/log/README.md, "Group-commit window"). Flush() and
  // EndGroupCommitWindow() do not wait for it.
  int64_t group_commit_window_ns = 0;
  // With fsync: how many written rounds may have their fdatasyncs in flight at once. With
  // 2, batches that arrive while a round is syncing are written and start their own
  // fdatasyncs without waiting for it (pipelined group commit); callbacks still fire round
  // by round, oldest first. 1 = a round starts only after the previous one is durable.
  uint32_t max_rounds_in_flight = 2;
  // With fsync: how far past its last record the active segment is kept pre-written with
  // zeros (written and fdatasynced by a background thread, never past segment_bytes), so
  // that a round's fdatasync finds the file's size and blocks unchanged and writes only the
  // data, not the inode too (docs/formats/log.md, "Pre-written tail"). Until the segment
  // holds this many bytes of records the distance is its records' size (at least 64 KiB).
  // The next pre-write starts when less than half of it is left. 0 = off: the file grows
  // with every round.
  uint64_t prewrite_bytes = 8ull << 20;
  const Clock* clock = nullptr;  // nullptr = SystemClock::Default()
  // How often the writer thread enforces retention (steady time). 0 = only on explicit
  // EnforceRetention() calls.
  int64_t retention_interval_ns = 30'000'000'000;
  // Also CRC-check every sealed segment on Open (the active one is always checked).
  bool verify_on_open = false;
  // The writer path's file I/O; nullptr = PosixFileLayer(). Tests inject faults here.
  FileLayer* file_layer = nullptr;
  // Where a reader's damaged segment is copied when it meets a bad record at run time
  // (docs/RELIABILITY.md, "Run-time corruption"), and where recovery copies every byte
  // range it cuts before cutting it; "" = report only, copy nothing.
  std::string quarantine_dir;

  // Recovery of the active segment's tail (docs/formats/log.md, "Recovery"). A consumer's
  // durable checkpoint (a processor's, the archiver's): per partition, the next offset it
  // will process. Every record below it was acknowledged, so a tail cut below it is damage
  // to acknowledged records, not a torn tail.
  struct ConsumerCheckpoint {
    std::string name;               // for messages: the checkpoint file
    std::vector<uint64_t> offsets;  // by partition; a missing entry = none
  };
  std::vector<ConsumerCheckpoint> checkpoints;
  // What recovery does with damage to acknowledged records in an active segment's tail:
  // kRefuse (Open fails with Corruption, naming the segment, byte, offset and what
  // follows; nothing is changed) or kCut (an operator's explicit choice: the damaged
  // bytes are copied to quarantine_dir and cut, and offsets a checkpoint already passed
  // are filled with empty records, which consumers skip as undecodable, so that no
  // checkpoint is ahead of the log). A torn tail (unacknowledged records) is always cut.
  enum class TailDamage { kRefuse, kCut };
  TailDamage tail_damage = TailDamage::kRefuse;
};

// A record that failed validation when a reader met it after Open (a segment damaged on
// disk while the log was open). Reported once per (partition, offset); see
// Log::corruptions().
struct CorruptionReport {
  uint32_t partition = 0;
  std::string segment;      // the damaged file
  std::string quarantined;  // its copy under LogOptions::quarantine_dir ("" = none)
  uint64_t offset = 0;      // the first record that failed validation
  uint64_t byte = 0;        // its byte position in the segment
  // Records from `offset` to the end of that segment cannot be read (acknowledged: they
  // were below the durable end). Readers stop here; nothing after it is processed.
  uint64_t records_unreadable = 0;
  int64_t detected_ns = 0;  // wall time
  std::string error;
};

struct RecoveryReport {
  struct Cut {
    uint32_t partition;
    std::string segment;  // file path
    uint64_t bytes_cut;
    // The copy of the bytes cut under LogOptions::quarantine_dir ("" = none was set).
    std::string quarantined;
    // Why the cut is not a torn tail ("" = a torn tail): damage to acknowledged records
    // cut with LogOptions::TailDamage::kCut.
    std::string damage;
    uint64_t filler_records = 0;  // empty records written for offsets a checkpoint passed
  };
  std::vector<Cut> cuts;
  uint64_t records_recovered = 0;  // records retained in all partitions after recovery
};

// The partition count of the log in `dir` as found on disk: one past the highest partition
// directory (`p-NNN`); 0 when `dir` does not exist or holds no partition directory. Lets a
// caller open an existing log with the count its records were placed by (hash % count).
Result<uint32_t> ExistingPartitions(const std::string& dir);

// Reads one partition sequentially. Not thread-safe: one per consumer thread.
// REQUIRES: does not outlive the Log that made it.
class LogReader {
 public:
  virtual ~LogReader() = default;
  // Appends up to max_records durable records at or after the reader's position to *out;
  // returns the number read (0 = caught up). On an error nothing is appended: records read
  // before it are returned first, the error by the next call. NotFound if the position has been
  // deleted by retention; Corruption if a record fails validation (also reported to the log's
  // corruptions(), once per record, and its segment quarantined). A reader that returned
  // Corruption returns it again on every call: the caller stops reading the partition.
  virtual Result<size_t> Next(size_t max_records, ReadBatch* out) = 0;
  // The same, into records that own their payloads (tests and tools; a consumer that reads
  // all day uses a ReadBatch, which allocates nothing per record).
  Result<size_t> Next(size_t max_records, std::vector<LogRecord>* out) {
    ReadBatch batch;
    Result<size_t> n = Next(max_records, &batch);
    for (LogRecordView r : batch) {
      out->push_back(LogRecord{r.offset, r.append_time_ns, std::string(r.payload)});
    }
    return n;
  }
  // The offset of the next record Next() will return.
  virtual model::LogOffset position() const = 0;
};

// The log seam. Open() returns the segment-file implementation; tests of other subsystems
// may substitute their own.
class Log {
 public:
  using DurableCallback = std::function<void(Status status, model::LogOffset first)>;

  // Opens (creating if needed) the log in options.dir and recovers it (see the format doc).
  // `metrics` may be null (metrics are then kept privately); it must outlive the Log.
  static Result<std::unique_ptr<Log>> Open(const LogOptions& options, MetricsRegistry* metrics);

  // Flushes pending appends (fsync), fires their callbacks and stops the writer thread.
  virtual ~Log() = default;

  virtual uint32_t partitions() const = 0;

  // Thread-safe, never blocks on I/O. On OK, `cb` is called exactly once from the writer
  // thread: with OK after all `records` are durable (contiguous offsets starting at
  // `first`, in order), or with Unavailable when the disk was full or the next segment
  // could not be created for want of file descriptors (nothing of the batch is stored: a
  // refused round is cut off again, and segments roll before a round writes). Callbacks of
  // one partition fire in offset order. Keep callbacks cheap (they post work elsewhere); they must
  // not call Flush() or destroy the Log. `cb` may be empty. Unavailable (and nothing appended) when
  // the pending, not yet durable bytes would exceed max_pending_bytes; a batch is always admitted
  // when nothing is pending. InvalidArgument for a bad partition, an empty batch or a record over
  // 16 MiB.
  virtual Status Append(uint32_t partition, std::vector<std::string> records,
                        DurableCallback cb) = 0;
  // Same, with the records packed in one buffer (RecordBatch): the same records, offsets
  // and bytes in the log as Append of the batch's records one string each.
  virtual Status AppendBatch(uint32_t partition, RecordBatch batch, DurableCallback cb) = 0;

  // One partition's records of an AppendGroup.
  struct PartitionBatch {
    uint32_t partition = 0;
    RecordBatch records;
  };
  using GroupCallback = std::function<void(Status status)>;
  // Appends batches to several partitions (each at most once) as one unit, all or none:
  // they are admitted together (Unavailable and nothing appended when their bytes would go
  // over max_pending_bytes), written in the same round, and when that round is refused
  // (disk full, no file descriptors) every one of them is refused and none is stored —
  // also the ones of partitions that had room. `cb` is called once, from the writer thread:
  // OK when all are durable, else the error. An ingest request is one group, so a 503 means
  // that nothing of it was stored (docs/CONTRACT.md §1). InvalidArgument as for Append, or
  // for no batch or a partition twice.
  virtual Status AppendGroup(std::vector<PartitionBatch> batches, GroupCallback cb) = 0;

  // One past the last durable record.
  virtual model::LogOffset DurableEnd(uint32_t partition) const = 0;
  // The first retained record (== DurableEnd when the partition is empty).
  virtual model::LogOffset StartOffset(uint32_t partition) const = 0;
  // Blocks up to timeout_ns until DurableEnd(partition) > offset; returns whether it is.
  virtual bool WaitForData(uint32_t partition, model::LogOffset offset, int64_t timeout_ns) = 0;

  // A reader positioned at `from`, which must be in [StartOffset, end of appended records].
  virtual Result<std::unique_ptr<LogReader>> NewReader(uint32_t partition,
                                                       model::LogOffset from) = 0;

  // Registers a consumer (processor, archiver). Call before its first SetConsumerOffset;
  // until it reports an offset for a partition, nothing is deleted from that partition.
  // `partitions`: the partitions it reads (empty: all). A consumer holds back retention
  // only in those (a processor reads its own partitions; holding back the others, whose
  // offsets it never reports, kept every segment for ever with two processors).
  virtual void RegisterConsumer(const std::string& name,
                                const std::vector<uint32_t>& partitions = {}) = 0;
  // `committed` = the next offset the consumer will process; everything below it may go.
  // An unknown name is registered implicitly.
  virtual void SetConsumerOffset(const std::string& name, uint32_t partition,
                                 model::LogOffset committed) = 0;

  // Deletes what retention allows now (see the format doc). Also runs periodically.
  virtual Status EnforceRetention() = 0;
  // Waits until everything appended before the call is durable and its callbacks have run.
  // Commits what is queued at once: the group-commit window is not waited out (a window of
  // minutes made a shutdown wait that long). REQUIRES: not called from a DurableCallback.
  virtual Status Flush() = 0;
  // From now on the writer commits at once, as with group_commit_window_ns = 0, and a window
  // being waited ends now. For shutdown: appends in flight (an HTTP request waiting for its
  // answer) are acknowledged without waiting for the window. Thread-safe; cannot be undone.
  virtual void EndGroupCommitWindow() {}
  virtual const RecoveryReport& recovery_report() const = 0;
  // Damaged records met by readers since Open, oldest first (thread-safe).
  virtual std::vector<CorruptionReport> corruptions() const { return {}; }
  // Whether appends are being refused (disk full, no file descriptors): since the first
  // refused round (wall clock), with its error, until a round succeeds again (thread-safe).
  struct WriteFault {
    bool refusing = false;
    int64_t since_ns = 0;
    std::string error;
  };
  virtual WriteFault write_fault() const { return {}; }
};

}  // namespace joule::log

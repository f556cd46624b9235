// SegmentLog: the file-backed implementation of Log (docs/formats/log.md).
//
// Threads: callers of Append/readers/retention, plus one writer thread that owns all
// writes to segment files and fires durability callbacks. `mu_` guards the queue, the
// segment lists and next offsets; durable ends and start offsets are also mirrored in
// atomics so that DurableEnd()/StartOffset() never take a lock.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/metrics.h"
#include "log/file_layer.h"
#include "log/log.h"
#include "log/quarantine.h"
#include "log/sync_pool.h"

namespace joule::log {

class SegmentLog final : public Log {
 public:
  static Result<std::unique_ptr<SegmentLog>> Open(const LogOptions& options,
                                                  MetricsRegistry* metrics);
  ~SegmentLog() override;

  uint32_t partitions() const override { return options_.partitions; }
  Status Append(uint32_t partition, std::vector<std::string> records, DurableCallback cb) override;
  Status AppendBatch(uint32_t partition, RecordBatch batch, DurableCallback cb) override;
  Status AppendGroup(std::vector<PartitionBatch> batches, GroupCallback cb) override;
  model::LogOffset DurableEnd(uint32_t partition) const override;
  model::LogOffset StartOffset(uint32_t partition) const override;
  bool WaitForData(uint32_t partition, model::LogOffset offset, int64_t timeout_ns) override;
  Result<std::unique_ptr<LogReader>> NewReader(uint32_t partition, model::LogOffset from) override;
  void RegisterConsumer(const std::string& name,
                        const std::vector<uint32_t>& partitions = {}) override;
  void SetConsumerOffset(const std::string& name, uint32_t partition,
                         model::LogOffset committed) override;
  Status EnforceRetention() override;
  Status Flush() override;
  void EndGroupCommitWindow() override;
  const RecoveryReport& recovery_report() const override { return report_; }
  std::vector<CorruptionReport> corruptions() const override { return quarantine_->reports(); }
  WriteFault write_fault() const override;

  // For readers: a damaged record met at run time (quarantine.h).
  void ReportCorruption(CorruptionReport report) { quarantine_->Report(std::move(report)); }

  // For readers: the segment holding `offset`. NotFound when retention deleted it.
  static constexpr uint64_t kOpenEnd = std::numeric_limits<uint64_t>::max();
  struct SegmentRef {
    uint64_t base = 0;
    uint64_t end = kOpenEnd;  // one past its last offset; kOpenEnd for the active segment
    std::string path;
  };
  Result<SegmentRef> FindSegment(uint32_t partition, uint64_t offset) const;
  // For readers: changes whenever unsynced bytes of the partition were cut off (disk full).
  uint64_t CutEpoch(uint32_t partition) const {
    return parts_[partition]->cut_epoch.load(std::memory_order_acquire);
  }

 private:
  static constexpr int64_t kUnknownTime = std::numeric_limits<int64_t>::min();

  struct Segment {
    uint64_t base = 0;
    uint64_t bytes = 0;                     // on disk (active: as of the last round)
    int64_t newest_time_ns = kUnknownTime;  // max append time; unknown until scanned
  };

  struct Partition {
    uint32_t id = 0;
    std::string dir;
    // Guarded by mu_.
    std::deque<Segment> segments;  // by base offset; back() is the active segment
    uint64_t next_offset = 0;      // next offset Append assigns
    // Lock-free mirrors for readers (written under mu_).
    std::atomic<uint64_t> durable_end{0};
    std::atomic<uint64_t> start_offset{0};
    // Bumped (before the next durable end is published) whenever a refused round's
    // unsynced bytes are cut off: readers drop bytes they may have buffered past the
    // durable end, since those offsets are then written again with other records.
    std::atomic<uint64_t> cut_epoch{0};
    // Writer thread only (and Open, before the writer starts).
    int fd = -1;  // the active segment, open for positional writes
    std::string active_path;
    uint64_t active_bytes = 0;  // including `buffer`
    // The active segment's size on disk: its records written so far plus the pre-written
    // zero tail after them (docs/formats/log.md, "Pre-written tail").
    uint64_t file_bytes = 0;
    bool prewrite_off = false;  // a pre-write met a full disk: none until the next roll
    // The pre-write in flight, zero-filling [file_bytes, prewrite_to) (at most one per
    // partition; the writer writes nothing at or past file_bytes until it is reaped).
    // Guarded by mu_.
    bool prewrite_busy = false;
    bool prewrite_done = false;
    int prewrite_error = 0;
    uint64_t prewrite_to = 0;
    int64_t active_newest_ns = kUnknownTime;
    uint64_t written_end = 0;   // one past the last offset handed to write()/buffered
    uint64_t synced_bytes = 0;  // bytes of the active segment known durable
    uint64_t synced_end = 0;    // one past the last durable offset
    std::string buffer;         // encoded records not yet written
    uint64_t unsynced_records = 0;
    uint64_t unsynced_bytes = 0;
    bool touched = false;
    uint64_t round_bytes = 0;  // the framed bytes of the round being written
  };

  struct Request {
    uint32_t partition;
    uint64_t first;
    int64_t append_time_ns;
    uint64_t bytes;
    RecordBatch records;
    DurableCallback cb;
    std::chrono::steady_clock::time_point enqueued;
    // The callback of a group of one batch (AppendGroup's common case: one device's
    // events), kept as given instead of wrapped in a shared group count.
    GroupCallback group_cb;

    void Fire(const Status& status) {
      if (cb) cb(status, model::LogOffset{first});
      if (group_cb) group_cb(status);
    }
  };

  // A written round whose fdatasyncs may still be in flight (pipelined group commit). Its
  // callbacks fire, oldest round first, once every file's fdatasync returned.
  struct Round {
    struct File {
      Partition* p;
      int fd;                 // the active segment when the round was written
      uint64_t end;           // one past the last offset the round wrote to it
      uint64_t bytes;         // the segment's size after the round's write
      uint64_t records;       // records of the round (since the last sync) in the file
      uint64_t record_bytes;  // their framed bytes
      double sync_seconds = 0;
    };
    std::vector<Request> requests;
    std::vector<File> files;
    uint64_t bytes = 0;  // the requests' framed bytes
    uint64_t records = 0;
    std::chrono::steady_clock::time_point written;
    std::chrono::steady_clock::time_point synced;  // when the last fdatasync returned
    size_t syncs_pending = 0;                      // guarded by mu_
  };

  SegmentLog(const LogOptions& options, MetricsRegistry* metrics);
  // Validates a batch for Append*; *bytes = its framed size.
  Status CheckBatch(uint32_t partition, const RecordBatch& records, uint64_t* bytes) const;
  // Backpressure: Unavailable (counted) when `bytes` more would go over max_pending_bytes.
  // REQUIRES: mu_ held.
  Status Admit(uint64_t bytes);
  // Admits one request and queues it (the writer is woken when the queue was empty).
  Status Enqueue(Request req);
  Status Recover();
  Status RecoverPartition(Partition* p);
  Status VerifySealed(Partition* p, uint64_t base, uint64_t end);
  // Why cutting the active segment `path` (first offset `base`, `file_size` bytes) at byte
  // `cut_byte` (offset `cut_offset`) would delete acknowledged records; "" when what follows
  // can only be a torn tail (docs/formats/log.md, "Recovery"). *fill_to: the highest
  // offset a consumer's checkpoint passed, if above cut_offset (kCut fills up to it).
  Result<std::string> TailDamage(const Partition& p, const std::string& path, uint64_t cut_byte,
                                 uint64_t file_size, uint64_t cut_offset, uint64_t* fill_to) const;
  // Appends empty records for offsets [from, to) at byte `at` of `path` and syncs them.
  // Returns the bytes written.
  Result<uint64_t> WriteFillers(const std::string& path, uint64_t at, uint64_t from, uint64_t to);

  void WriterLoop();
  // Writes a round and starts its fdatasyncs (with fsync); appends it to inflight_, or
  // completes it at once without fsync. On a full disk, refuses it (FailRound).
  void CommitRound(std::vector<Request>* round, std::chrono::steady_clock::time_point started);
  // Publishes a round's durable ends and runs its callbacks. REQUIRES: its syncs are done
  // and every older round was completed.
  void CompleteRound(Round* r);
  // Waits for every in-flight round and completes them (before a roll or a refused round).
  void DrainRounds();
  // Whether the oldest in-flight round's syncs are done. REQUIRES: mu_ held.
  bool OldestRoundSynced() const {
    return !inflight_.empty() && inflight_.front()->syncs_pending == 0;
  }
  // Refuses a round that hit a full disk, or could not create a segment for want of file
  // descriptors (errno `err`): cuts the touched segments back to their synced size and
  // fails the round and every queued request (a queued group may span partitions that
  // the round did not touch).
  void FailRound(std::vector<Request>* round, const std::vector<Partition*>& touched, int err);
  // These return 0 or ENOSPC/EDQUOT (Roll also EMFILE/ENFILE: the next segment could not
  // be created); any other I/O error aborts (fail-stop).
  int WriteBuffer(Partition* p);
  int Roll(Partition* p, uint64_t new_base);
  // fdatasync of the active segment before a roll seals it (fatal on error); it is then
  // durable up to offset `end`. Syncs even without unsynced records when `force` (its
  // pre-written tail was cut off). REQUIRES: no round in flight.
  void SealSync(Partition* p, uint64_t end, bool force);
  // Pre-written tail (LogOptions::prewrite_bytes): starts zero-filling the active segment
  // ahead of its last record when less than half of prewrite_bytes is left.
  void MaybePrewrite(Partition* p);
  // Takes the result of the partition's pre-write once it has ended; waits for it when
  // `wait`. Writer thread (and the destructor).
  void ReapPrewrite(Partition* p, bool wait);
  // The pre-write itself, on prewrite_pool_, through its own file description: zeros at
  // [from, to), then fdatasync (fatal on error); a full disk cuts the zeros off again.
  void PrewriteJob(Partition* p, uint64_t from, uint64_t to, const std::string& path);
  // Cuts the active segment's pre-written tail (on close and before sealing it).
  // Returns whether there was one.
  bool CutTail(Partition* p);
  // One file's fdatasync of an in-flight round (fatal on error); runs on the SyncPool.
  void SyncRoundFile(Round* r, size_t i);

  Status EnforcePartitionRetention(Partition* p, int64_t now_ns);
  uint64_t MinCommitted(uint32_t partition) const;
  // Scans a sealed segment for its newest append time.
  Result<int64_t> ScanNewestTime(const std::string& path, uint64_t base) const;
  std::string SegmentPath(const Partition& p, uint64_t base) const;

  const LogOptions options_;
  const Clock* clock_;
  FileLayer* fs_;  // the writer path's file I/O (PosixFileLayer() unless a test's)
  std::unique_ptr<MetricsRegistry> own_metrics_;  // when none was passed in
  MetricsRegistry* metrics_;

  Histogram* append_latency_;
  Histogram* fsync_latency_;
  Histogram* records_per_fsync_;
  Histogram* bytes_per_fsync_;
  // Where a batch's time goes with the writer (phase label; README "Metrics").
  Histogram* phase_queue_;      // per batch: Append → its round starts writing
  Histogram* phase_window_;     // per round: the group-commit window waited
  Histogram* phase_write_;      // per round: encode + write(2)
  Histogram* phase_sync_;       // per round: writeback start + fdatasyncs, until the last
  Histogram* phase_callbacks_;  // per round: publishing durable ends + the callbacks
  Counter* appended_records_;
  Counter* appended_bytes_;
  Counter* rejected_appends_;
  Gauge* pending_bytes_gauge_;
  Counter* truncated_bytes_;
  Counter* segments_deleted_;
  Counter* disk_full_rounds_;
  Counter* no_descriptor_rounds_;
  Counter* prewritten_bytes_;

  std::vector<std::unique_ptr<Partition>> parts_;
  RecoveryReport report_;
  std::unique_ptr<Quarantine> quarantine_;

  mutable std::mutex mu_;
  std::condition_variable writer_cv_;    // queue non-empty, a round's syncs done, or stop
  std::condition_variable data_cv_;      // a durable end moved
  std::condition_variable flush_cv_;     // done_seq_ moved
  std::condition_variable prewrite_cv_;  // a pre-write ended
  std::vector<Request> queue_;
  // Written rounds whose syncs are in flight or whose callbacks have not run, oldest first
  // (at most LogOptions::max_rounds_in_flight). Only the writer thread adds and removes.
  std::deque<std::unique_ptr<Round>> inflight_;
  uint64_t pending_bytes_ = 0;
  uint64_t appended_seq_ = 0;  // requests accepted
  uint64_t done_seq_ = 0;      // requests whose callbacks have run
  bool stop_ = false;
  // The group-commit window is not waited: EndGroupCommitWindow() was called, or a Flush()
  // waits (flushes_waiting_ > 0).
  bool window_ended_ = false;
  int flushes_waiting_ = 0;
  // The errno the last round was refused with (ENOSPC/EDQUOT, or EMFILE/ENFILE creating a
  // segment); 0 once a round succeeds again.
  int refusing_err_ = 0;
  int64_t refusing_since_ns_ = 0;  // wall clock of the first refused round of the spell

  std::mutex retention_mu_;  // one retention pass at a time
  mutable std::mutex consumers_mu_;
  // name → committed offset per partition (nullopt = not reported yet; UINT64_MAX for a
  // partition the consumer does not read)
  std::map<std::string, std::vector<std::optional<uint64_t>>> consumers_;

  std::unique_ptr<SyncPool> sync_pool_;      // the rounds' fdatasyncs (fsync only)
  std::unique_ptr<SyncPool> prewrite_pool_;  // one thread: pre-written tails (fsync only)
  std::thread writer_;
};

}  // namespace joule::log

// ArchiveWriter: writes accepted events to the raw archive (docs/formats/archive.md),
// every event exactly once, in files that appear atomically.
//
// Events are added with their log position (partition, offset). Each event goes to the
// open file of its event-time hour (UTC). An open hour is cheap until it is big: its rows
// are buffered uncompressed in memory (no zstd context, no file) until they reach
// stream_threshold_bytes; then it becomes a zstd stream written to `.staging/` (at most
// max_streams at once). Seal() ends a *round*: it compresses every buffered hour in one
// call (a shared zstd context; one frame, as a stream's) into its staging file, finishes
// every stream, fsyncs the files, renames each into `dt=…/hour=…/part-{seq}.ndjson.zst`
// (sequence numbers are unique, never reused; the rename refuses to replace a file),
// fsyncs the directories, and only then writes the checkpoint: the next log offset of
// every partition and the next sequence number.
//
// Memory is bounded: buffered rows by max_buffered_bytes (RoundFull() asks for a Seal()
// once it is exceeded), zstd streams by max_streams, and the files a seal writes by
// max_open_hours. File descriptors: one per stream, and at most kSealBatch more while
// sealing.
//
// Crash safety (Open):
//  * files still in `.staging/` were never published: deleted;
//  * published files with seq >= the checkpoint's next sequence belong to a round whose
//    checkpoint was not written: deleted (rolled back), because their events are read
//    from the log again (from the checkpoint's offsets) and archived in the next round.
//    The archive's first round writes a checkpoint of its start before its first rename,
//    so this holds for it too: published files without any checkpoint were not left by a
//    crash (the checkpoint was removed by hand) and are kept.
// So a SIGKILL at any point neither loses an event nor archives one twice, provided the
// caller re-adds every log record from committed_offset() on. Buffered rows are only in
// memory: a crash loses them, and they are read from the log again like the others.
//
// Thread-safety: none (one archiver thread). The counters in stats() are atomics and may
// be read from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "model/event.h"
#include "store/archive/archive_row.h"
#include "store/archive/event_view.h"

typedef struct ZSTD_CCtx_s ZSTD_CCtx;

namespace joule::store {

struct ArchiveWriterOptions {
  std::string root;         // {data_dir}/archive; created if missing
  uint32_t partitions = 1;  // log partitions; must match an existing checkpoint
  // A round is sealed when a streamed file reaches this many compressed bytes
  // (approximate: zstd emits whole blocks), when its first hour was opened this long ago
  // (processing time), or when it is full (RoundFull(): the limits below).
  uint64_t max_file_bytes = 64ull << 20;
  int64_t max_file_age_ns = 5 * kNanosPerMinute;
  // An open hour buffers its rows uncompressed until they reach this many bytes (or
  // max_file_bytes, if less); then it becomes a zstd stream with a staging file. Backfill
  // and late events touch many hours with a few rows each: buffered, they cost their
  // bytes, not a zstd context (~0.9 MiB) and a descriptor each (until session 31 every
  // open hour was a stream, and a round ended when more than 48 were open: out-of-order
  // traffic made about one file per event).
  uint64_t stream_threshold_bytes = 256 << 10;
  // Streams at most. An hour that must become a stream when all are taken ends the round.
  size_t max_streams = 16;
  // Buffered rows at most (allocated bytes, plus a small fixed cost per open hour); the
  // round ends once they exceed it.
  uint64_t max_buffered_bytes = 32ull << 20;
  // Hours open at most (the files one seal writes, fsyncs and renames): the round ends
  // when this many are open. 4,096 hours are 170 days.
  size_t max_open_hours = 4096;
  int64_t retention_ns = 0;  // 0 = keep forever; else hours older than now − retention go
  // zstd level. 1, not zstd's default 3: on telemetry NDJSON level 1 measured a third of
  // level 3's CPU with the same or a better ratio (7.5× vs 7.3× on the benchmark's events;
  // docs/formats/archive.md "Compression").
  int compression_level = 1;
  // zstd window log (the frame's window: 2^17 = 128 KiB, one zstd block). Level 1 alone
  // picks 19 (512 KiB) for a stream of unknown size; on the benchmark's rows 17 took 14 %
  // fewer instructions in zstd and compressed 5 % smaller (9.5× → 10.0×): a row's matches
  // are in the rows just before it, and the far ones a larger window finds cost more to
  // search and to code than they save. Any zstd decoder reads such frames (a smaller
  // window needs less memory to decode); 0 = level 1's own choice.
  // docs/formats/archive.md "Compression".
  int window_log = 17;
  // zstd hash log: the match finder's table, 2^11 entries (8 KiB) instead of level 1's
  // 2^14 (64 KiB, more than the L1 cache). A small table remembers only the last few
  // dozen rows, which is where a row's matches are: on the harness's rows 10.5× instead of
  // 10.0× in 13 % less CPU, on `joule simulate`'s mixed appliances 13.9× instead of 13.5×
  // in 6 % less (about the same instructions; fewer cache misses). A compressor setting
  // only: frames do not record it. 0 = level 1's own choice.
  int hash_log = 11;
  const Clock* clock = nullptr;  // nullptr = SystemClock::Default()
  // Measures the open files' age (max_file_age): a clock that does not step with the wall
  // clock, so a step back does not keep a file open (and unexported) for the step's length
  // (found by a black-box test). nullptr = MonotonicClock::Default().
  const Clock* age_clock = nullptr;
  // Fault injection for tests: called after the round's files are published and before the
  // checkpoint is written; a non-OK status stops Seal() there, as a crash would.
  std::function<Status()> before_checkpoint;
};

struct ArchiveRecoveryReport {
  bool had_checkpoint = false;
  uint64_t temp_files_removed = 0;
  uint64_t files_rolled_back = 0;
};

class ArchiveWriter {
 public:
  // Files a seal writes before it fsyncs them (and closes their descriptors): their
  // writeback overlaps, and a journal commit covers many.
  static constexpr size_t kSealBatch = 32;

  static Result<std::unique_ptr<ArchiveWriter>> Open(ArchiveWriterOptions options);
  // Closes open files without publishing them (the next Open deletes them).
  ~ArchiveWriter();
  ArchiveWriter(const ArchiveWriter&) = delete;
  ArchiveWriter& operator=(const ArchiveWriter&) = delete;

  const ArchiveRecoveryReport& recovery_report() const { return recovery_; }
  // The next log offset of `partition` whose event is not yet in a published file.
  uint64_t committed_offset(uint32_t partition) const { return committed_[partition]; }
  // Without a checkpoint (first start), where reading of `partition` begins.
  // REQUIRES: nothing added for that partition yet.
  void SetStart(uint32_t partition, uint64_t offset);

  // Buffers the event read at (partition, offset). REQUIRES: offsets of a partition are
  // added in increasing order, starting at committed_offset(partition).
  Status Add(uint32_t partition, uint64_t offset, const model::Event& event);
  // The same from a view of the log payload (DecodeEventView): no copy of the event.
  Status Add(uint32_t partition, uint64_t offset, const EventView& event);
  // Marks a record that is not archived (undecodable) as consumed.
  void Skip(uint32_t partition, uint64_t offset);

  // Hours with an open (unpublished) file, buffered or streamed.
  size_t open_files() const { return open_.size(); }
  // Open hours that are zstd streams (with a staging file).
  size_t open_streams() const { return streams_; }
  // Memory held by buffered rows, as counted against max_buffered_bytes.
  uint64_t buffered_bytes() const { return buffered_bytes_; }
  // Whether the round is full: buffered rows over max_buffered_bytes, max_open_hours hours
  // open, or an hour that must become a stream with all max_streams taken. Seal() before
  // adding more (cheap: meant to be asked after every Add).
  bool RoundFull() const {
    return must_seal_ || buffered_bytes_ > options_.max_buffered_bytes ||
           open_.size() >= options_.max_open_hours;
  }
  // Whether a size, age or round limit asks for a Seal() now.
  bool SealDue() const;
  // Publishes every open file and then writes the checkpoint. Returns the number of files
  // published (0 when nothing was pending; the checkpoint is still written when offsets
  // moved); last_sealed_events() is then the number of events (rows) in them. On error the
  // writer must be discarded and reopened (crash semantics).
  Result<size_t> Seal();
  // Events in the files the last successful Seal() published (0 before the first).
  uint64_t last_sealed_events() const { return last_sealed_events_; }

  // Deletes hour directories older than now − retention (no-op when retention is 0).
  // Returns the number of hour directories removed.
  Result<size_t> EnforceRetention();

  struct Stats {
    std::atomic<uint64_t> events{0};            // events added
    std::atomic<uint64_t> events_published{0};  // events in published files
    std::atomic<uint64_t> files_published{0};
    std::atomic<uint64_t> bytes_published{0};
    std::atomic<uint64_t> open_files{0};
    std::atomic<uint64_t> open_streams{0};
  };
  const Stats& stats() const { return stats_; }

 private:
  struct OpenFile;
  explicit ArchiveWriter(ArchiveWriterOptions options);
  Status Recover();
  // Writes `offsets` and next_seq_ as the checkpoint.
  Status WriteCheckpoint(const std::vector<uint64_t>& offsets);
  // A zstd context with the writer's parameters.
  Result<ZSTD_CCtx*> NewContext() const;
  // Makes the buffered hour `file` a stream: a staging file and a zstd context, its
  // buffered rows compressed into them.
  Status StartStream(OpenFile* file);
  // Writes the whole frame of `file` into its staging file (creating it for a buffered
  // hour) and starts its writeback; the fsync is the caller's.
  Status WriteFile(OpenFile* file);
  template <typename E>
  Status AddImpl(uint32_t partition, uint64_t offset, const E& event);

  ArchiveWriterOptions options_;
  const Clock* clock_;
  const Clock* age_clock_;
  ArchiveRecoveryReport recovery_;
  std::vector<uint64_t> committed_;  // per partition, as in the checkpoint
  std::vector<uint64_t> next_;       // per partition, after the last Add/Skip
  uint64_t next_seq_ = 0;
  uint64_t last_sealed_events_ = 0;
  // Whether `_archiver.ckpt` exists (read at Open or written since). Until it does, Seal()
  // writes one for the round's start before its first rename.
  bool checkpoint_written_ = false;
  uint64_t staging_counter_ = 0;
  std::map<int64_t, std::unique_ptr<OpenFile>> open_;  // by hour start
  size_t streams_ = 0;                                 // open hours that are streams
  uint64_t buffered_bytes_ = 0;                        // counted against max_buffered_bytes
  uint64_t promote_at_ = 0;  // min(stream_threshold_bytes, max_file_bytes)
  // An hour had to become a stream with no slot free: the round must end.
  bool must_seal_ = false;
  bool file_full_ = false;          // a stream reached max_file_bytes
  int64_t round_opened_at_ns_ = 0;  // age clock, when the round's first hour was opened
  // Compresses buffered hours at Seal(), one frame per call; created with the first hour
  // (which reports bad parameters) and reused.
  ZSTD_CCtx* oneshot_ = nullptr;
  std::string frame_;  // Seal()'s output buffer for a buffered hour
  ArchiveRowEncoder encoder_;
  Stats stats_;
};

// The checkpoint file (docs/formats/archive.md, "Checkpoint"). Exposed for tests and tools.
struct ArchiveCheckpoint {
  uint64_t next_seq = 0;
  std::vector<uint64_t> offsets;  // next offset per partition
};
Result<std::optional<ArchiveCheckpoint>> ReadArchiveCheckpoint(const std::string& root);

}  // namespace joule::store

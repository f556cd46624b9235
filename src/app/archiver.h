// Archiver: the thread that follows the log (all partitions) and writes every durable
// event to the raw archive exactly once (store::ArchiveWriter; docs/formats/archive.md).
//
// It registers itself with the log as consumer "archiver" and reports, after each sealed
// round, the offsets below which everything is in published files: log retention never
// deletes an event the archive does not hold yet. On Start it resumes from the writer's
// checkpoint (first start: from each partition's first retained record). Stop() archives
// everything durable at the time of the call and seals it.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "app/read_retry.h"
#include "common/clock.h"
#include "common/metrics.h"
#include "common/status.h"
#include "log/log.h"
#include "store/archive/archive_writer.h"
#include "store/archive/event_view.h"

namespace joule::app {

struct ArchiverOptions {
  std::string dir;  // {data_dir}/archive
  uint64_t max_file_bytes = 64ull << 20;
  int64_t max_file_age_ns = 5 * kNanosPerMinute;
  int64_t retention_ns = 0;  // 0 = forever
  size_t read_batch = 4096;
  int64_t retention_interval_ns = kNanosPerMinute;
  int nice = 0;  // added to the thread's nice value (server.background_nice)
  // Tests: called on the archiver thread after each sealed round (its counters updated).
  std::function<void()> after_seal;
};

class Archiver {
 public:
  static constexpr char kConsumerName[] = "archiver";
  // `metrics` may be null. `log`, `clock` and `metrics` must outlive the Archiver.
  Archiver(ArchiverOptions options, log::Log* log, const Clock* clock, MetricsRegistry* metrics);
  ~Archiver();

  // Recovers the archive (deletes unpublished and uncommitted files), registers the
  // consumer and starts the thread.
  Status Start();
  // Stops the thread after it has archived everything durable and sealed it; a round that
  // failed before (its retry due within a second) is redone at once first. Not OK when
  // that last round failed (e.g. a full disk): nothing is lost, the next start redoes it
  // from the archive checkpoint. OK when it was not running.
  Status Stop();

  // Durable records not yet in published archive files, over all partitions.
  uint64_t LagRecords() const;

  // Blocks until every record durable at the time of the call is in a published file
  // (asking the thread to seal its open files early). Used by replay, which must see
  // every event acknowledged before it began. Unavailable after `timeout_ns`, when
  // `cancel` (may be null) is set, or when the thread is not running.
  Status SealNow(int64_t timeout_ns, const std::atomic<bool>* cancel = nullptr);

  // Failing: a round failed (e.g. a full disk) and no round has been sealed since; the
  // archiver retries every second from its checkpoint, and seals the redone round as soon
  // as it has caught up with the log (so this clears then). Thread-safe.
  struct State {
    bool failing = false;
    int64_t since_ns = 0;
    std::string error;  // the last failure
    uint64_t failures = 0;
  };
  State state() const;

 private:
  // (Re)opens the writer (recovery) and positions the readers at its checkpoint.
  Status OpenWriter();
  void Run();
  bool ReadBatch(uint32_t partition);
  void SealRound();
  // Marks the archiver failing (and logs the first failure of a run of them).
  void Failed(std::string_view what, const Status& status);

  ArchiverOptions options_;
  log::Log* log_;
  const Clock* clock_;
  MetricsRegistry* metrics_;
  std::unique_ptr<store::ArchiveWriter> writer_;
  std::vector<std::unique_ptr<log::LogReader>> readers_;
  std::unique_ptr<std::atomic<uint64_t>[]> committed_;
  // Per partition: the reader met a damaged record (Corruption); not read again, also
  // across writer reopens (docs/RELIABILITY.md, "Run-time corruption").
  std::unique_ptr<std::atomic<bool>[]> stopped_;
  // Per partition: failed reads are retried with a backoff (app/read_retry.h).
  std::vector<ReadRetry> read_retry_;
  log::ReadBatch batch_;
  store::EventView view_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> failed_{false};
  std::atomic<bool> seal_requested_{false};
  // The round redone after a failure is sealed as soon as it has caught up with the log,
  // not max_file_age later: only a sealed round shows that the archive works again (and
  // clears the failing state /readyz shows). Archiver thread only.
  bool seal_redone_round_ = false;
  std::mutex seal_mu_;
  std::condition_variable sealed_cv_;
  std::thread thread_;
  mutable std::mutex state_mu_;
  State state_;                      // guarded by state_mu_
  int64_t last_failure_log_ns_ = 0;  // guarded by state_mu_
  Counter* events_ = nullptr;
  Counter* files_ = nullptr;
  Counter* decode_errors_ = nullptr;
  Counter* read_errors_ = nullptr;
  Counter* seal_errors_ = nullptr;
  Counter* records_missed_ = nullptr;
};

}  // namespace joule::app

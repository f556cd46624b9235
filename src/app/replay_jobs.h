// ReplayJobs: replay inside the running server (api::ReplayService behind POST/GET
// /v1/admin/replay; docs/formats/archive.md, "Replay against a running server").
//
// One job at a time, on its own thread: (1) "sealing" — the archiver publishes everything
// durable now (Archiver::SealNow), so the archive holds every event acknowledged before the
// job began; (2) ReplayArchive with the server's own history and latest stores, engine
// options and time zones, and the live processors' watermarks — it writes only windows the
// live engine can no longer change (replay.h), so live windows are never disturbed; the
// differences of the rollups the live engines still hold go to them through a replay journal
// (replay_journal.h), which the next start finishes if the server dies before they are
// checkpointed.
// Jobs live in memory (the last kMaxJobs); a restart forgets them — replay is idempotent,
// so run it again. Stop() cancels a running job (between devices) and joins it.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "api/replay_service.h"
#include "app/archiver.h"
#include "app/replay.h"
#include "common/metrics.h"
#include "store/history_store.h"
#include "store/latest_store.h"
#include "store/metadata_store.h"
#include "stream/window_engine.h"

namespace joule::app {

struct ReplayJobsOptions {
  std::string archive_dir;
  stream::EngineOptions engine;
  int64_t seal_timeout_ns = 120 * kNanosPerSecond;
  int nice = 0;  // added to the job thread's nice value (server.background_nice)
  // auth.mode = "disabled": the archive may hold ids never registered (ReplayDevices)
  bool unregistered_ids_archived = false;
  std::function<bool(std::string_view device_id, int64_t* watermark_ns)> live_watermark;
  // ReplayRequest::journal_dir and ::hand_over: the live processors get each batch's
  // corrections, and it returns once they applied them and wrote a checkpoint with them
  // (true), or false when not within its bound (the journal then stays for the next start).
  std::string journal_dir;
  std::function<Result<bool>(uint64_t journal_seq, const std::vector<BaseCorrection>&)> hand_over;
};

class ReplayJobs final : public api::ReplayService {
 public:
  static constexpr size_t kMaxJobs = 64;

  // Every pointer must outlive this object; `latest`, `metadata`, `metrics` may be null.
  ReplayJobs(ReplayJobsOptions options, Archiver* archiver, store::HistoryStore* history,
             store::LatestStore* latest, store::MetadataStore* metadata,
             stream::TimezoneProvider* timezones, MetricsRegistry* metrics);
  ~ReplayJobs() override;

  Result<std::string> Start(const api::ReplayJobRequest& request,
                            const OnAccepted& on_accepted) override;
  Result<std::string> Get(std::string_view id) override;
  void Stop();

 private:
  struct Job;
  void Run(std::shared_ptr<Job> job);
  static std::string JobJson(const Job& job);

  ReplayJobsOptions options_;
  Archiver* archiver_;
  store::HistoryStore* history_;
  store::LatestStore* latest_;
  store::MetadataStore* metadata_;
  stream::TimezoneProvider* timezones_;
  Counter* jobs_succeeded_ = nullptr;
  Counter* jobs_failed_ = nullptr;
  Counter* records_written_ = nullptr;

  std::mutex mu_;
  std::map<std::string, std::shared_ptr<Job>> jobs_;  // by id
  std::shared_ptr<Job> running_;
  std::thread worker_;
  std::atomic<bool> cancel_{false};
  uint64_t started_ = 0;
};

}  // namespace joule::app

#include "app/replay_jobs.h"

#include <fmt/format.h>
#include <sys/random.h>

#include <filesystem>
#include <utility>

#include "common/clock.h"
#include "common/json_writer.h"
#include "common/logging.h"
#include "common/thread_priority.h"
#include "common/time_format.h"

namespace joule::app {

struct ReplayJobs::Job {
  std::string id;
  api::ReplayJobRequest request;
  std::set<std::string, std::less<>> devices;
  std::string state = "running";  // running, succeeded, failed
  int64_t created_ns = 0, finished_ns = 0;
  ReplayProgress progress;
  std::string error;
};

ReplayJobs::ReplayJobs(ReplayJobsOptions options, Archiver* archiver, store::HistoryStore* history,
                       store::LatestStore* latest, store::MetadataStore* metadata,
                       stream::TimezoneProvider* timezones, MetricsRegistry* metrics)
    : options_(std::move(options)),
      archiver_(archiver),
      history_(history),
      latest_(latest),
      metadata_(metadata),
      timezones_(timezones) {
  if (metrics) {
    jobs_succeeded_ = metrics->GetCounter("joule_replay_jobs_total", "Replay jobs finished",
                                          {{"result", "succeeded"}});
    jobs_failed_ = metrics->GetCounter("joule_replay_jobs_total", "Replay jobs finished",
                                       {{"result", "failed"}});
    records_written_ = metrics->GetCounter("joule_replay_records_written_total",
                                           "Records written by replay jobs (new versions)");
  }
}

ReplayJobs::~ReplayJobs() { Stop(); }

void ReplayJobs::Stop() {
  cancel_.store(true);
  std::thread worker;
  {
    std::lock_guard lock(mu_);
    worker = std::move(worker_);
  }
  if (worker.joinable()) worker.join();
}

Result<std::string> ReplayJobs::Start(const api::ReplayJobRequest& request,
                                      const OnAccepted& on_accepted) {
  if (!std::filesystem::is_directory(options_.archive_dir)) {
    return Status::InvalidArgument(fmt::format("no archive at {}", options_.archive_dir));
  }
  JOULE_ASSIGN_OR_RETURN(auto devices, ReplayDevices(metadata_, request.device_id, request.owner_id,
                                                     options_.unregistered_ids_archived));
  std::lock_guard lock(mu_);
  if (cancel_.load()) return Status::Unavailable("the server is stopping");
  if (running_) {
    return Status::AlreadyExists(
        fmt::format("replay {} is still running; one replay runs at a time", running_->id));
  }
  if (worker_.joinable()) worker_.join();  // the previous job, finished
  auto job = std::make_shared<Job>();
  unsigned char rnd[6];
  if (getrandom(rnd, sizeof rnd, 0) != static_cast<ssize_t>(sizeof rnd)) std::abort();
  job->id = fmt::format("{}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}", ++started_, rnd[0], rnd[1],
                        rnd[2], rnd[3], rnd[4], rnd[5]);
  job->request = request;
  job->devices = std::move(devices);
  job->created_ns = SystemClock::Default()->NowNanos();
  job->progress.phase = "sealing";
  // Keep the newest kMaxJobs (ids start with an increasing number, but compare by time).
  while (jobs_.size() >= kMaxJobs) {
    auto oldest = jobs_.end();
    for (auto it = jobs_.begin(); it != jobs_.end(); ++it) {
      if (oldest == jobs_.end() || it->second->created_ns < oldest->second->created_ns) {
        oldest = it;
      }
    }
    jobs_.erase(oldest);
  }
  jobs_[job->id] = job;
  running_ = job;
  std::string json = JobJson(*job);
  // Recorded before the job runs, so that a crash mid-job leaves the entry behind.
  if (on_accepted) on_accepted(job->id);
  worker_ = std::thread([this, job] { Run(job); });
  return json;
}

Result<std::string> ReplayJobs::Get(std::string_view id) {
  std::lock_guard lock(mu_);
  auto it = jobs_.find(std::string(id));
  if (it == jobs_.end()) return Status::NotFound(fmt::format("no replay job {}", id));
  return JobJson(*it->second);
}

void ReplayJobs::Run(std::shared_ptr<Job> job) {
  SetUpThread("joule-replay", options_.nice);
  logging::Info("replay started",
                {{"id", job->id},
                 {"from", FormatRfc3339Millis(job->request.from_ns)},
                 {"to", FormatRfc3339Millis(job->request.to_ns)},
                 {"devices", job->devices.empty() ? std::string("all")
                                                  : std::to_string(job->devices.size())}});
  Status st = archiver_ ? archiver_->SealNow(options_.seal_timeout_ns, &cancel_)
                        : Status::Unavailable("the archiver is not running");
  Result<ReplayStats> stats = Status::Internal("replay did not run");
  if (!st.ok()) {
    stats = st;
  } else {
    ReplayRequest req;
    req.archive_dir = options_.archive_dir;
    req.from_ns = job->request.from_ns;
    req.to_ns = job->request.to_ns;
    req.devices = job->devices;
    req.engine = options_.engine;
    req.dry_run = job->request.dry_run;
    req.live_watermark = options_.live_watermark;
    req.journal_dir = options_.journal_dir;
    if (options_.hand_over) {
      req.hand_over = [&](uint64_t seq,
                          const std::vector<BaseCorrection>& corrections) -> Result<bool> {
        JOULE_ASSIGN_OR_RETURN(bool durable, options_.hand_over(seq, corrections));
        if (!durable) {
          logging::Warn(
              "replay: the processors did not checkpoint the corrected rollups in time; "
              "the replay journal keeps the difference and the next start applies it to "
              "the checkpoints that lack it",
              {{"id", job->id}, {"journal", std::to_string(seq)}});
        }
        return durable;
      };
    }
    req.cancel = &cancel_;
    stats = ReplayArchive(req, history_, latest_, timezones_, [&](const ReplayProgress& p) {
      std::lock_guard lock(mu_);
      job->progress = p;
    });
  }
  std::lock_guard lock(mu_);
  job->finished_ns = SystemClock::Default()->NowNanos();
  if (stats.ok()) {
    job->state = "succeeded";
    job->progress.phase = "done";
    job->progress.stats = *stats;
    if (jobs_succeeded_) jobs_succeeded_->Inc();
    if (records_written_ && !job->request.dry_run) records_written_->Inc(stats->records_written);
    logging::Info("replay finished", {{"id", job->id},
                                      {"records_written", std::to_string(stats->records_written)},
                                      {"records_live", std::to_string(stats->records_live)}});
  } else {
    job->state = "failed";
    job->error = stats.status().ToString();
    if (jobs_failed_) jobs_failed_->Inc();
    logging::Error("replay failed", {{"id", job->id}, {"error", job->error}});
  }
  running_.reset();
}

std::string ReplayJobs::JobJson(const Job& job) {
  JsonWriter w;
  w.BeginObject();
  w.Key("id");
  w.String(job.id);
  w.Key("state");
  w.String(job.state);
  w.Key("from");
  w.String(FormatRfc3339Millis(job.request.from_ns));
  w.Key("to");
  w.String(FormatRfc3339Millis(job.request.to_ns));
  if (!job.request.device_id.empty()) {
    w.Key("device_id");
    w.String(job.request.device_id);
  }
  if (!job.request.owner_id.empty()) {
    w.Key("owner_id");
    w.String(job.request.owner_id);
  }
  w.Key("dry_run");
  w.Bool(job.request.dry_run);
  w.Key("created_at");
  w.String(FormatRfc3339Millis(job.created_ns));
  if (job.finished_ns) {
    w.Key("finished_at");
    w.String(FormatRfc3339Millis(job.finished_ns));
  }
  const ReplayProgress& p = job.progress;
  w.Key("progress");
  w.BeginObject();
  w.Key("phase");
  w.String(p.phase);
  w.Key("files_done");
  w.Uint(p.files_done);
  w.Key("files_total");
  w.Uint(p.files_total);
  w.Key("devices_done");
  w.Uint(p.devices_done);
  w.Key("devices_total");
  w.Uint(p.devices_total);
  WriteReplayStats(w, p.stats);
  w.EndObject();
  if (job.state == "succeeded") {
    w.Key("result");
    w.BeginObject();
    WriteReplayStats(w, p.stats);
    w.EndObject();
  }
  if (job.state == "failed") {
    w.Key("error");
    w.String(job.error);
  }
  w.EndObject();
  return w.str();
}

}  // namespace joule::app

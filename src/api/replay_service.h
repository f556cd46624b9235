// ReplayService: what POST/GET /v1/admin/replay need from the app (implemented by
// app::ReplayJobs, src/app/replay_jobs.h). Replays run as background jobs, one at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace joule::api {

struct ReplayJobRequest {
  int64_t from_ns = 0;
  int64_t to_ns = 0;
  std::string device_id;  // at most one of device_id, owner_id
  std::string owner_id;
  bool dry_run = false;
};

// The request as JSON — {"from", "to" (RFC 3339, milliseconds), "device_id" or
// "owner_id" when set, "dry_run"}: the body `joule replay --server` posts, and the
// replay.started audit entry's details (docs/formats/audit.md).
std::string ReplayRequestJson(const ReplayJobRequest& request);

class ReplayService {
 public:
  virtual ~ReplayService() = default;
  // Called with a new job's id once the job is accepted and before it starts to run: the
  // caller records it (the audit entry) before the job can have any effect.
  using OnAccepted = std::function<void(std::string_view id)>;

  // Starts a job and returns its JSON (state "running"). AlreadyExists while another job
  // runs; InvalidArgument for an unusable request (unknown owner, no archive).
  virtual Result<std::string> Start(const ReplayJobRequest& request,
                                    const OnAccepted& on_accepted) = 0;
  // The job's JSON: id, state (running, succeeded, failed), request, progress, result or
  // error. NotFound for an unknown id.
  virtual Result<std::string> Get(std::string_view id) = 0;
};

}  // namespace joule::api

// SyncPool: runs group-commit rounds' per-file fdatasync calls on a few threads, at the
// same time and without the writer thread waiting for them.
//
// A round touches up to one segment file per partition. Issued one after the other, each
// fdatasync waits for its own device round trips (ext4: 8 files took 29–49 ms per round on
// the development VM); issued together they overlap (~5 ms). Jobs are submitted and return
// at once, so the writer thread can write the next round while this one's fdatasyncs are
// in flight (pipelined group commit, docs/formats/log.md "Write protocol"); each job reports
// its own completion.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace joule::log {

class SyncPool {
 public:
  // The threads are named `name` followed by their index (at most 15 bytes in all).
  SyncPool(size_t threads, const std::string& name);
  // Runs every job already submitted, then joins the threads.
  ~SyncPool();
  SyncPool(const SyncPool&) = delete;
  SyncPool& operator=(const SyncPool&) = delete;

  // Queues `job` to run on one of the pool's threads (in submission order when a thread is
  // free). Thread-safe.
  void Submit(std::function<void()> job);

 private:
  void Loop();

  std::mutex mu_;
  std::condition_variable work_cv_;
  std::deque<std::function<void()>> jobs_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace joule::log

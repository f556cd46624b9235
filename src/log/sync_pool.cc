#include "log/sync_pool.h"

namespace joule::log {

SyncPool::SyncPool(size_t threads) {
  threads_.reserve(threads);
  for (size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { Loop(); });
}

SyncPool::~SyncPool() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void SyncPool::Run(size_t n, const std::function<void(size_t)>& job) {
  if (n == 0) return;
  if (n == 1 || threads_.empty()) {
    for (size_t i = 0; i < n; ++i) job(i);
    return;
  }
  std::unique_lock<std::mutex> l(mu_);
  job_ = &job;
  next_ = 0;
  count_ = n;
  pending_ = n;
  work_cv_.notify_all();
  Work(l);
  done_cv_.wait(l, [this] { return pending_ == 0; });
  job_ = nullptr;
  count_ = 0;
  next_ = 0;
}

void SyncPool::Work(std::unique_lock<std::mutex>& l) {
  while (next_ < count_) {
    const size_t i = next_++;
    const std::function<void(size_t)>* job = job_;
    l.unlock();
    (*job)(i);
    l.lock();
    if (--pending_ == 0) done_cv_.notify_all();
  }
}

void SyncPool::Loop() {
  std::unique_lock<std::mutex> l(mu_);
  for (;;) {
    work_cv_.wait(l, [this] { return stop_ || next_ < count_; });
    if (stop_) return;
    Work(l);
  }
}

}  // namespace joule::log

#include "server/scheduler.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace lowbit::server {

Scheduler::Scheduler(const Options& options, RunFn run, ChangeFn on_change)
    : options_(options), run_(std::move(run)), on_change_(std::move(on_change)) {
  const int runners = std::max(1, options_.max_concurrent_jobs);
  for (int i = 0; i < runners; ++i) runners_.emplace_back([this] { RunnerLoop(); });
}

Scheduler::~Scheduler() { Shutdown(); }

void Scheduler::NotifyChange() {
  if (on_change_) on_change_(static_cast<int>(queue_.size()), running_);
}

absl::Status Scheduler::Refusal() const {
  if (!accepting_) return absl::UnavailableError("the server is shutting down and accepts no new jobs");
  if (static_cast<int>(queue_.size()) >= options_.max_queued_jobs) {
    return absl::ResourceExhaustedError(absl::StrCat("the job queue is full (", options_.max_queued_jobs,
                                                     " jobs waiting); retry later"));
  }
  return absl::OkStatus();
}

absl::Status Scheduler::CanEnqueue() const {
  absl::MutexLock lock(&mu_);
  return Refusal();
}

absl::Status Scheduler::Enqueue(const std::string& job_id, uint64_t memory_bytes) {
  absl::MutexLock lock(&mu_);
  if (absl::Status refused = Refusal(); !refused.ok()) return refused;
  queue_.push_back({job_id, memory_bytes});
  NotifyChange();
  return absl::OkStatus();
}

bool Scheduler::RemoveQueued(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  auto it = std::find_if(queue_.begin(), queue_.end(), [&](const Queued& q) { return q.id == job_id; });
  if (it == queue_.end()) return false;
  queue_.erase(it);
  NotifyChange();
  return true;
}

void Scheduler::StopAccepting() {
  absl::MutexLock lock(&mu_);
  accepting_ = false;
}

bool Scheduler::WaitUntilIdle(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return running_ == 0; };
  return mu_.AwaitWithTimeout(absl::Condition(&idle), timeout);
}

void Scheduler::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    accepting_ = false;
    stopping_ = true;
  }
  for (std::thread& t : runners_) {
    if (t.joinable()) t.join();
  }
}

int Scheduler::queued() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(queue_.size());
}

Scheduler::Load Scheduler::load() const {
  absl::MutexLock lock(&mu_);
  Load load{running_ + static_cast<int>(queue_.size()), running_bytes_};
  for (const Queued& q : queue_) load.memory_bytes += q.memory_bytes;
  return load;
}

int Scheduler::running() const {
  absl::MutexLock lock(&mu_);
  return running_;
}

int Scheduler::Admissible() const {
  for (size_t i = 0; i < queue_.size(); ++i) {
    if (running_ == 0 || options_.memory_budget_bytes == 0 ||
        running_bytes_ + queue_[i].memory_bytes <= options_.memory_budget_bytes) {
      return static_cast<int>(i);
    }
  }
  return -1;
}

void Scheduler::RunnerLoop() {
  while (true) {
    Queued job;
    {
      absl::MutexLock lock(&mu_);
      // Once the scheduler stops accepting, queued jobs stay queued (and persisted) for the next start.
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_ || (accepting_ && Admissible() >= 0); };
      mu_.Await(absl::Condition(&ready));
      if (stopping_) return;
      auto it = queue_.begin() + Admissible();
      job = std::move(*it);
      queue_.erase(it);
      ++running_;
      running_bytes_ += job.memory_bytes;
      NotifyChange();
    }
    run_(job.id);
    absl::MutexLock lock(&mu_);
    --running_;
    running_bytes_ -= job.memory_bytes;
    NotifyChange();
  }
}

}  // namespace lowbit::server

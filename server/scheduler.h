// Scheduler: decides WHICH job runs WHEN. A bounded queue and a fixed number of runner threads, each
// running one job at a time through the RunFn it was given. Jobs are admitted by their memory estimates:
// the first queued job (in FIFO order) whose estimate fits beside the running jobs' starts; a job runs
// alone if nothing else is running, whatever its estimate. It knows nothing about quantization.
//
// Thread-safe. Lifecycle: Enqueue while accepting; StopAccepting() refuses new work; Shutdown() also
// leaves queued jobs unstarted and joins the runners once their current jobs return.
#ifndef LOWBIT_SERVER_SCHEDULER_H_
#define LOWBIT_SERVER_SCHEDULER_H_

#include <deque>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace lowbit::server {

class Scheduler {
 public:
  struct Options {
    int max_concurrent_jobs = 1;  ///< jobs running at once
    int max_queued_jobs = 16;     ///< jobs waiting; Enqueue beyond this is RESOURCE_EXHAUSTED
    uint64_t memory_budget_bytes = 0;  ///< sum of the running jobs' estimates; 0 = no bound
  };
  using RunFn = std::function<void(const std::string& job_id)>;
  // Called with (queued, running) after every change, for metrics.
  using ChangeFn = std::function<void(int queued, int running)>;

  Scheduler(const Options& options, RunFn run, ChangeFn on_change = nullptr);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // RESOURCE_EXHAUSTED when the queue is full, UNAVAILABLE after StopAccepting().
  // `memory_bytes`: the job's estimated peak memory.
  absl::Status Enqueue(const std::string& job_id, uint64_t memory_bytes = 0);
  // What Enqueue would answer now (OK, RESOURCE_EXHAUSTED or UNAVAILABLE), without enqueueing.
  absl::Status CanEnqueue() const;
  // Removes a job that has not started; false if it is not in the queue.
  bool RemoveQueued(const std::string& job_id);
  // Refuses new jobs and starts no queued ones; running jobs go on.
  void StopAccepting();
  // Waits until no job is running or `timeout` passes; true if none is running.
  bool WaitUntilIdle(absl::Duration timeout);
  // Stops accepting, starts nothing more, and joins the runners after their current jobs.
  void Shutdown();

  int queued() const;
  int running() const;
  // The jobs running or queued here and the sum of their memory estimates: what a replica of a fleet
  // (server/fleet.h) has taken on.
  struct Load {
    int jobs = 0;
    uint64_t memory_bytes = 0;
  };
  Load load() const;

 private:
  void RunnerLoop();
  // The queue position of the first job that may start now, or -1.
  int Admissible() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void NotifyChange() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Refusal() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  const RunFn run_;
  const ChangeFn on_change_;
  mutable absl::Mutex mu_;
  struct Queued {
    std::string id;
    uint64_t memory_bytes = 0;
  };
  std::deque<Queued> queue_ ABSL_GUARDED_BY(mu_);
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t running_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool accepting_ ABSL_GUARDED_BY(mu_) = true;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> runners_;
};

}  // namespace lowbit::server

#endif  // LOWBIT_SERVER_SCHEDULER_H_

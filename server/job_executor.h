// JobExecutor: runs one queued job (the Scheduler's RunFn): has the JobManager start it, runs core/job with
// an observer that publishes progress to the manager and metrics, and hands the outcome back. A failing job
// only ever fails itself: errors (and exceptions) end up in its record, never in the process.
#ifndef LOWBIT_SERVER_JOB_EXECUTOR_H_
#define LOWBIT_SERVER_JOB_EXECUTOR_H_

#include <atomic>
#include <string>

#include "core/job/quantize_job.h"
#include "core/storage/object_store.h"
#include "core/util/thread_pool.h"
#include "server/job_manager.h"
#include "server/metrics.h"

namespace lowbit::server {

class JobExecutor {
 public:
  struct Options {
    JobOptions job;  ///< every job's options (the pool is the executor's)
  };
  // Nothing is owned; all must outlive the executor.
  JobExecutor(const Options& options, JobManager* manager, ObjectStore* store, ThreadPool* pool, Metrics* metrics)
      : options_(options), manager_(manager), store_(store), pool_(pool), metrics_(metrics) {}

  void Run(const std::string& job_id);
  // Makes running jobs stop at their next cancellation check and go back to QUEUED (server shutdown).
  void PreemptAll() { preempt_ = true; }

 private:
  const Options options_;
  JobManager* const manager_;
  ObjectStore* const store_;
  ThreadPool* const pool_;
  Metrics* const metrics_;
  std::atomic<bool> preempt_{false};
};

}  // namespace lowbit::server

#endif  // LOWBIT_SERVER_JOB_EXECUTOR_H_

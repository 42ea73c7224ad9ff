// Fleet: this replica's part in a fleet of lowbitd replicas sharing one PostgreSQL job store
// (server/postgres_job_store.h). Three threads:
//   - the claimer takes queued jobs from the store while this replica has a free runner and the memory
//     for the job's plan, and hands them to the local Scheduler; it wakes on every notification and
//     every local change, and at least four times a lease (expired leases are found by time);
//   - the lease keeper renews this replica's leases every sixth of a lease, advertises its budget, saves
//     records a store outage left unsaved, and stops the jobs whose claim it lost: the store says another
//     replica holds them, or it could not renew for a whole lease (another replica may have them now);
//   - the listener turns notifications into JobManager::Absorb, so every replica answers Get, List and
//     Watch for every job, and a cancel reaches the replica running the job.
// A job commits its output only while its holder renewed within half a lease (MayCommit): no other
// replica can have taken it over in that time.
#ifndef LOWBIT_SERVER_FLEET_H_
#define LOWBIT_SERVER_FLEET_H_

#include <cstdint>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/util/job_context.h"
#include "server/metrics.h"
#include "server/postgres_job_store.h"
#include "server/scheduler.h"

namespace lowbit::server {

class JobManager;

class Fleet {
 public:
  struct Options {
    absl::Duration lease = absl::Seconds(30);
    uint64_t memory_budget_bytes = 0;  ///< what jobs here may plan to use in all; 0: no bound
    int max_concurrent_jobs = 1;
    Metrics* metrics = nullptr;  ///< may be null
  };
  // Nothing is owned.
  Fleet(const Options& options, PostgresJobStore* store, JobManager* jobs);
  ~Fleet() { Stop(); }
  Fleet(const Fleet&) = delete;
  Fleet& operator=(const Fleet&) = delete;

  // Starts the threads; claimed jobs go to `scheduler`.
  void Start(Scheduler* scheduler);
  // Stops claiming (a draining replica takes nothing more); leases are still renewed.
  void StopClaiming();
  void Stop();
  // Something may be claimable now: a submit, a job that ended here, a cancel.
  void Wake();

  // OK while this replica may commit a job it holds (see above); waits while the store cannot be
  // reached, returning what the job's `context` says if it stops meanwhile.
  absl::Status MayCommit(const JobContext& context);
  // Admission across the fleet: RESOURCE_EXHAUSTED if no live replica's budget fits `plan_bytes`.
  absl::Status Fits(uint64_t plan_bytes);

  PostgresJobStore* store() const { return store_; }
  const std::string& replica() const { return store_->replica(); }

 private:
  void ClaimLoop();
  void LeaseLoop();
  // Claims one job if this replica has room for one; false when nothing (more) is to be had now.
  bool ClaimOne();
  bool Renewed(absl::Duration within) const;

  const Options options_;
  PostgresJobStore* const store_;
  JobManager* const jobs_;
  Scheduler* scheduler_ = nullptr;

  mutable absl::Mutex mu_;
  bool wake_ ABSL_GUARDED_BY(mu_) = false;
  bool claiming_ ABSL_GUARDED_BY(mu_) = true;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time last_renewed_ ABSL_GUARDED_BY(mu_);  // when the last successful renewal began, by this clock
  std::thread claimer_, lease_keeper_, listener_;
};

}  // namespace lowbit::server

#endif  // LOWBIT_SERVER_FLEET_H_

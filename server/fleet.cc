#include "server/fleet.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "core/util/status_macros.h"
#include "server/grpc_status.h"
#include "server/job_manager.h"

namespace lowbit::server {

Fleet::Fleet(const Options& options, PostgresJobStore* store, JobManager* jobs)
    : options_(options), store_(store), jobs_(jobs), last_renewed_(absl::Now()) {}

void Fleet::Start(Scheduler* scheduler) {
  scheduler_ = scheduler;
  // Advertised before the first submit, so admission knows this replica's budget.
  if (store_->Renew(options_.lease, options_.memory_budget_bytes, 0).ok()) {
    absl::MutexLock lock(&mu_);
    last_renewed_ = absl::Now();
  }
  lease_keeper_ = std::thread([this] { LeaseLoop(); });
  claimer_ = std::thread([this] { ClaimLoop(); });
  listener_ = std::thread([this] {
    store_->Listen(
        [this](const std::string& id) {
          absl::StatusOr<std::optional<PostgresJobStore::Row>> row = store_->Load(id);
          if (!row.ok()) return;  // the resync after the reconnection catches up
          jobs_->Absorb(id, *row);
          Wake();
        },
        [this] {
          absl::StatusOr<std::vector<PostgresJobStore::Row>> rows = store_->LoadRows();
          if (rows.ok()) jobs_->AbsorbAll(*rows);
          Wake();
        });
  });
}

void Fleet::StopClaiming() {
  {
    absl::MutexLock lock(&mu_);
    claiming_ = false;
  }
  // Claimed jobs that have not started go back to the queue at once, for the other replicas.
  for (const std::string& id : jobs_->Owned()) {
    std::optional<v1::Job> job = jobs_->Get(id);
    if (!job || job->state() != v1::Job::QUEUED) continue;
    jobs_->Abandon(id);
    store_->Release(id).IgnoreError();
  }
}

void Fleet::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
    wake_ = true;
  }
  store_->StopListening();
  for (std::thread* t : {&claimer_, &lease_keeper_, &listener_}) {
    if (t->joinable()) t->join();
  }
}

void Fleet::Wake() {
  absl::MutexLock lock(&mu_);
  wake_ = true;
}

bool Fleet::ClaimOne() {
  const Scheduler::Load load = scheduler_->load();
  // A replica with no free runner still takes jobs with a cancel requested: they end here at once.
  const bool full = load.jobs >= options_.max_concurrent_jobs;
  // An idle replica takes any job its budget fits; a busy one what fits beside its jobs.
  std::optional<uint64_t> free;
  if (options_.memory_budget_bytes > 0) {
    free = options_.memory_budget_bytes - std::min(load.memory_bytes, options_.memory_budget_bytes);
  }
  absl::StatusOr<std::optional<PostgresJobStore::Row>> row = store_->Claim(free, options_.lease, full);
  if (!row.ok() || !row->has_value()) return false;
  const std::string id = JobId((*row)->record.job());
  const bool cancelled = (*row)->cancel_requested;
  const bool taken_over = (*row)->record.job().state() == v1::Job::RUNNING;
  if (taken_over && options_.metrics != nullptr) options_.metrics->JobTakenOver();
  const uint64_t bytes = jobs_->Adopt(std::move(**row));
  if (cancelled) {
    jobs_->Start(id).IgnoreError();  // CANCELLED without running: no runner needed
    return true;
  }
  if (absl::Status queued = scheduler_->Enqueue(id, bytes); !queued.ok()) {
    jobs_->Abandon(id);
    store_->Release(id).IgnoreError();
    return false;
  }
  return true;
}

void Fleet::ClaimLoop() {
  const absl::Duration poll = std::max(options_.lease / 4, absl::Milliseconds(100));
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(&wake_), poll);
      wake_ = false;
      if (stopping_) return;
      if (!claiming_) continue;
    }
    while (ClaimOne()) {
    }
  }
}

bool Fleet::Renewed(absl::Duration within) const {
  absl::MutexLock lock(&mu_);
  return absl::Now() - last_renewed_ < within;
}

void Fleet::LeaseLoop() {
  const absl::Duration period = std::max(options_.lease / 6, absl::Milliseconds(50));
  bool unreachable = false;
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping), period)) return;
    }
    // Jobs claimed before the renewal began: the store's answer covers each of them.
    const std::vector<std::string> owned = jobs_->Owned();
    const absl::Time began = absl::Now();
    absl::StatusOr<std::vector<std::string>> held =
        store_->Renew(options_.lease, options_.memory_budget_bytes, scheduler_->load().memory_bytes);
    if (options_.metrics != nullptr) options_.metrics->JobStoreReachable(held.ok());
    if (held.ok()) {
      {
        absl::MutexLock lock(&mu_);
        last_renewed_ = began;
      }
      if (unreachable) std::fprintf(stderr, "lowbitd: job store reachable again\n");
      unreachable = false;
      for (const std::string& id : owned) {
        if (std::find(held->begin(), held->end(), id) == held->end()) {
          std::fprintf(stderr, "lowbitd: jobs/%s: another replica holds it now; stopping it here\n", id.c_str());
          jobs_->Abandon(id);
          if (options_.metrics != nullptr) options_.metrics->JobLost();
        }
      }
      jobs_->RetryUnsaved();
      continue;
    }
    if (!unreachable) std::fprintf(stderr, "lowbitd: cannot renew leases: %s\n", held.status().ToString().c_str());
    unreachable = true;
    if (!Renewed(options_.lease)) {
      // Past our own lease another replica may have claimed the jobs: they stop without touching the output.
      for (const std::string& id : owned) {
        std::fprintf(stderr, "lowbitd: jobs/%s: lease not renewed for %s; stopping it here\n", id.c_str(),
                     absl::FormatDuration(options_.lease).c_str());
        jobs_->Abandon(id);
        if (options_.metrics != nullptr) options_.metrics->JobLost();
      }
    }
  }
}

absl::Status Fleet::MayCommit(const JobContext& context) {
  for (;;) {
    RETURN_IF_ERROR(context.CheckCancelled());
    if (Renewed(options_.lease / 2)) return absl::OkStatus();
    absl::SleepFor(absl::Milliseconds(100));
  }
}

absl::Status Fleet::Fits(uint64_t plan_bytes) {
  absl::StatusOr<std::optional<uint64_t>> largest = store_->LargestBudget(options_.lease * 3);
  if (!largest.ok()) return WithReason(largest.status(), "JOB_STORE_UNAVAILABLE");
  if (!largest->has_value() || plan_bytes <= **largest) return absl::OkStatus();
  return WithReason(absl::ResourceExhaustedError(absl::StrCat("the job plans ", plan_bytes,
                                                              " bytes; the largest budget of a live replica is ",
                                                              **largest, " bytes")),
                    "MEMORY_LIMIT");
}

}  // namespace lowbit::server

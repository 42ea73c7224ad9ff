// JobRegistry: every job the server knows, its current state, and the watchers waiting on changes.
//
// The registry is the single source of truth for job records; each update bumps a per-job version and
// wakes watchers. Records are persisted to the JobStore at state changes (not at every layer, which is
// progress, not state). Thread-safe.
#ifndef LOWBIT_SERVER_JOB_REGISTRY_H_
#define LOWBIT_SERVER_JOB_REGISTRY_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lowbit/v1/quantizer.pb.h"
#include "server/job_store.h"

namespace lowbit::server {

bool IsTerminal(v1::Job::State state);

class JobRegistry {
 public:
  // `store` may be null (jobs then live in memory only); not owned.
  explicit JobRegistry(JobStore* store) : store_(store) {}

  // Loads persisted jobs. Jobs that were RUNNING when the server stopped become FAILED (their output was
  // never committed); QUEUED jobs stay QUEUED and are returned so the caller can queue them again.
  absl::StatusOr<std::vector<std::string>> Restore();

  // Creates a QUEUED job for `request`, or returns the existing job with the same non-empty request_id
  // (`*created` says which).
  v1::Job Create(const v1::QuantizeModelRequest& request, bool* created);
  std::optional<v1::Job> Get(const std::string& id) const;
  // The job created for a request id; nullopt for an empty or unknown id.
  std::optional<v1::Job> GetByRequestId(const std::string& request_id) const;

  struct Page {
    std::vector<v1::Job> jobs;
    std::string next_page_token;
  };
  // Jobs in creation order, optionally only those in `state` (STATE_UNSPECIFIED: all).
  Page List(int page_size, const std::string& page_token, v1::Job::State state) const;

  // Applies `mutate` to the job under the lock and wakes watchers; persists if the state changed.
  // NOT_FOUND for an unknown id.
  absl::Status Update(const std::string& id, const std::function<void(v1::Job&)>& mutate);

  // The job once its version passes `seen_version` (or at `deadline`, whichever comes first), with
  // its version. nullopt for an unknown id.
  std::optional<std::pair<v1::Job, int64_t>> WaitForChange(const std::string& id, int64_t seen_version,
                                                           absl::Time deadline) const;

  void RequestCancel(const std::string& id);
  bool CancelRequested(const std::string& id) const;

  // Forgets a finished job. FAILED_PRECONDITION while it is queued or running.
  absl::Status Delete(const std::string& id);
  // Forgets a job that was created but never admitted to the queue.
  void Discard(const std::string& id);

 private:
  struct Entry {
    v1::Job job;
    int64_t version = 0;
    bool cancel_requested = false;
  };
  std::string NewId() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Persist(const v1::Job& job) const;

  JobStore* const store_;
  mutable absl::Mutex mu_;
  std::map<std::string, Entry> jobs_ ABSL_GUARDED_BY(mu_);                   // id -> job; ids sort by creation
  std::map<std::string, std::string> by_request_id_ ABSL_GUARDED_BY(mu_);   // request_id -> id
  uint64_t sequence_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace lowbit::server

#endif  // LOWBIT_SERVER_JOB_REGISTRY_H_

// JobManager: every job the server knows, and the one place that changes them.
//
// The services (quantizer_service.h) are stateless and go through it; the executor reports through it.
// A job moves between states only through Transition(), which refuses a move the table kLegalMoves does
// not list. Every change bumps the job's version and wakes its watchers; state changes are persisted to the
// JobStore outside the registry's lock, never an older version over a newer one. Submit() owns admission: a
// job exists (and its operation is handed out) only once its record is durably stored and the scheduler
// has taken it; a refused request leaves nothing behind. Thread-safe.
#ifndef LOWBIT_SERVER_JOB_MANAGER_H_
#define LOWBIT_SERVER_JOB_MANAGER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/job/quantize_job.h"
#include "core/storage/object_store.h"
#include "lowbit/v1/quantizer.pb.h"
#include "server/job_store.h"
#include "server/postgres_job_store.h"
#include "server/metrics.h"
#include "server/scheduler.h"

namespace lowbit::server {

class Fleet;

bool IsTerminal(v1::Job::State state);

// Which jobs a List returns: those in `state` (STATE_UNSPECIFIED: any) carrying every label of `labels`.
struct JobFilter {
  JobFilter(v1::Job::State s = v1::Job::STATE_UNSPECIFIED) : state(s) {}  // NOLINT: a state alone is a filter
  v1::Job::State state;
  std::map<std::string, std::string> labels;
  bool Matches(const v1::Job& job) const;
};

class JobManager {
 public:
  struct Options {
    JobOptions job;  ///< what jobs run with: planning at submit uses the same bounds and memory limit
    absl::Duration retention = absl::Hours(24 * 7);  ///< finished jobs' records are pruned after this
    size_t max_list_bytes = 2 << 20;  ///< a List page stops growing past this many encoded bytes
    std::string replica;  ///< this server's name, shown in the jobs it runs
    // In a fleet, how often a running job's progress is saved for the other replicas' watchers.
    absl::Duration publish_interval = absl::Seconds(1);
  };
  // `store` may be null (jobs then live in memory only); `objects` and `metrics` may be null in tests.
  // Nothing is owned.
  JobManager(const Options& options, JobStore* store, ObjectStore* objects, Metrics* metrics)
      : options_(options), store_(store), objects_(objects), metrics_(metrics) {}

  // Loads persisted jobs and prunes expired ones. A job that was RUNNING when the server stopped goes back
  // to QUEUED (its uncommitted output is rolled back when it runs again).
  absl::Status Restore();
  // Hands the QUEUED jobs to `scheduler`, which new submits also go to. Not owned.
  void StartScheduling(Scheduler* scheduler);
  // Before Restore: jobs are shared with other replicas through `fleet`'s store (which is `store`), and
  // run here only once claimed. Not owned.
  void JoinFleet(Fleet* fleet) { fleet_ = fleet; }

  // --- For the services ---
  // The new job, or the job an earlier request with the same request_id created (ALREADY_EXISTS if that
  // request differs). With request.validate_only(), the job as it would be queued, and nothing stored.
  absl::StatusOr<v1::Job> Submit(const v1::QuantizeModelRequest& request);
  absl::StatusOr<v1::Job> Cancel(const std::string& id);
  // Forgets a finished job and, with `outputs`, deletes the files it committed (its result's files and
  // report). FAILED_PRECONDITION while it is queued or running, or while another job holds its destination.
  absl::Status Delete(const std::string& id, bool outputs = false);
  std::optional<v1::Job> Get(const std::string& id) const;

  struct Page {
    std::vector<v1::Job> jobs;
    std::string next_page_token;
  };
  // Jobs in creation order that `filter` matches; at most `page_size` jobs and, beyond the first,
  // options.max_list_bytes encoded bytes.
  Page List(int page_size, const std::string& page_token, const JobFilter& filter) const;

  // The job once its version passes `seen_version` (or at `deadline`, whichever comes first), with
  // its version. nullopt for an unknown id.
  std::optional<std::pair<v1::Job, int64_t>> WaitForChange(const std::string& id, int64_t seen_version,
                                                           absl::Time deadline) const;
  // Calls `on_change` (from the changing thread, without the registry's lock) after every change of job
  // `id`. Unsubscribe returns once no call is running, so the listener may be freed afterwards.
  using Listener = std::function<void()>;
  int64_t Subscribe(const std::string& id, Listener on_change);
  void Unsubscribe(int64_t subscription);

  // --- For the executor ---
  // QUEUED -> RUNNING; the job's record (with its attempt counted). CANCELLED if a cancel came first.
  absl::StatusOr<JobRecord> Start(const std::string& id);
  // Progress of a running job: `mutate` may not change its state.
  void Progress(const std::string& id, const std::function<void(v1::Job&)>& mutate);
  // Records, durably, where the running attempt got to, for the next attempt after an interruption.
  void Checkpoint(const std::string& id, const ResumePoint& point);
  // RUNNING -> SUCCEEDED, FAILED or CANCELLED from the job's outcome; back to QUEUED if it was preempted
  // by a shutdown (not cancelled by a user).
  void Finish(const std::string& id, const absl::StatusOr<JobReport>& report, bool preempted, double seconds);
  bool CancelRequested(const std::string& id) const;
  // CANCELLED if the job is to stop: a cancel, or (ABORTED) this replica no longer holds it.
  absl::Status CheckRunnable(const std::string& id) const;
  // Before a job commits its output: OK while no other replica can have taken it over.
  absl::Status MayCommit(const JobContext& context) const;

  // --- For the fleet (server/fleet.h) ---
  // A job this replica claimed; one another replica was running goes back to QUEUED first, in memory
  // (its next save, at Start, carries it). Returns its planned memory.
  uint64_t Adopt(PostgresJobStore::Row row);
  // What the store now says of job `id` (nullopt: deleted), from a notification. Jobs held here keep
  // their own record and take only a cancel from it.
  void Absorb(const std::string& id, const std::optional<PostgresJobStore::Row>& row);
  void AbsorbAll(const std::vector<PostgresJobStore::Row>& rows);
  // This replica lost its claim of job `id`: it stops, writing nothing more.
  void Abandon(const std::string& id);
  // The jobs whose claim this replica holds.
  std::vector<std::string> Owned() const;
  // Saves again the records whose last save failed (the store was unreachable).
  void RetryUnsaved();

  // Forgets finished jobs that ended before `now - retention`. Returns how many.
  int PruneExpired(absl::Time now);

 private:
  struct Entry {
    JobRecord record;
    bool cancel_requested = false;
    bool owned = true;          ///< this replica writes its record (always, on a single node)
    absl::Time published;       ///< in a fleet: when its progress was last saved
  };
  bool InFleet() const { return fleet_ != nullptr; }
  void AbsorbLocked(const std::string& id, const PostgresJobStore::Row& row) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The same job known by `request_id`, if any: in a fleet the store's, else this server's.
  absl::StatusOr<std::optional<v1::Job>> FindRequest(const std::string& request_id) const;
  // Moves job `id` to `to` and applies `mutate`, or FAILED_PRECONDITION for a move kLegalMoves does not
  // allow. Persists and notifies outside the lock.
  absl::Status Transition(const std::string& id, v1::Job::State to, const std::function<void(JobRecord&)>& mutate);
  // FAILED_PRECONDITION if job `id` may not move to `to`: kLegalMoves, or another replica holds it.
  absl::Status CheckMove(const std::string& id, v1::Job::State to) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  absl::Status Persist(const JobRecord& record);
  absl::Status DeleteOutputs(const v1::Job& job);
  void Notify(const std::string& id);
  // The checks of a submit that read the store: the source's headers, the plan, the destination.
  absl::StatusOr<v1::ResourcePlan> Admit(const v1::QuantizeModelRequest& request, const QuantizeJobSpec& spec) const;
  std::string NewId() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  JobStore* const store_;
  ObjectStore* const objects_;
  Metrics* const metrics_;
  Scheduler* scheduler_ = nullptr;  // set once by StartScheduling
  Fleet* fleet_ = nullptr;          // set once by JoinFleet

  absl::Mutex submit_mu_;  // serializes submits: one request_id, one job, however many race
  mutable absl::Mutex mu_;
  std::map<std::string, Entry> jobs_ ABSL_GUARDED_BY(mu_);                  // id -> job; ids sort by creation
  std::map<std::string, std::string> by_request_id_ ABSL_GUARDED_BY(mu_);  // request_id -> id
  uint64_t sequence_ ABSL_GUARDED_BY(mu_) = 0;

  absl::Mutex persist_mu_;  // orders saves: never an older version over a newer one
  std::map<std::string, int64_t> persisted_version_ ABSL_GUARDED_BY(persist_mu_);
  std::set<std::string> unsaved_ ABSL_GUARDED_BY(persist_mu_);  // ids whose latest save failed

  absl::Mutex listeners_mu_;
  std::multimap<std::string, std::pair<int64_t, Listener>> listeners_ ABSL_GUARDED_BY(listeners_mu_);
  int64_t next_subscription_ ABSL_GUARDED_BY(listeners_mu_) = 0;
};

}  // namespace lowbit::server

#endif  // LOWBIT_SERVER_JOB_MANAGER_H_

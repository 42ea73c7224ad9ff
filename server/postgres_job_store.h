// PostgresJobStore: the job store many lowbitd replicas share (--job_store=postgres://...), and the work
// queue they take jobs from.
//
// One row per job in lowbit_jobs: the JobRecord as JSON (readable with psql), its state, version and plan,
// and the claim: the replica holding the job (`owner`) until `lease_until`. The rules, which the SQL
// below enforces rather than trusts the caller to:
//   - Only the holder of a claim writes a job's record, and never an older version over a newer one.
//     A new job is inserted unclaimed; saving a job QUEUED or finished releases its claim.
//   - A replica claims a queued job with SELECT ... FOR UPDATE SKIP LOCKED: replicas racing for the queue
//     each get a different job, or none, without waiting on each other.
//   - A claim lives while its holder renews the lease. A job whose lease expired (its replica died) is
//     claimed again, but not within one lease of a PostgreSQL start: after a database restart the holders
//     get the time to renew before anyone takes their jobs away.
//   - Any replica may ask for a cancel (a flag the holder sees through its notifications).
// Every change of a job's record, claim or cancel flag NOTIFYs channel lowbit_jobs with the job's id
// (a trigger, so no writer can forget it); replicas LISTEN for it to update their watchers.
// lowbit_replicas holds each live replica's memory budget, for admission across the fleet.
//
// Schema migrations run at Connect, each once, under an advisory lock so replicas starting together do
// not race. Thread-safe: calls share one connection under a mutex; Listen has its own. A lost connection
// (a database restart) is reopened at the next call, which is retried once; calls fail UNAVAILABLE while
// the database cannot be reached.
#ifndef LOWBIT_SERVER_POSTGRES_JOB_STORE_H_
#define LOWBIT_SERVER_POSTGRES_JOB_STORE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/job_store.h"

namespace pqxx {
class connection_base;
}

namespace lowbit::server {

class PostgresJobStore final : public JobStore {
 public:
  // `uri`: a libpq connection URI (postgres://user@host:port/db?...). `replica`: this process's name in
  // claims, unique per process start.
  static absl::StatusOr<std::unique_ptr<PostgresJobStore>> Connect(const std::string& uri, const std::string& replica);
  ~PostgresJobStore() override;

  // FAILED_PRECONDITION when another replica holds the job; ALREADY_EXISTS when a new job's request_id
  // is another job's.
  absl::Status Save(const JobRecord& record) override;
  // Finished, unclaimed jobs only.
  absl::Status Delete(const std::string& job_id) override;
  absl::StatusOr<std::vector<JobRecord>> LoadAll() override;

  struct Row {
    JobRecord record;
    std::string owner;  ///< the replica holding it; empty when unclaimed
    bool cancel_requested = false;
  };
  absl::StatusOr<std::vector<Row>> LoadRows();
  // nullopt for a job that no longer exists.
  absl::StatusOr<std::optional<Row>> Load(const std::string& job_id) { return LoadWhere("id", job_id); }
  absl::StatusOr<std::optional<Row>> LoadByRequestId(const std::string& request_id) {
    return LoadWhere("request_id", request_id);
  }

  // Claims the oldest job this replica may run: a queued job planned within `free_bytes` (any size with
  // nullopt), one whose lease expired, or any job with a cancel requested (it ends at once), which come
  // first. `cancelled_only`: only those, for a replica with no free runner.
  absl::StatusOr<std::optional<Row>> Claim(std::optional<uint64_t> free_bytes, absl::Duration lease,
                                           bool cancelled_only = false);
  // Extends every lease this replica holds and advertises its budget; the ids it still holds.
  absl::StatusOr<std::vector<std::string>> Renew(absl::Duration lease, uint64_t memory_budget, uint64_t running_bytes);
  // Gives up the claim of a job this replica will not run (its record stays as it was).
  absl::Status Release(const std::string& job_id);
  absl::Status RequestCancel(const std::string& job_id);
  // The largest memory budget a live replica advertises: nullopt if one has none, 0 if none is live.
  absl::StatusOr<std::optional<uint64_t>> LargestBudget(absl::Duration live_within);

  // Calls `on_change(job_id)` for every notification until StopListening(), reconnecting as needed;
  // `on_resync()` after each (re)connection, since notifications sent meanwhile are lost. Blocks.
  void Listen(const std::function<void(const std::string&)>& on_change, const std::function<void()>& on_resync);
  void StopListening() { listening_ = false; }

  const std::string& replica() const { return replica_; }

 private:
  PostgresJobStore(std::string uri, std::string replica);
  absl::Status Migrate();
  // The job whose `column` (a constant of this class, never client input) equals `value`.
  absl::StatusOr<std::optional<Row>> LoadWhere(const char* column, const std::string& value);
  // Runs `body` on the shared connection, (re)connecting first if needed and once more if the connection
  // turns out to be broken. Database errors become statuses.
  absl::Status WithConnection(const std::function<void(pqxx::connection_base&)>& body);

  const std::string uri_;
  const std::string replica_;
  absl::Mutex mu_;
  struct Connection;  // pqxx::connection, which libpqxx does not let a header declare
  std::unique_ptr<Connection> connection_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> listening_{true};
};

}  // namespace lowbit::server

#endif  // LOWBIT_SERVER_POSTGRES_JOB_STORE_H_

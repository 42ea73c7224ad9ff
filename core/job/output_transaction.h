// The destination of a job, from its lock to its commit.
//
// A job owns its destination directory from the moment it takes the lock object there (kLockObject,
// created with CreateExclusive and naming the job) until it ends: no other job can write the same
// directory, even from another server. Everything a job writes goes to the staging directory inside it
// (kStagingDir) and moves into place only at Commit, the report last. The report is the commit marker:
// until it is there nothing looks like a finished model, and an `overwrite` job that fails or is
// cancelled leaves the old output whole. A job that died keeps its lock; when it runs again it finds the
// lock its own and Begin() discards what the dead attempt left (partial files, open uploads, staging).
#ifndef LOWBIT_CORE_JOB_OUTPUT_TRANSACTION_H_
#define LOWBIT_CORE_JOB_OUTPUT_TRANSACTION_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/job/report.h"
#include "core/storage/object_store.h"

namespace lowbit {

inline constexpr char kLockObject[] = ".lowbit-lock";
inline constexpr char kStagingDir[] = ".lowbit-staging";
// A job's scratch inside the staging directory (a calibrated job's resume state): kept across attempts
// like staged objects, never moved into the output, discarded with the staging.
inline constexpr char kScratchDir[] = ".scratch";

// A lock owner for a run that no server names (the local CLI): host, process and a random tail.
std::string NewLockOwner();

// Takes the lock at `dir` for `owner`: OK when taken now (*held_before false) or already held by
// `owner` (true, a run after an interruption); FAILED_PRECONDITION naming the holder otherwise.
absl::Status LockDestination(ObjectStore* store, const std::string& dir, const std::string& owner, bool* held_before);
// Deletes the lock at `dir` if `owner` holds it.
absl::Status UnlockDestination(ObjectStore* store, const std::string& dir, const std::string& owner);
// The output at `dir`: its objects but the lock and the staging directory.
absl::StatusOr<std::vector<ObjectInfo>> OutputObjects(ObjectStore* store, const std::string& dir);
// OK if the output at `dir` is empty or `overwrite` is set; ALREADY_EXISTS otherwise.
absl::Status CheckDestination(ObjectStore* store, const std::string& dir, bool overwrite);
// Removes the staging directory at `dir` and any incomplete writes under it (a job's end, whatever it was).
absl::Status DiscardStaging(ObjectStore* store, const std::string& dir);
// A job done with `dir` for good: its staging discarded and its lock released, unless another owner holds
// the lock (a run refused because of that lock must not touch its holder's staging).
absl::Status ReleaseDestination(ObjectStore* store, const std::string& dir, const std::string& owner);

class OutputTransaction {
 public:
  // `keep_on_failure`: an uncommitted transaction leaves what it staged for the job's next attempt (its
  // caller holds the destination across attempts and calls DiscardStaging when the job ends).
  OutputTransaction(ObjectStore* store, std::string dir, bool keep_on_failure = false);
  // Rolls back unless committed: the staged objects are deleted (unless kept), the old output stays.
  ~OutputTransaction();

  // Discards what an earlier attempt of the same job left: incomplete writes under the destination and the
  // staging directory, but for `keep`, staged objects this run goes on from (a resumed job's shards).
  // Call once, with the lock held, before writing.
  absl::Status Begin(const std::vector<std::string>& keep = {});
  // Where objects are staged; readers of the output before Commit (the job's evaluation) read here.
  const std::string& staging() const { return staging_; }
  absl::StatusOr<std::unique_ptr<ObjectWriter>> NewWriter(absl::string_view name);
  absl::Status WriteAll(absl::string_view name, absl::string_view data, JobReport* report);
  // Replaces the old output by the staged one: the old report (the old commit marker) goes first, then the
  // rest of the old output, then the staged objects move into place, `report_name` last.
  absl::Status Commit(absl::string_view report_name);

 private:
  ObjectStore* const store_;
  const std::string dir_, staging_;
  const bool keep_on_failure_;
  std::vector<std::string> staged_;  // names relative to the staging directory, in write order
  bool committed_ = false;
};

}  // namespace lowbit

#endif  // LOWBIT_CORE_JOB_OUTPUT_TRANSACTION_H_

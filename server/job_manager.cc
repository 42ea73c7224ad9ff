#include "server/job_manager.h"

#include <cstdio>
#include <random>

#include <google/protobuf/util/message_differencer.h>
#include <google/protobuf/util/time_util.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/cleanup/cleanup.h"
#include "core/checkpoint/checkpoint_reader.h"
#include "core/job/output_transaction.h"
#include "core/job/job_plan.h"
#include "core/util/status_macros.h"
#include "server/fleet.h"
#include "server/grpc_status.h"
#include "server/proto_convert.h"

namespace lowbit::server {
namespace {

using google::protobuf::util::TimeUtil;

// The moves a job may make; anything else is a bug in the caller and is refused.
struct Move {
  v1::Job::State from, to;
};
constexpr Move kLegalMoves[] = {
    {v1::Job::QUEUED, v1::Job::RUNNING},      // the scheduler starts it
    {v1::Job::QUEUED, v1::Job::CANCELLED},    // cancelled before it started
    {v1::Job::RUNNING, v1::Job::SUCCEEDED},   // committed
    {v1::Job::RUNNING, v1::Job::FAILED},      //
    {v1::Job::RUNNING, v1::Job::CANCELLED},   // cancelled by a user
    {v1::Job::RUNNING, v1::Job::QUEUED},      // preempted by a shutdown, or interrupted by a crash
};

bool Legal(v1::Job::State from, v1::Job::State to) {
  for (const Move& m : kLegalMoves) {
    if (m.from == from && m.to == to) return true;
  }
  return false;
}

// A job that was running when its server (or the replica holding it) went away, back to QUEUED: its
// next attempt rolls back or resumes what the interrupted one left.
void MarkInterrupted(JobRecord& record, const std::string& why) {
  record.set_last_interruption(why);
  v1::Job& job = *record.mutable_job();
  job.set_state(v1::Job::QUEUED);
  job.clear_start_time();
  job.clear_eta();
  job.clear_phase();
  record.set_version(record.version() + 1);
}

}  // namespace

bool IsTerminal(v1::Job::State state) {
  return state == v1::Job::SUCCEEDED || state == v1::Job::FAILED || state == v1::Job::CANCELLED;
}

std::string JobManager::NewId() {
  // Sortable by creation time (so listing in id order is listing in creation order), unique per process
  // by the sequence number, and across restarts by the random tail.
  static thread_local std::mt19937 rng{std::random_device{}()};
  return absl::StrFormat("%s-%04d-%04x", absl::FormatTime("%Y%m%d%H%M%S", absl::Now(), absl::UTCTimeZone()),
                         ++sequence_ % 10000, rng() & 0xffff);
}

absl::Status JobManager::Persist(const JobRecord& record) {
  if (store_ == nullptr) return absl::OkStatus();
  const std::string id = JobId(record.job());
  {
    absl::MutexLock lock(&persist_mu_);
    int64_t& persisted = persisted_version_[id];
    if (record.version() <= persisted) return absl::OkStatus();  // a newer save won the race
    if (absl::Status saved = store_->Save(record); !saved.ok()) {
      unsaved_.insert(id);
      return saved;
    }
    persisted = record.version();
    unsaved_.erase(id);
  }
  // In a fleet a record saved QUEUED or finished gave its claim back (server/postgres_job_store.h).
  if (InFleet() && record.job().state() != v1::Job::RUNNING) {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(id);
    if (it != jobs_.end() && it->second.record.version() == record.version()) it->second.owned = false;
  }
  return absl::OkStatus();
}

void JobManager::RetryUnsaved() {
  std::vector<std::string> ids;
  {
    absl::MutexLock lock(&persist_mu_);
    ids.assign(unsaved_.begin(), unsaved_.end());
  }
  for (const std::string& id : ids) {
    JobRecord snapshot;
    {
      absl::ReaderMutexLock lock(&mu_);
      auto it = jobs_.find(id);
      if (it == jobs_.end() || !it->second.owned) continue;
      snapshot = it->second.record;
    }
    if (Persist(snapshot).ok()) std::fprintf(stderr, "lowbitd: jobs/%s: record saved after an outage of the job store\n", id.c_str());
  }
}

void JobManager::Notify(const std::string& id) {
  absl::MutexLock lock(&listeners_mu_);
  for (auto [it, end] = listeners_.equal_range(id); it != end; ++it) it->second.second();
}

int64_t JobManager::Subscribe(const std::string& id, Listener on_change) {
  absl::MutexLock lock(&listeners_mu_);
  const int64_t subscription = ++next_subscription_;
  listeners_.emplace(id, std::make_pair(subscription, std::move(on_change)));
  return subscription;
}

void JobManager::Unsubscribe(int64_t subscription) {
  absl::MutexLock lock(&listeners_mu_);
  for (auto it = listeners_.begin(); it != listeners_.end(); ++it) {
    if (it->second.first == subscription) {
      listeners_.erase(it);
      return;
    }
  }
}

absl::Status JobManager::Restore() {
  if (store_ == nullptr) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::vector<JobRecord> records, store_->LoadAll());
  std::vector<JobRecord> interrupted;
  {
    absl::MutexLock lock(&mu_);
    for (JobRecord& record : records) {
      const std::string id = JobId(record.job());
      // The server died under it: RUNNING -> QUEUED. In a fleet, leases tell when a holder died instead.
      if (!InFleet() && record.job().state() == v1::Job::RUNNING) {
        MarkInterrupted(record, absl::StrCat("the server stopped while attempt ", record.attempts(), " was running"));
        interrupted.push_back(record);
      }
      if (!record.job().request().request_id().empty()) by_request_id_[record.job().request().request_id()] = id;
      Entry& entry = jobs_[id];
      entry.record = std::move(record);
      entry.owned = !InFleet();
    }
  }
  for (const JobRecord& record : interrupted) RETURN_IF_ERROR(Persist(record));
  const int pruned = PruneExpired(absl::Now());
  if (pruned > 0) std::fprintf(stderr, "lowbitd: pruned %d finished job(s) past the retention period\n", pruned);
  return absl::OkStatus();
}

void JobManager::StartScheduling(Scheduler* scheduler) {
  std::vector<std::pair<std::string, uint64_t>> queued;
  {
    absl::MutexLock lock(&mu_);
    scheduler_ = scheduler;
    if (InFleet()) return;  // queued jobs come through claims
    for (const auto& [id, entry] : jobs_) {
      if (entry.record.job().state() == v1::Job::QUEUED) {
        queued.emplace_back(id, static_cast<uint64_t>(entry.record.job().plan().total_bytes()));
      }
    }
  }
  for (const auto& [id, bytes] : queued) {
    if (absl::Status s = scheduler->Enqueue(id, bytes); !s.ok()) {
      std::fprintf(stderr, "lowbitd: cannot requeue %s: %s\n", id.c_str(), s.ToString().c_str());
    }
  }
}

absl::StatusOr<v1::ResourcePlan> JobManager::Admit(const v1::QuantizeModelRequest& request,
                                                   const QuantizeJobSpec& spec) const {
  // Check what the store can tell before the job is queued: a missing or corrupt source, an occupied
  // destination. Only headers are read.
  absl::StatusOr<std::unique_ptr<CheckpointReader>> reader = OpenCheckpoint(objects_, spec.source_uri);
  if (!reader.ok()) {
    return WithReason(reader.status(), absl::IsNotFound(reader.status()) ? "SOURCE_NOT_FOUND" : "SOURCE_UNREADABLE");
  }
  // The plan from the headers alone: a job that cannot fit is refused now, not after it was accepted.
  absl::StatusOr<ResourceEstimate> estimate =
      EstimateResources((*reader)->descriptor(), (*reader)->tensors(), spec, options_.job);
  if (!estimate.ok()) {
    return WithReason(estimate.status(),
                      absl::IsUnimplemented(estimate.status()) ? "ARCHITECTURE_UNSUPPORTED" : "SOURCE_UNREADABLE");
  }
  if (InFleet()) {
    RETURN_IF_ERROR(fleet_->Fits(estimate->total));  // some replica must be able to run it
  } else {
    RETURN_IF_ERROR(WithReason(CheckMemoryLimit(*estimate, options_.job.memory_limit_bytes), "MEMORY_LIMIT"));
  }
  return ToProto(*estimate, options_.job.memory_limit_bytes);
}

absl::StatusOr<std::optional<v1::Job>> JobManager::FindRequest(const std::string& request_id) const {
  if (InFleet()) {
    absl::StatusOr<std::optional<PostgresJobStore::Row>> row = fleet_->store()->LoadByRequestId(request_id);
    if (!row.ok()) return WithReason(row.status(), "JOB_STORE_UNAVAILABLE");
    if (!row->has_value()) return std::nullopt;
    return (*row)->record.job();
  }
  absl::ReaderMutexLock lock(&mu_);
  auto it = by_request_id_.find(request_id);
  if (it == by_request_id_.end()) return std::nullopt;
  return jobs_.at(it->second).record.job();
}

absl::StatusOr<v1::Job> JobManager::Submit(const v1::QuantizeModelRequest& request) {
  ASSIGN_OR_RETURN(QuantizeJobSpec spec, JobSpecFromRequest(request));
  absl::MutexLock submitting(&submit_mu_);
  // AIP-155: a retry with a known request id gets the same operation, whatever the store says now; the
  // same id with different parameters is a client error, not a retry.
  auto known_request = [&]() -> absl::StatusOr<std::optional<v1::Job>> {
    if (request.request_id().empty()) return std::nullopt;
    ASSIGN_OR_RETURN(std::optional<v1::Job> known, FindRequest(request.request_id()));
    if (known && !google::protobuf::util::MessageDifferencer::Equals(known->request(), request)) {
      return WithReason(absl::AlreadyExistsError(absl::StrCat("request_id '", request.request_id(), "' was used by ",
                                                              known->name(), " with different parameters")),
                        "REQUEST_ID_REUSED");
    }
    return known;
  };
  ASSIGN_OR_RETURN(std::optional<v1::Job> known, known_request());
  if (known) return *known;
  ASSIGN_OR_RETURN(const v1::ResourcePlan plan, Admit(request, spec));
  if (request.validate_only()) {
    v1::Job job;
    *job.mutable_request() = request;
    *job.mutable_plan() = plan;
    return job;
  }
  if (scheduler_ == nullptr) return absl::UnavailableError("the server is not scheduling jobs yet");
  if (!InFleet()) RETURN_IF_ERROR(scheduler_->CanEnqueue());  // a fleet's queue is the store

  JobRecord record;
  v1::Job& job = *record.mutable_job();
  {
    absl::MutexLock lock(&mu_);
    job.set_name(absl::StrCat("jobs/", NewId()));
  }
  const std::string id = JobId(job);
  RETURN_IF_ERROR(CheckDestinationApart(spec, objects_, objects_));
  // The job holds its destination from now to its end (core/job/output_transaction.h): a second job for
  // it, from this server or another, is refused here.
  bool held_before = false;
  RETURN_IF_ERROR(WithReason(LockDestination(objects_, spec.destination_uri, job.name(), &held_before),
                             "DESTINATION_LOCKED"));
  absl::Cleanup unlock = [&] { UnlockDestination(objects_, spec.destination_uri, job.name()).IgnoreError(); };
  RETURN_IF_ERROR(WithReason(CheckDestination(objects_, spec.destination_uri, spec.overwrite), "DESTINATION_EXISTS"));
  job.set_state(v1::Job::QUEUED);
  *job.mutable_request() = request;
  *job.mutable_create_time() = NowTimestamp();
  *job.mutable_plan() = plan;
  record.set_version(1);
  // Durable before visible: a record that could not be written is no job at all.
  if (absl::Status saved = Persist(record); !saved.ok()) {
    if (absl::IsAlreadyExists(saved)) {  // another replica stored this request_id first: its job is the answer
      ASSIGN_OR_RETURN(std::optional<v1::Job> winner, known_request());
      if (winner) return *winner;
    }
    return WithReason(absl::UnavailableError(absl::StrCat("the job could not be recorded, so it was not accepted: ",
                                                          saved.message())),
                      "JOB_STORE_UNAVAILABLE");
  }
  {
    absl::MutexLock lock(&mu_);
    if (!request.request_id().empty()) by_request_id_[request.request_id()] = id;
    Entry& entry = jobs_[id];
    entry.record = record;
    entry.owned = !InFleet();  // a fleet's new job is unclaimed: whichever replica has room takes it
  }
  if (InFleet()) {
    std::move(unlock).Cancel();
    fleet_->Wake();
    if (metrics_ != nullptr) metrics_->JobSubmitted();
    return job;
  }
  if (absl::Status queued = scheduler_->Enqueue(id, static_cast<uint64_t>(plan.total_bytes())); !queued.ok()) {
    {
      absl::MutexLock lock(&mu_);
      by_request_id_.erase(request.request_id());
      jobs_.erase(id);
    }
    if (store_ != nullptr) store_->Delete(id).IgnoreError();
    return queued;
  }
  std::move(unlock).Cancel();  // the job has it now
  if (metrics_ != nullptr) metrics_->JobSubmitted();
  return job;
}

absl::Status JobManager::CheckMove(const std::string& id, v1::Job::State to) const {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("no job ", id));
  if (!it->second.owned) return absl::FailedPreconditionError(absl::StrCat("job ", id, " is held by another replica"));
  const v1::Job::State from = it->second.record.job().state();
  if (!Legal(from, to)) {
    return absl::FailedPreconditionError(absl::StrCat("job ", id, " cannot move from ", v1::Job::State_Name(from),
                                                      " to ", v1::Job::State_Name(to)));
  }
  return absl::OkStatus();
}

absl::Status JobManager::Transition(const std::string& id, v1::Job::State to,
                                    const std::function<void(JobRecord&)>& mutate) {
  if (IsTerminal(to)) {
    // A finished job gives its destination back, staging and lock, before anyone can see it finished. A
    // crash in between leaves a RUNNING record that runs again from the start: never a lock or staging
    // beside a finished job.
    std::string destination, name;
    {
      absl::ReaderMutexLock lock(&mu_);
      RETURN_IF_ERROR(CheckMove(id, to));
      const v1::Job& job = jobs_.at(id).record.job();
      destination = job.request().destination_uri();
      name = job.name();
    }
    if (objects_ != nullptr) {
      if (absl::Status s = ReleaseDestination(objects_, destination, name); !s.ok()) {
        std::fprintf(stderr, "lowbitd: cannot release the destination of %s: %s\n", id.c_str(), s.ToString().c_str());
      }
    }
  }
  JobRecord snapshot;
  {
    absl::MutexLock lock(&mu_);
    RETURN_IF_ERROR(CheckMove(id, to));
    JobRecord& record = jobs_.at(id).record;
    record.mutable_job()->set_state(to);
    if (mutate) mutate(record);
    if (IsTerminal(to)) {  // nothing to resume from any more; the shards go with the staging below
      record.clear_committed_shards();
      record.clear_tensors_done();
      record.clear_committed_layers();
      record.clear_resume_block();
    }
    record.set_version(record.version() + 1);
    snapshot = record;
  }
  // A state reached in memory stands even if the disk refuses it; the next save carries it.
  if (absl::Status s = Persist(snapshot); !s.ok()) {
    std::fprintf(stderr, "lowbitd: cannot persist %s: %s\n", id.c_str(), s.ToString().c_str());
  }
  Notify(id);
  return absl::OkStatus();
}

absl::StatusOr<v1::Job> JobManager::Cancel(const std::string& id) {
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return WithReason(absl::NotFoundError(absl::StrCat("no job jobs/", id)), "JOB_NOT_FOUND");
    const v1::Job& job = it->second.record.job();
    if (IsTerminal(job.state())) {
      return WithReason(absl::FailedPreconditionError(absl::StrCat("job ", job.name(), " already ended as ",
                                                                   v1::Job::State_Name(job.state()))),
                        "JOB_ALREADY_ENDED");
    }
    it->second.cancel_requested = true;  // a running job sees it at its next check
  }
  if (InFleet()) {
    // The holder, on whichever replica, sees the flag through its notification; an unclaimed job is
    // claimed by the first replica to see it, and ends at once.
    RETURN_IF_ERROR(WithReason(fleet_->store()->RequestCancel(id), "JOB_STORE_UNAVAILABLE"));
  }
  if (scheduler_ != nullptr && scheduler_->RemoveQueued(id)) {
    Transition(id, v1::Job::CANCELLED, [](JobRecord& r) {
      *r.mutable_job()->mutable_error() = ToRpcStatus(absl::CancelledError("job cancelled before it started"));
      *r.mutable_job()->mutable_end_time() = NowTimestamp();
    }).IgnoreError();
    if (metrics_ != nullptr) metrics_->JobFinished("cancelled", 0);
  }
  return *Get(id);
}

absl::StatusOr<JobRecord> JobManager::Start(const std::string& id) {
  if (CancelRequested(id)) {
    RETURN_IF_ERROR(Transition(id, v1::Job::CANCELLED, [](JobRecord& r) {
      *r.mutable_job()->mutable_error() = ToRpcStatus(absl::CancelledError("job cancelled before it started"));
      *r.mutable_job()->mutable_end_time() = NowTimestamp();
    }));
    if (metrics_ != nullptr) metrics_->JobFinished("cancelled", 0);
    return absl::CancelledError("job cancelled before it started");
  }
  JobRecord started;
  RETURN_IF_ERROR(Transition(id, v1::Job::RUNNING, [this, &started](JobRecord& r) {
    r.set_attempts(r.attempts() + 1);
    v1::Job& j = *r.mutable_job();
    *j.mutable_start_time() = NowTimestamp();
    j.clear_layers();
    for (const v1::LayerReport& layer : r.committed_layers()) *j.add_layers() = layer;  // kept by a resumed run
    j.set_layers_done(j.layers_size());
    j.set_phase(v1::Job::PLANNING);
    j.set_replica(options_.replica);
    started = r;
  }));
  return started;
}

void JobManager::Progress(const std::string& id, const std::function<void(v1::Job&)>& mutate) {
  JobRecord snapshot;
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(id);
    // A job this replica lost (Abandon) may still report until it stops: the record is the new holder's.
    if (it == jobs_.end() || !it->second.owned) return;
    v1::Job& job = *it->second.record.mutable_job();
    const v1::Job::State state = job.state();
    mutate(job);
    job.set_state(state);  // progress never moves a job; Transition does
    it->second.record.set_version(it->second.record.version() + 1);
    // Other replicas' watchers see progress through the store, at most every publish_interval.
    if (InFleet() && it->second.owned && absl::Now() - it->second.published >= options_.publish_interval) {
      it->second.published = absl::Now();
      snapshot = it->second.record;
    }
  }
  if (snapshot.has_job()) Persist(snapshot).IgnoreError();  // a failed save is retried with the next
  Notify(id);
}

void JobManager::Checkpoint(const std::string& id, const ResumePoint& point) {
  JobRecord snapshot;
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end() || !it->second.owned || it->second.record.job().state() != v1::Job::RUNNING) return;
    JobRecord& r = it->second.record;
    SetResumePoint(point, &r);
    r.set_version(r.version() + 1);
    snapshot = r;
  }
  // Not fatal if it fails: the next attempt then resumes from an earlier point, or from the start.
  if (absl::Status s = Persist(snapshot); !s.ok()) {
    std::fprintf(stderr, "lowbitd: cannot record the progress of %s: %s\n", id.c_str(), s.ToString().c_str());
  }
}

void JobManager::Finish(const std::string& id, const absl::StatusOr<JobReport>& report, bool preempted,
                        double seconds) {
  {
    absl::ReaderMutexLock lock(&mu_);
    auto it = jobs_.find(id);
    if (it != jobs_.end() && !it->second.owned) {  // Abandon(): whoever holds it now records its end
      std::fprintf(stderr, "lowbitd: jobs/%s: stopped here, held by another replica now\n", id.c_str());
      return;
    }
  }
  if (!report.ok() && absl::IsCancelled(report.status()) && preempted && !CancelRequested(id)) {
    // Shutdown, not the user: the job runs again after a restart, or at once on another replica.
    Transition(id, v1::Job::QUEUED, [this](JobRecord& r) {
      r.set_last_interruption(absl::StrCat("the server ", options_.replica, " shut down while the job was running"));
      v1::Job& j = *r.mutable_job();
      j.clear_start_time();
      j.clear_eta();
      j.clear_current_layer();
      j.clear_phase();
      j.clear_phase_done();
      j.clear_phase_total();
    }).IgnoreError();
    return;
  }
  v1::Job::State to = v1::Job::SUCCEEDED;
  std::string outcome = "succeeded";
  if (!report.ok()) {
    to = absl::IsCancelled(report.status()) ? v1::Job::CANCELLED : v1::Job::FAILED;
    outcome = absl::IsCancelled(report.status()) ? "cancelled" : "failed";
  }
  int attempts = 0;
  const absl::Status moved = Transition(id, to, [&](JobRecord& r) {
    v1::Job& j = *r.mutable_job();
    *j.mutable_end_time() = NowTimestamp();
    j.clear_eta();
    if (report.ok()) {
      *j.mutable_result() = ToProto(*report);
    } else {
      *j.mutable_error() = ToRpcStatus(report.status());
    }
    attempts = r.attempts();
  });
  if (moved.ok()) {
    std::fprintf(stderr, "lowbitd: jobs/%s %s after %d attempt(s)%s%s\n", id.c_str(), v1::Job::State_Name(to).c_str(), attempts,
                 report.ok() && !report->resumed.empty() ? "; " : "", report.ok() ? report->resumed.c_str() : "");
  }
  if (metrics_ != nullptr) metrics_->JobFinished(outcome, seconds);
}

std::optional<v1::Job> JobManager::Get(const std::string& id) const {
  absl::ReaderMutexLock lock(&mu_);  // pollers read concurrently
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return std::nullopt;
  return it->second.record.job();
}

bool JobFilter::Matches(const v1::Job& job) const {
  if (state != v1::Job::STATE_UNSPECIFIED && job.state() != state) return false;
  for (const auto& [key, value] : labels) {
    auto it = job.request().labels().find(key);
    if (it == job.request().labels().end() || it->second != value) return false;
  }
  return true;
}

JobManager::Page JobManager::List(int page_size, const std::string& page_token, const JobFilter& filter) const {
  Page page;
  size_t bytes = 0;
  absl::ReaderMutexLock lock(&mu_);  // pollers read concurrently
  // The token is the last id returned; ids sort by creation, so the next page starts after it.
  for (auto it = page_token.empty() ? jobs_.begin() : jobs_.upper_bound(page_token); it != jobs_.end(); ++it) {
    const v1::Job& job = it->second.record.job();
    if (!filter.Matches(job)) continue;
    bytes += job.ByteSizeLong();
    if (static_cast<int>(page.jobs.size()) == page_size || (!page.jobs.empty() && bytes > options_.max_list_bytes)) {
      page.next_page_token = JobId(page.jobs.back());
      break;
    }
    page.jobs.push_back(job);
  }
  return page;
}

std::optional<std::pair<v1::Job, int64_t>> JobManager::WaitForChange(const std::string& id, int64_t seen_version,
                                                                     absl::Time deadline) const {
  absl::MutexLock lock(&mu_);
  auto changed = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = jobs_.find(id);
    return it == jobs_.end() || it->second.record.version() > seen_version;
  };
  mu_.AwaitWithDeadline(absl::Condition(&changed), deadline);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return std::nullopt;
  return std::make_pair(it->second.record.job(), it->second.record.version());
}

absl::Status JobManager::CheckRunnable(const std::string& id) const {
  absl::ReaderMutexLock lock(&mu_);  // workers check concurrently
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return absl::AbortedError("the job is gone");
  if (!it->second.owned) return absl::AbortedError("this replica no longer holds the job; another one runs it");
  if (it->second.cancel_requested) return absl::CancelledError("job cancelled");
  return absl::OkStatus();
}

absl::Status JobManager::MayCommit(const JobContext& context) const {
  return InFleet() ? fleet_->MayCommit(context) : absl::OkStatus();
}

uint64_t JobManager::Adopt(PostgresJobStore::Row row) {
  JobRecord& record = row.record;
  const std::string id = JobId(record.job());
  if (record.job().state() == v1::Job::RUNNING) {
    MarkInterrupted(record, absl::StrCat("replica ", record.job().replica(), " stopped renewing its lease during attempt ",
                                         record.attempts()));
  }
  absl::MutexLock lock(&mu_);
  Entry& entry = jobs_[id];
  entry.record = std::move(record);
  entry.owned = true;
  entry.cancel_requested = row.cancel_requested;
  if (!entry.record.job().request().request_id().empty()) by_request_id_[entry.record.job().request().request_id()] = id;
  return static_cast<uint64_t>(entry.record.job().plan().total_bytes());
}

void JobManager::AbsorbLocked(const std::string& id, const PostgresJobStore::Row& row) {
  auto [it, added] = jobs_.try_emplace(id);
  Entry& entry = it->second;
  if (!added && entry.owned) {  // ours: our record is the newer one; a cancel is all we take
    entry.cancel_requested |= row.cancel_requested;
    return;
  }
  if (added || row.record.version() > entry.record.version()) entry.record = row.record;
  entry.owned = false;
  entry.cancel_requested = row.cancel_requested;
  if (!row.record.job().request().request_id().empty()) by_request_id_[row.record.job().request().request_id()] = id;
}

void JobManager::Absorb(const std::string& id, const std::optional<PostgresJobStore::Row>& row) {
  {
    absl::MutexLock lock(&mu_);
    if (row) {
      AbsorbLocked(id, *row);
    } else if (auto it = jobs_.find(id); it != jobs_.end() && !it->second.owned) {
      by_request_id_.erase(it->second.record.job().request().request_id());
      jobs_.erase(it);
    }
  }
  Notify(id);
}

void JobManager::AbsorbAll(const std::vector<PostgresJobStore::Row>& rows) {
  std::vector<std::string> changed;
  {
    absl::MutexLock lock(&mu_);
    std::set<std::string> present;
    for (const PostgresJobStore::Row& row : rows) {
      const std::string id = JobId(row.record.job());
      present.insert(id);
      AbsorbLocked(id, row);
      changed.push_back(id);
    }
    for (auto it = jobs_.begin(); it != jobs_.end();) {
      if (present.count(it->first) == 0 && !it->second.owned) {
        changed.push_back(it->first);
        by_request_id_.erase(it->second.record.job().request().request_id());
        it = jobs_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (const std::string& id : changed) Notify(id);
}

void JobManager::Abandon(const std::string& id) {
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return;
    it->second.owned = false;
  }
  {
    absl::MutexLock lock(&persist_mu_);
    unsaved_.erase(id);
  }
  if (scheduler_ != nullptr) scheduler_->RemoveQueued(id);
}

std::vector<std::string> JobManager::Owned() const {
  std::vector<std::string> owned;
  absl::ReaderMutexLock lock(&mu_);
  for (const auto& [id, entry] : jobs_) {
    if (entry.owned) owned.push_back(id);
  }
  return owned;
}

bool JobManager::CancelRequested(const std::string& id) const {
  absl::ReaderMutexLock lock(&mu_);  // pollers read concurrently
  auto it = jobs_.find(id);
  return it != jobs_.end() && it->second.cancel_requested;
}

absl::Status JobManager::Delete(const std::string& id, bool outputs) {
  v1::Job job;
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return WithReason(absl::NotFoundError(absl::StrCat("no job jobs/", id)), "JOB_NOT_FOUND");
    if (!IsTerminal(it->second.record.job().state())) {
      return absl::FailedPreconditionError(absl::StrCat("job ", id, " has not finished; cancel it first"));
    }
    job = it->second.record.job();
  }
  if (outputs && job.state() == v1::Job::SUCCEEDED && objects_ != nullptr) RETURN_IF_ERROR(DeleteOutputs(job));
  if (store_ != nullptr) RETURN_IF_ERROR(store_->Delete(id));
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(id);
    if (it != jobs_.end()) {
      by_request_id_.erase(it->second.record.job().request().request_id());
      jobs_.erase(it);
    }
  }
  Notify(id);
  return absl::OkStatus();
}

absl::Status JobManager::DeleteOutputs(const v1::Job& job) {
  // Under the destination's lock, so a job writing there now (a later one with overwrite) loses nothing.
  const std::string& destination = job.request().destination_uri();
  bool held_before = false;
  RETURN_IF_ERROR(WithReason(LockDestination(objects_, destination, job.name() + "/delete", &held_before),
                             "DESTINATION_LOCKED"));
  absl::Cleanup unlock = [&] { UnlockDestination(objects_, destination, job.name() + "/delete").IgnoreError(); };
  std::vector<std::string> files;
  for (const v1::OutputFile& f : job.result().files()) files.push_back(f.name());
  files.push_back(kReportFile);  // last: while it exists the output still reads as committed
  for (const std::string& f : files) {
    absl::Status deleted = objects_->Delete(JoinUri(destination, f));
    if (!deleted.ok() && !absl::IsNotFound(deleted)) return deleted;
  }
  return absl::OkStatus();
}

int JobManager::PruneExpired(absl::Time now) {
  std::vector<std::string> expired;
  {
    absl::ReaderMutexLock lock(&mu_);
    for (const auto& [id, entry] : jobs_) {
      const v1::Job& job = entry.record.job();
      if (IsTerminal(job.state()) && job.has_end_time() &&
          absl::FromUnixNanos(TimeUtil::TimestampToNanoseconds(job.end_time())) + options_.retention < now) {
        expired.push_back(id);
      }
    }
  }
  int pruned = 0;
  for (const std::string& id : expired) pruned += Delete(id).ok() ? 1 : 0;
  return pruned;
}

}  // namespace lowbit::server

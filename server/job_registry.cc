#include "server/job_registry.h"

#include <cstdio>
#include <random>

#include <google/protobuf/util/time_util.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/util/status_macros.h"
#include "server/grpc_status.h"
#include "server/proto_convert.h"

namespace lowbit::server {

using google::protobuf::util::TimeUtil;

bool IsTerminal(v1::Job::State state) {
  return state == v1::Job::SUCCEEDED || state == v1::Job::FAILED || state == v1::Job::CANCELLED;
}

void JobRegistry::Persist(const v1::Job& job) const {
  if (store_ == nullptr) return;
  absl::Status s = store_->Save(job);
  if (!s.ok()) std::fprintf(stderr, "lowbitd: cannot persist %s: %s\n", job.name().c_str(), s.ToString().c_str());
}

std::string JobRegistry::NewId() {
  // Sortable by creation time (so listing in id order is listing in creation order), unique per process
  // by the sequence number, and across restarts by the random tail.
  static thread_local std::mt19937 rng{std::random_device{}()};
  return absl::StrFormat("%s-%04d-%04x", absl::FormatTime("%Y%m%d%H%M%S", absl::Now(), absl::UTCTimeZone()),
                         ++sequence_ % 10000, rng() & 0xffff);
}

absl::StatusOr<std::vector<std::string>> JobRegistry::Restore() {
  if (store_ == nullptr) return std::vector<std::string>{};
  ASSIGN_OR_RETURN(std::vector<v1::Job> jobs, store_->LoadAll());
  std::vector<std::string> queued;
  absl::MutexLock lock(&mu_);
  for (v1::Job& job : jobs) {
    const std::string id = JobId(job);
    if (job.state() == v1::Job::RUNNING) {
      job.set_state(v1::Job::FAILED);
      *job.mutable_error() = ToRpcStatus(WithReason(
          absl::AbortedError("the server stopped while the job was running; its output was not committed"),
          "SERVER_RESTARTED"));
      *job.mutable_end_time() = NowTimestamp();
      Persist(job);
    }
    if (job.state() == v1::Job::QUEUED) queued.push_back(id);
    if (!job.request().request_id().empty()) by_request_id_[job.request().request_id()] = id;
    jobs_[id] = Entry{std::move(job), 1, false};
  }
  return queued;
}

v1::Job JobRegistry::Create(const v1::QuantizeModelRequest& request, bool* created) {
  absl::MutexLock lock(&mu_);
  if (!request.request_id().empty()) {
    auto it = by_request_id_.find(request.request_id());
    if (it != by_request_id_.end()) {
      *created = false;
      return jobs_.at(it->second).job;
    }
  }
  const std::string id = NewId();
  Entry entry;
  entry.job.set_name(absl::StrCat("jobs/", id));
  entry.job.set_state(v1::Job::QUEUED);
  *entry.job.mutable_request() = request;
  *entry.job.mutable_create_time() = NowTimestamp();
  entry.version = 1;
  if (!request.request_id().empty()) by_request_id_[request.request_id()] = id;
  Persist(entry.job);
  *created = true;
  return jobs_.emplace(id, std::move(entry)).first->second.job;
}

std::optional<v1::Job> JobRegistry::Get(const std::string& id) const {
  absl::ReaderMutexLock lock(&mu_);  // pollers read concurrently
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return std::nullopt;
  return it->second.job;
}

std::optional<v1::Job> JobRegistry::GetByRequestId(const std::string& request_id) const {
  if (request_id.empty()) return std::nullopt;
  absl::ReaderMutexLock lock(&mu_);  // pollers read concurrently
  auto it = by_request_id_.find(request_id);
  if (it == by_request_id_.end()) return std::nullopt;
  return jobs_.at(it->second).job;
}

JobRegistry::Page JobRegistry::List(int page_size, const std::string& page_token, v1::Job::State state) const {
  Page page;
  absl::ReaderMutexLock lock(&mu_);  // pollers read concurrently
  // The token is the last id returned; ids sort by creation, so the next page starts after it.
  for (auto it = page_token.empty() ? jobs_.begin() : jobs_.upper_bound(page_token); it != jobs_.end(); ++it) {
    if (state != v1::Job::STATE_UNSPECIFIED && it->second.job.state() != state) continue;
    if (static_cast<int>(page.jobs.size()) == page_size) {
      page.next_page_token = JobId(page.jobs.back());
      break;
    }
    page.jobs.push_back(it->second.job);
  }
  return page;
}

absl::Status JobRegistry::Update(const std::string& id, const std::function<void(v1::Job&)>& mutate) {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("no job ", id));
  const v1::Job::State before = it->second.job.state();
  mutate(it->second.job);
  ++it->second.version;
  if (it->second.job.state() != before) Persist(it->second.job);
  return absl::OkStatus();
}

std::optional<std::pair<v1::Job, int64_t>> JobRegistry::WaitForChange(const std::string& id, int64_t seen_version,
                                                                       absl::Time deadline) const {
  absl::MutexLock lock(&mu_);
  auto changed = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = jobs_.find(id);
    return it == jobs_.end() || it->second.version > seen_version;
  };
  mu_.AwaitWithDeadline(absl::Condition(&changed), deadline);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return std::nullopt;
  return std::make_pair(it->second.job, it->second.version);
}

void JobRegistry::RequestCancel(const std::string& id) {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(id);
  if (it != jobs_.end()) it->second.cancel_requested = true;
}

bool JobRegistry::CancelRequested(const std::string& id) const {
  absl::ReaderMutexLock lock(&mu_);  // pollers read concurrently
  auto it = jobs_.find(id);
  return it != jobs_.end() && it->second.cancel_requested;
}

absl::Status JobRegistry::Delete(const std::string& id) {
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("no job ", id));
    if (!IsTerminal(it->second.job.state())) {
      return absl::FailedPreconditionError(absl::StrCat("job ", id, " has not finished; cancel it first"));
    }
  }
  Discard(id);
  return absl::OkStatus();
}

void JobRegistry::Discard(const std::string& id) {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  by_request_id_.erase(it->second.job.request().request_id());
  jobs_.erase(it);
  if (store_ != nullptr) store_->Delete(id).IgnoreError();
}

}  // namespace lowbit::server

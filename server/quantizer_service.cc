#include "server/quantizer_service.h"

#include <google/protobuf/util/time_util.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/checkpoint/checkpoint_reader.h"
#include "core/job/job_plan.h"
#include "core/util/status_macros.h"
#include "server/grpc_status.h"
#include "server/proto_convert.h"

namespace lowbit::server {
namespace {

using google::protobuf::util::TimeUtil;

constexpr int kDefaultPageSize = 50;
constexpr int kMaxPageSize = 1000;

absl::Status CheckPageSize(int page_size) {
  if (page_size < 0) return InvalidRequest({{"page_size", "must not be negative"}});
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> ParseJobName(const std::string& name) {
  absl::string_view id = name;
  if (!absl::ConsumePrefix(&id, "jobs/") && !absl::ConsumePrefix(&id, "operations/")) {
    return InvalidRequest({{"name", absl::StrCat("expected jobs/{id} or operations/{id}, got '", name.substr(0, 200), "'")}});
  }
  if (id.empty() || id.size() > 64 || absl::StrContains(id, "/")) return InvalidRequest({{"name", "malformed job id"}});
  return std::string(id);
}

absl::StatusOr<JobFilter> ParseJobFilter(const std::string& filter) {
  constexpr char kSupported[] = "supported: state = <STATE> and labels.<key> = \"<value>\", joined by AND";
  JobFilter parsed;
  if (absl::StripAsciiWhitespace(filter).empty()) return parsed;
  if (filter.size() > 4096) return InvalidRequest({{"filter", "at most 4096 bytes"}});
  for (absl::string_view term : absl::StrSplit(filter, " AND ")) {
    term = absl::StripAsciiWhitespace(term);
    const size_t eq = term.find('=');
    if (eq == absl::string_view::npos) return InvalidRequest({{"filter", kSupported}});
    const absl::string_view key = absl::StripAsciiWhitespace(term.substr(0, eq));
    absl::string_view value = absl::StripAsciiWhitespace(term.substr(eq + 1));
    if (key == "state") {
      const std::string name = absl::AsciiStrToUpper(value);
      v1::Job::State state;
      if (!v1::Job::State_Parse(name, &state) || state == v1::Job::STATE_UNSPECIFIED) {
        return InvalidRequest({{"filter", absl::StrCat("unknown state '", name.substr(0, 64), "'")}});
      }
      parsed.state = state;
    } else if (absl::StartsWith(key, "labels.") && key.size() > 7) {
      if (value.size() >= 2 && value.front() == '"' && value.back() == '"') value = value.substr(1, value.size() - 2);
      parsed.labels[std::string(key.substr(7))] = std::string(value);
    } else {
      return InvalidRequest({{"filter", kSupported}});
    }
  }
  return parsed;
}

namespace {

absl::StatusOr<v1::Job> FindJob(const JobManager& jobs, const std::string& name) {
  ASSIGN_OR_RETURN(std::string id, ParseJobName(name));
  std::optional<v1::Job> job = jobs.Get(id);
  if (!job) return WithReason(absl::NotFoundError(absl::StrCat("no job ", name)), "JOB_NOT_FOUND");
  return *job;
}

absl::StatusOr<v1::Job> CancelJobNamed(JobManager& jobs, const std::string& name) {
  ASSIGN_OR_RETURN(std::string id, ParseJobName(name));
  return jobs.Cancel(id);
}

// One WatchJob stream: writes the job whenever it changed since the last write, one write in flight at a
// time (intermediate versions coalesce), and finishes after a terminal state.
class WatchReactor final : public grpc::ServerWriteReactor<v1::Job> {
 public:
  WatchReactor(JobManager* jobs, std::string id) : jobs_(jobs), id_(std::move(id)) {
    subscription_ = jobs_->Subscribe(id_, [this] { OnJobChanged(); });
    OnJobChanged();  // the current state first
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) return End(grpc::Status::OK);  // the client went away
    if (IsTerminal(current_.state())) return End(grpc::Status::OK);
    WriteIfChanged();
  }
  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    End(grpc::Status(grpc::StatusCode::CANCELLED, "watch cancelled by the client"));
  }
  void OnDone() override {
    jobs_->Unsubscribe(subscription_);
    delete this;
  }

 private:
  void OnJobChanged() {
    absl::MutexLock lock(&mu_);
    changed_ = true;
    WriteIfChanged();
  }
  void WriteIfChanged() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || ended_ || !changed_) return;
    changed_ = false;
    std::optional<v1::Job> job = jobs_->Get(id_);
    if (!job) {
      return End(ToGrpcStatus(WithReason(absl::NotFoundError(absl::StrCat("no job jobs/", id_)), "JOB_NOT_FOUND")));
    }
    current_ = *std::move(job);
    writing_ = true;
    StartWrite(&current_);
  }
  void End(const grpc::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (ended_) return;
    ended_ = true;
    Finish(status);
  }

  JobManager* const jobs_;
  const std::string id_;
  int64_t subscription_ = 0;
  absl::Mutex mu_;
  v1::Job current_ ABSL_GUARDED_BY(mu_);  // the message being written; stays put until OnWriteDone
  bool changed_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
};

// UNAUTHENTICATED unless the call carries credentials `auth` accepts (or `auth` is null).
grpc::Status Authenticate(const Authenticator* auth, const grpc::ServerContextBase& context) {
  if (auth == nullptr) return grpc::Status::OK;
  absl::Status s = auth->Check(context);
  return s.ok() ? grpc::Status::OK : ToGrpcStatus(WithReason(s, "UNAUTHENTICATED"));
}

}  // namespace

google::longrunning::Operation ToOperation(const v1::Job& job) {
  google::longrunning::Operation op;
  op.set_name(absl::StrCat("operations/", JobId(job)));
  op.mutable_metadata()->PackFrom(job);
  op.set_done(IsTerminal(job.state()));
  if (job.state() == v1::Job::SUCCEEDED) {
    op.mutable_response()->PackFrom(job.result());
  } else if (op.done()) {
    *op.mutable_error() = job.error();
  }
  return op;
}

grpc::Status QuantizerService::QuantizeModel(grpc::ServerContext* context, const v1::QuantizeModelRequest* request,
                                             google::longrunning::Operation* response) {
  if (grpc::Status denied = Authenticate(auth_, *context); !denied.ok()) return denied;
  absl::StatusOr<v1::Job> job = jobs_->Submit(*request);
  if (!job.ok()) return ToGrpcStatus(job.status());
  if (request->validate_only()) {  // AIP-163: nothing was created; the plan is the answer
    response->mutable_metadata()->PackFrom(*job);
    response->set_done(true);
    return grpc::Status::OK;
  }
  *response = ToOperation(*job);
  return grpc::Status::OK;
}

grpc::Status QuantizerService::GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request, v1::Job* response) {
  if (grpc::Status denied = Authenticate(auth_, *context); !denied.ok()) return denied;
  absl::StatusOr<v1::Job> job = FindJob(*jobs_, request->name());
  if (!job.ok()) return ToGrpcStatus(job.status());
  *response = *std::move(job);
  return grpc::Status::OK;
}

grpc::Status QuantizerService::ListJobs(grpc::ServerContext* context, const v1::ListJobsRequest* request,
                                        v1::ListJobsResponse* response) {
  if (grpc::Status denied = Authenticate(auth_, *context); !denied.ok()) return denied;
  if (absl::Status s = CheckPageSize(request->page_size()); !s.ok()) return ToGrpcStatus(s);
  absl::StatusOr<JobFilter> filter = ParseJobFilter(request->filter());
  if (!filter.ok()) return ToGrpcStatus(filter.status());
  const int size = request->page_size() == 0 ? kDefaultPageSize : std::min(request->page_size(), kMaxPageSize);
  JobManager::Page page = jobs_->List(size, request->page_token(), *filter);
  for (v1::Job& job : page.jobs) *response->add_jobs() = std::move(job);
  response->set_next_page_token(page.next_page_token);
  return grpc::Status::OK;
}

grpc::Status QuantizerService::CancelJob(grpc::ServerContext* context, const v1::CancelJobRequest* request, v1::Job* response) {
  if (grpc::Status denied = Authenticate(auth_, *context); !denied.ok()) return denied;
  absl::StatusOr<v1::Job> job = CancelJobNamed(*jobs_, request->name());
  if (!job.ok()) return ToGrpcStatus(job.status());
  *response = *std::move(job);
  return grpc::Status::OK;
}

grpc::Status QuantizerService::DeleteJob(grpc::ServerContext* context, const v1::DeleteJobRequest* request,
                                         google::protobuf::Empty*) {
  if (grpc::Status denied = Authenticate(auth_, *context); !denied.ok()) return denied;
  absl::StatusOr<std::string> id = ParseJobName(request->name());
  if (!id.ok()) return ToGrpcStatus(id.status());
  return ToGrpcStatus(jobs_->Delete(*id, request->delete_outputs()));
}

grpc::ServerWriteReactor<v1::Job>* QuantizerService::WatchJob(grpc::CallbackServerContext* context,
                                                               const v1::WatchJobRequest* request) {
  class Refused final : public grpc::ServerWriteReactor<v1::Job> {
   public:
    explicit Refused(const grpc::Status& status) { Finish(status); }
    void OnDone() override { delete this; }
  };
  if (grpc::Status denied = Authenticate(auth_, *context); !denied.ok()) return new Refused(denied);
  absl::StatusOr<std::string> id = ParseJobName(request->name());
  if (!id.ok()) return new Refused(ToGrpcStatus(id.status()));
  return new WatchReactor(jobs_, *id);
}

grpc::Status OperationsService::ListOperations(grpc::ServerContext* context, const google::longrunning::ListOperationsRequest* request,
                                               google::longrunning::ListOperationsResponse* response) {
  if (grpc::Status denied = Authenticate(auth_, *context); !denied.ok()) return denied;
  if (absl::Status s = CheckPageSize(request->page_size()); !s.ok()) return ToGrpcStatus(s);
  absl::StatusOr<JobFilter> filter = ParseJobFilter(request->filter());
  if (!filter.ok()) return ToGrpcStatus(filter.status());
  const int size = request->page_size() == 0 ? kDefaultPageSize : std::min(request->page_size(), kMaxPageSize);
  JobManager::Page page = jobs_->List(size, request->page_token(), *filter);
  for (const v1::Job& job : page.jobs) *response->add_operations() = ToOperation(job);
  response->set_next_page_token(page.next_page_token);
  return grpc::Status::OK;
}

grpc::Status OperationsService::GetOperation(grpc::ServerContext* context, const google::longrunning::GetOperationRequest* request,
                                             google::longrunning::Operation* response) {
  if (grpc::Status denied = Authenticate(auth_, *context); !denied.ok()) return denied;
  absl::StatusOr<v1::Job> job = FindJob(*jobs_, request->name());
  if (!job.ok()) return ToGrpcStatus(job.status());
  *response = ToOperation(*job);
  return grpc::Status::OK;
}

grpc::Status OperationsService::DeleteOperation(grpc::ServerContext* context, const google::longrunning::DeleteOperationRequest* request,
                                                google::protobuf::Empty*) {
  if (grpc::Status denied = Authenticate(auth_, *context); !denied.ok()) return denied;
  absl::StatusOr<std::string> id = ParseJobName(request->name());
  if (!id.ok()) return ToGrpcStatus(id.status());
  return ToGrpcStatus(jobs_->Delete(*id));
}

grpc::Status OperationsService::CancelOperation(grpc::ServerContext* context, const google::longrunning::CancelOperationRequest* request,
                                                google::protobuf::Empty*) {
  if (grpc::Status denied = Authenticate(auth_, *context); !denied.ok()) return denied;
  return ToGrpcStatus(CancelJobNamed(*jobs_, request->name()).status());
}

grpc::Status OperationsService::WaitOperation(grpc::ServerContext* context, const google::longrunning::WaitOperationRequest* request,
                                              google::longrunning::Operation* response) {
  if (grpc::Status denied = Authenticate(auth_, *context); !denied.ok()) return denied;
  absl::StatusOr<std::string> id = ParseJobName(request->name());
  if (!id.ok()) return ToGrpcStatus(id.status());
  // AIP-151: wait until done or the timeout; without a timeout, until the call's own deadline.
  absl::Time deadline = absl::Now() + absl::Minutes(10);
  if (request->has_timeout()) {
    deadline = absl::Now() + absl::Nanoseconds(TimeUtil::DurationToNanoseconds(request->timeout()));
  }
  deadline = std::min(deadline, absl::FromChrono(context->deadline()));
  int64_t seen = 0;
  while (true) {
    auto change = jobs_->WaitForChange(*id, seen, std::min(deadline, absl::Now() + absl::Milliseconds(500)));
    if (!change) return ToGrpcStatus(WithReason(absl::NotFoundError(absl::StrCat("no job ", request->name())), "JOB_NOT_FOUND"));
    seen = change->second;
    if (IsTerminal(change->first.state()) || absl::Now() >= deadline || context->IsCancelled()) {
      *response = ToOperation(change->first);
      return grpc::Status::OK;
    }
  }
}

}  // namespace lowbit::server

#include "server/quantizer_service.h"

#include <google/protobuf/util/time_util.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
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

// "state=RUNNING" (spaces allowed) or empty.
absl::StatusOr<v1::Job::State> ParseStateFilter(const std::string& filter) {
  std::string f(absl::StripAsciiWhitespace(filter));
  if (f.empty()) return v1::Job::STATE_UNSPECIFIED;
  absl::string_view rest = f;
  if (!absl::ConsumePrefix(&rest, "state")) return InvalidRequest({{"filter", "supported: state=<STATE>"}});
  rest = absl::StripAsciiWhitespace(rest);
  if (!absl::ConsumePrefix(&rest, "=")) return InvalidRequest({{"filter", "supported: state=<STATE>"}});
  const std::string value = absl::AsciiStrToUpper(absl::StripAsciiWhitespace(rest));
  v1::Job::State state;
  if (!v1::Job::State_Parse(value, &state) || state == v1::Job::STATE_UNSPECIFIED) {
    return InvalidRequest({{"filter", absl::StrCat("unknown state '", value, "'")}});
  }
  return state;
}

absl::Status CheckPageSize(int page_size) {
  if (page_size < 0) return InvalidRequest({{"page_size", "must not be negative"}});
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> JobServices::ParseName(const std::string& name) {
  absl::string_view id = name;
  if (!absl::ConsumePrefix(&id, "jobs/") && !absl::ConsumePrefix(&id, "operations/")) {
    return InvalidRequest({{"name", absl::StrCat("expected jobs/{id} or operations/{id}, got '", name, "'")}});
  }
  if (id.empty() || absl::StrContains(id, "/")) return InvalidRequest({{"name", "malformed job id"}});
  return std::string(id);
}

absl::StatusOr<v1::Job> JobServices::Find(const std::string& name) const {
  ASSIGN_OR_RETURN(std::string id, ParseName(name));
  std::optional<v1::Job> job = registry->Get(id);
  if (!job) return WithReason(absl::NotFoundError(absl::StrCat("no job ", name)), "JOB_NOT_FOUND");
  return *job;
}

absl::StatusOr<v1::Job> JobServices::Submit(const v1::QuantizeModelRequest& request) {
  ASSIGN_OR_RETURN(QuantizeJobSpec spec, JobSpecFromRequest(request));
  // A retry with a known request id gets the same operation, whatever the store says now.
  if (std::optional<v1::Job> known = registry->GetByRequestId(request.request_id())) return *known;
  // Check what the store can tell before the job is queued: a missing or corrupt source, an occupied
  // destination. Only headers are read.
  absl::StatusOr<std::unique_ptr<CheckpointReader>> reader = OpenCheckpoint(store, spec.source_uri);
  if (!reader.ok()) {
    return WithReason(reader.status(), absl::IsNotFound(reader.status()) ? "SOURCE_NOT_FOUND" : "SOURCE_UNREADABLE");
  }
  // The plan from the headers alone: a job that cannot fit is refused now, not after it was accepted.
  absl::StatusOr<ResourceEstimate> estimate =
      EstimateResources((*reader)->descriptor(), (*reader)->tensors(), spec, job_options);
  if (!estimate.ok()) {
    return WithReason(estimate.status(),
                      absl::IsUnimplemented(estimate.status()) ? "ARCHITECTURE_UNSUPPORTED" : "SOURCE_UNREADABLE");
  }
  const v1::ResourcePlan plan = ToProto(*estimate, job_options.memory_limit_bytes);
  RETURN_IF_ERROR(WithReason(CheckMemoryLimit(*estimate, job_options.memory_limit_bytes), "MEMORY_LIMIT"));
  if (request.validate_only()) {
    v1::Job job;
    *job.mutable_request() = request;
    *job.mutable_plan() = plan;
    return job;
  }
  bool created = false;
  v1::Job job = registry->Create(request, &created);
  if (!created) return job;
  registry->Update(JobId(job), [&](v1::Job& j) { *j.mutable_plan() = plan; }).IgnoreError();
  *job.mutable_plan() = plan;
  ASSIGN_OR_RETURN(std::vector<ObjectInfo> existing, store->List(JoinUri(spec.destination_uri, "")));
  absl::Status admitted = absl::OkStatus();
  if (!existing.empty() && !spec.overwrite) {
    admitted = WithReason(absl::AlreadyExistsError(absl::StrCat("destination ", spec.destination_uri, " already holds ",
                                                                existing.size(), " object(s); set overwrite to replace them")),
                          "DESTINATION_EXISTS");
  } else {
    admitted = scheduler->Enqueue(JobId(job), estimate->total);
  }
  if (!admitted.ok()) {
    registry->Discard(JobId(job));
    return admitted;
  }
  metrics->JobSubmitted();
  return job;
}

absl::StatusOr<v1::Job> JobServices::Cancel(const std::string& name) {
  ASSIGN_OR_RETURN(v1::Job job, Find(name));
  const std::string id = JobId(job);
  if (IsTerminal(job.state())) {
    return WithReason(absl::FailedPreconditionError(absl::StrCat("job ", job.name(), " already ended as ",
                                                                 v1::Job::State_Name(job.state()))),
                      "JOB_ALREADY_ENDED");
  }
  registry->RequestCancel(id);
  if (scheduler->RemoveQueued(id)) {
    registry->Update(id, [](v1::Job& j) {
      j.set_state(v1::Job::CANCELLED);
      *j.mutable_error() = ToRpcStatus(absl::CancelledError("job cancelled before it started"));
      *j.mutable_end_time() = NowTimestamp();
    }).IgnoreError();
    metrics->JobFinished("cancelled", 0);
  }
  return *registry->Get(id);
}

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

grpc::Status QuantizerService::QuantizeModel(grpc::ServerContext*, const v1::QuantizeModelRequest* request,
                                             google::longrunning::Operation* response) {
  absl::StatusOr<v1::Job> job = jobs_.Submit(*request);
  if (!job.ok()) return ToGrpcStatus(job.status());
  if (request->validate_only()) {  // AIP-163: nothing was created; the plan is the answer
    response->mutable_metadata()->PackFrom(*job);
    response->set_done(true);
    return grpc::Status::OK;
  }
  *response = ToOperation(*job);
  return grpc::Status::OK;
}

grpc::Status QuantizerService::GetJob(grpc::ServerContext*, const v1::GetJobRequest* request, v1::Job* response) {
  absl::StatusOr<v1::Job> job = jobs_.Find(request->name());
  if (!job.ok()) return ToGrpcStatus(job.status());
  *response = *std::move(job);
  return grpc::Status::OK;
}

grpc::Status QuantizerService::ListJobs(grpc::ServerContext*, const v1::ListJobsRequest* request,
                                        v1::ListJobsResponse* response) {
  if (absl::Status s = CheckPageSize(request->page_size()); !s.ok()) return ToGrpcStatus(s);
  absl::StatusOr<v1::Job::State> state = ParseStateFilter(request->filter());
  if (!state.ok()) return ToGrpcStatus(state.status());
  const int size = request->page_size() == 0 ? kDefaultPageSize : std::min(request->page_size(), kMaxPageSize);
  JobRegistry::Page page = jobs_.registry->List(size, request->page_token(), *state);
  for (v1::Job& job : page.jobs) *response->add_jobs() = std::move(job);
  response->set_next_page_token(page.next_page_token);
  return grpc::Status::OK;
}

grpc::Status QuantizerService::CancelJob(grpc::ServerContext*, const v1::CancelJobRequest* request, v1::Job* response) {
  absl::StatusOr<v1::Job> job = jobs_.Cancel(request->name());
  if (!job.ok()) return ToGrpcStatus(job.status());
  *response = *std::move(job);
  return grpc::Status::OK;
}

grpc::Status QuantizerService::WatchJob(grpc::ServerContext* context, const v1::WatchJobRequest* request,
                                        grpc::ServerWriter<v1::Job>* writer) {
  absl::StatusOr<std::string> id = JobServices::ParseName(request->name());
  if (!id.ok()) return ToGrpcStatus(id.status());
  int64_t seen = 0;
  while (!context->IsCancelled()) {
    // Wake at least every half second to notice a client that went away.
    auto change = jobs_.registry->WaitForChange(*id, seen, absl::Now() + absl::Milliseconds(500));
    if (!change) return ToGrpcStatus(WithReason(absl::NotFoundError(absl::StrCat("no job ", request->name())), "JOB_NOT_FOUND"));
    if (change->second == seen) continue;
    seen = change->second;
    if (!writer->Write(change->first)) return grpc::Status::OK;  // client gone
    if (IsTerminal(change->first.state())) return grpc::Status::OK;
  }
  return grpc::Status(grpc::StatusCode::CANCELLED, "watch cancelled by the client");
}

grpc::Status OperationsService::ListOperations(grpc::ServerContext*, const google::longrunning::ListOperationsRequest* request,
                                               google::longrunning::ListOperationsResponse* response) {
  if (absl::Status s = CheckPageSize(request->page_size()); !s.ok()) return ToGrpcStatus(s);
  absl::StatusOr<v1::Job::State> state = ParseStateFilter(request->filter());
  if (!state.ok()) return ToGrpcStatus(state.status());
  const int size = request->page_size() == 0 ? kDefaultPageSize : std::min(request->page_size(), kMaxPageSize);
  JobRegistry::Page page = jobs_.registry->List(size, request->page_token(), *state);
  for (const v1::Job& job : page.jobs) *response->add_operations() = ToOperation(job);
  response->set_next_page_token(page.next_page_token);
  return grpc::Status::OK;
}

grpc::Status OperationsService::GetOperation(grpc::ServerContext*, const google::longrunning::GetOperationRequest* request,
                                             google::longrunning::Operation* response) {
  absl::StatusOr<v1::Job> job = jobs_.Find(request->name());
  if (!job.ok()) return ToGrpcStatus(job.status());
  *response = ToOperation(*job);
  return grpc::Status::OK;
}

grpc::Status OperationsService::DeleteOperation(grpc::ServerContext*, const google::longrunning::DeleteOperationRequest* request,
                                                google::protobuf::Empty*) {
  absl::StatusOr<std::string> id = JobServices::ParseName(request->name());
  if (!id.ok()) return ToGrpcStatus(id.status());
  return ToGrpcStatus(jobs_.registry->Delete(*id));
}

grpc::Status OperationsService::CancelOperation(grpc::ServerContext*, const google::longrunning::CancelOperationRequest* request,
                                                google::protobuf::Empty*) {
  return ToGrpcStatus(jobs_.Cancel(request->name()).status());
}

grpc::Status OperationsService::WaitOperation(grpc::ServerContext* context, const google::longrunning::WaitOperationRequest* request,
                                              google::longrunning::Operation* response) {
  absl::StatusOr<std::string> id = JobServices::ParseName(request->name());
  if (!id.ok()) return ToGrpcStatus(id.status());
  // AIP-151: wait until done or the timeout; without a timeout, until the call's own deadline.
  absl::Time deadline = absl::Now() + absl::Minutes(10);
  if (request->has_timeout()) {
    deadline = absl::Now() + absl::Nanoseconds(TimeUtil::DurationToNanoseconds(request->timeout()));
  }
  deadline = std::min(deadline, absl::FromChrono(context->deadline()));
  int64_t seen = 0;
  while (true) {
    auto change = jobs_.registry->WaitForChange(*id, seen, std::min(deadline, absl::Now() + absl::Milliseconds(500)));
    if (!change) return ToGrpcStatus(WithReason(absl::NotFoundError(absl::StrCat("no job ", request->name())), "JOB_NOT_FOUND"));
    seen = change->second;
    if (IsTerminal(change->first.state()) || absl::Now() >= deadline || context->IsCancelled()) {
      *response = ToOperation(change->first);
      return grpc::Status::OK;
    }
  }
}

}  // namespace lowbit::server

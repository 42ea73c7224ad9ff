// The gRPC services over the JobManager: lowbit.v1.Quantizer and google.longrunning.Operations.
// Stateless and thin by design: parse, call the manager, map statuses in one place (grpc_status.h).
// WatchJob is a callback reactor per stream, woken by the job's changes (no thread waits for it). Every
// call is authenticated first (server/auth.h).
#ifndef LOWBIT_SERVER_QUANTIZER_SERVICE_H_
#define LOWBIT_SERVER_QUANTIZER_SERVICE_H_

#include <string>

#include "absl/status/statusor.h"
#include "google/longrunning/operations.grpc.pb.h"
#include "lowbit/v1/quantizer.grpc.pb.h"
#include "server/auth.h"
#include "server/job_manager.h"

namespace lowbit::server {

// The job id from "jobs/{id}" or "operations/{id}".
absl::StatusOr<std::string> ParseJobName(const std::string& name);
// ListJobs' filter (AIP-160): a conjunction of equalities on the two things a job is found by,
// `state = RUNNING AND labels.team = "nlp"` (spaces optional, label values quoted or bare). Empty: every job.
absl::StatusOr<JobFilter> ParseJobFilter(const std::string& filter);

google::longrunning::Operation ToOperation(const v1::Job& job);

class QuantizerService final : public v1::Quantizer::WithCallbackMethod_WatchJob<v1::Quantizer::Service> {
 public:
  // `auth` may be null (every call allowed); neither is owned.
  QuantizerService(JobManager* jobs, const Authenticator* auth) : jobs_(jobs), auth_(auth) {}
  grpc::Status QuantizeModel(grpc::ServerContext* context, const v1::QuantizeModelRequest* request,
                             google::longrunning::Operation* response) override;
  grpc::Status GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request, v1::Job* response) override;
  grpc::Status ListJobs(grpc::ServerContext* context, const v1::ListJobsRequest* request,
                        v1::ListJobsResponse* response) override;
  grpc::Status CancelJob(grpc::ServerContext* context, const v1::CancelJobRequest* request, v1::Job* response) override;
  grpc::Status DeleteJob(grpc::ServerContext* context, const v1::DeleteJobRequest* request,
                         google::protobuf::Empty* response) override;
  grpc::ServerWriteReactor<v1::Job>* WatchJob(grpc::CallbackServerContext* context,
                                              const v1::WatchJobRequest* request) override;

 private:
  JobManager* const jobs_;
  const Authenticator* const auth_;
};

class OperationsService final : public google::longrunning::Operations::Service {
 public:
  OperationsService(JobManager* jobs, const Authenticator* auth) : jobs_(jobs), auth_(auth) {}
  grpc::Status ListOperations(grpc::ServerContext* context, const google::longrunning::ListOperationsRequest* request,
                              google::longrunning::ListOperationsResponse* response) override;
  grpc::Status GetOperation(grpc::ServerContext* context, const google::longrunning::GetOperationRequest* request,
                            google::longrunning::Operation* response) override;
  grpc::Status DeleteOperation(grpc::ServerContext* context, const google::longrunning::DeleteOperationRequest* request,
                               google::protobuf::Empty* response) override;
  grpc::Status CancelOperation(grpc::ServerContext* context, const google::longrunning::CancelOperationRequest* request,
                               google::protobuf::Empty* response) override;
  grpc::Status WaitOperation(grpc::ServerContext* context, const google::longrunning::WaitOperationRequest* request,
                             google::longrunning::Operation* response) override;

 private:
  JobManager* const jobs_;
  const Authenticator* const auth_;
};

}  // namespace lowbit::server

#endif  // LOWBIT_SERVER_QUANTIZER_SERVICE_H_

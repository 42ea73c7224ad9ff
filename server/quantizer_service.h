// The gRPC services over the job registry: lowbit.v1.Quantizer and google.longrunning.Operations.
// Thin by design: validate, call the registry/scheduler, map statuses in one place (grpc_status.h).
#ifndef LOWBIT_SERVER_QUANTIZER_SERVICE_H_
#define LOWBIT_SERVER_QUANTIZER_SERVICE_H_

#include <string>

#include "absl/status/statusor.h"
#include "core/job/quantize_job.h"
#include "core/storage/object_store.h"
#include "google/longrunning/operations.grpc.pb.h"
#include "lowbit/v1/quantizer.grpc.pb.h"
#include "server/job_registry.h"
#include "server/metrics.h"
#include "server/scheduler.h"

namespace lowbit::server {

// Shared by both services: what they need to act on jobs. Nothing is owned.
struct JobServices {
  JobRegistry* registry;
  Scheduler* scheduler;
  ObjectStore* store;
  Metrics* metrics;
  JobOptions job_options;  ///< what jobs run with: planning at submit uses the same bounds and memory limit

  // With request.validate_only(), the job as it would be queued (with its plan), and nothing stored.
  absl::StatusOr<v1::Job> Submit(const v1::QuantizeModelRequest& request);
  absl::StatusOr<v1::Job> Cancel(const std::string& id);
  // The job id from "jobs/{id}" or "operations/{id}".
  static absl::StatusOr<std::string> ParseName(const std::string& name);
  absl::StatusOr<v1::Job> Find(const std::string& name) const;
};

google::longrunning::Operation ToOperation(const v1::Job& job);

class QuantizerService final : public v1::Quantizer::Service {
 public:
  explicit QuantizerService(JobServices jobs) : jobs_(jobs) {}
  grpc::Status QuantizeModel(grpc::ServerContext* context, const v1::QuantizeModelRequest* request,
                             google::longrunning::Operation* response) override;
  grpc::Status GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request, v1::Job* response) override;
  grpc::Status ListJobs(grpc::ServerContext* context, const v1::ListJobsRequest* request,
                        v1::ListJobsResponse* response) override;
  grpc::Status CancelJob(grpc::ServerContext* context, const v1::CancelJobRequest* request, v1::Job* response) override;
  grpc::Status WatchJob(grpc::ServerContext* context, const v1::WatchJobRequest* request,
                        grpc::ServerWriter<v1::Job>* writer) override;

 private:
  JobServices jobs_;
};

class OperationsService final : public google::longrunning::Operations::Service {
 public:
  explicit OperationsService(JobServices jobs) : jobs_(jobs) {}
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
  JobServices jobs_;
};

}  // namespace lowbit::server

#endif  // LOWBIT_SERVER_QUANTIZER_SERVICE_H_

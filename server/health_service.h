// grpc.health.v1.Health from its proto (not gRPC's built-in one), so server reflection can describe it
// and grpcurl needs no proto files. "" and "lowbit.v1.Quantizer" report the server's serving state.
#ifndef LOWBIT_SERVER_HEALTH_SERVICE_H_
#define LOWBIT_SERVER_HEALTH_SERVICE_H_

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "health/v1/health.grpc.pb.h"

namespace lowbit::server {

class HealthService final : public grpc::health::v1::Health::Service {
 public:
  void SetServing(bool serving);

  grpc::Status Check(grpc::ServerContext* context, const grpc::health::v1::HealthCheckRequest* request,
                     grpc::health::v1::HealthCheckResponse* response) override;
  grpc::Status Watch(grpc::ServerContext* context, const grpc::health::v1::HealthCheckRequest* request,
                     grpc::ServerWriter<grpc::health::v1::HealthCheckResponse>* writer) override;

 private:
  absl::Mutex mu_;
  bool serving_ ABSL_GUARDED_BY(mu_) = true;
  int64_t version_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace lowbit::server

#endif  // LOWBIT_SERVER_HEALTH_SERVICE_H_

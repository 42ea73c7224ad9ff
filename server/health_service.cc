#include "server/health_service.h"

namespace lowbit::server {
namespace {

using grpc::health::v1::HealthCheckResponse;

bool KnownService(const std::string& name) { return name.empty() || name == "lowbit.v1.Quantizer"; }

}  // namespace

void HealthService::SetServing(bool serving) {
  absl::MutexLock lock(&mu_);
  serving_ = serving;
  ++version_;
}

grpc::Status HealthService::Check(grpc::ServerContext*, const grpc::health::v1::HealthCheckRequest* request,
                                  HealthCheckResponse* response) {
  if (!KnownService(request->service())) return grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown service");
  absl::MutexLock lock(&mu_);
  response->set_status(serving_ ? HealthCheckResponse::SERVING : HealthCheckResponse::NOT_SERVING);
  return grpc::Status::OK;
}

grpc::Status HealthService::Watch(grpc::ServerContext* context, const grpc::health::v1::HealthCheckRequest* request,
                                  grpc::ServerWriter<HealthCheckResponse>* writer) {
  int64_t seen = -1;
  while (!context->IsCancelled()) {
    HealthCheckResponse response;
    {
      absl::MutexLock lock(&mu_);
      auto changed = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return version_ != seen; };
      if (!mu_.AwaitWithTimeout(absl::Condition(&changed), absl::Milliseconds(500))) continue;
      seen = version_;
      response.set_status(!KnownService(request->service()) ? HealthCheckResponse::SERVICE_UNKNOWN
                          : serving_                        ? HealthCheckResponse::SERVING
                                                            : HealthCheckResponse::NOT_SERVING);
    }
    if (!writer->Write(response)) break;
  }
  return grpc::Status::OK;
}

}  // namespace lowbit::server

// The one place absl::Status becomes gRPC's status (and google.rpc.Status for job errors).
//
// Every error carries google.rpc.ErrorInfo with a machine-readable reason (domain "lowbit.dev"); field
// violations attached with WithFieldViolations travel as google.rpc.BadRequest. Messages are truncated
// to 1 KiB so a pathological error never becomes a huge trailer.
#ifndef LOWBIT_SERVER_GRPC_STATUS_H_
#define LOWBIT_SERVER_GRPC_STATUS_H_

#include <string>
#include <utility>
#include <vector>

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "google/rpc/status.pb.h"

namespace lowbit::server {

struct FieldViolation {
  std::string field;        ///< e.g. "rtn.bits"
  std::string description;  ///< e.g. "must be in 2..8, got 9"
};

// INVALID_ARGUMENT listing every violation, with google.rpc.BadRequest attached.
absl::Status InvalidRequest(const std::vector<FieldViolation>& violations);
// Attaches a machine-readable ErrorInfo reason (default: the code's name).
absl::Status WithReason(absl::Status status, const std::string& reason);

google::rpc::Status ToRpcStatus(const absl::Status& status);
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace lowbit::server

#endif  // LOWBIT_SERVER_GRPC_STATUS_H_

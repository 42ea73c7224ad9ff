#include "server/grpc_status.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/rpc/error_details.pb.h"

namespace lowbit::server {
namespace {

constexpr char kDomain[] = "lowbit.dev";
constexpr size_t kMaxMessageBytes = 1024;
// absl::Status payload keys: the type URL of the detail message they hold.
constexpr char kBadRequestUrl[] = "type.googleapis.com/google.rpc.BadRequest";
constexpr char kReasonUrl[] = "lowbit.dev/reason";

std::string Truncate(absl::string_view message) {
  if (message.size() <= kMaxMessageBytes) return std::string(message);
  return absl::StrCat(message.substr(0, kMaxMessageBytes - 3), "...");
}

}  // namespace

absl::Status InvalidRequest(const std::vector<FieldViolation>& violations) {
  google::rpc::BadRequest bad_request;
  std::vector<std::string> parts;
  for (const FieldViolation& v : violations) {
    auto* fv = bad_request.add_field_violations();
    fv->set_field(v.field);
    fv->set_description(v.description);
    parts.push_back(absl::StrCat(v.field, ": ", v.description));
  }
  absl::Status status = absl::InvalidArgumentError(absl::StrJoin(parts, "; "));
  status.SetPayload(kBadRequestUrl, absl::Cord(bad_request.SerializeAsString()));
  return WithReason(std::move(status), "INVALID_REQUEST");
}

absl::Status WithReason(absl::Status status, const std::string& reason) {
  status.SetPayload(kReasonUrl, absl::Cord(reason));
  return status;
}

google::rpc::Status ToRpcStatus(const absl::Status& status) {
  google::rpc::Status rpc;
  rpc.set_code(static_cast<int>(status.code()));
  rpc.set_message(Truncate(status.message()));
  if (status.ok()) return rpc;
  google::rpc::ErrorInfo info;
  info.set_domain(kDomain);
  auto reason = status.GetPayload(kReasonUrl);  // absl::optional<absl::Cord>
  info.set_reason(reason ? std::string(*reason) : absl::StatusCodeToString(status.code()));
  rpc.add_details()->PackFrom(info);
  if (auto bad_request = status.GetPayload(kBadRequestUrl)) {
    auto* any = rpc.add_details();
    any->set_type_url(kBadRequestUrl);
    any->set_value(std::string(*bad_request));
  }
  return rpc;
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  const google::rpc::Status rpc = ToRpcStatus(status);
  return grpc::Status(static_cast<grpc::StatusCode>(rpc.code()), rpc.message(), rpc.SerializeAsString());
}

}  // namespace lowbit::server

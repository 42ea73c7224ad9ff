// Status mapping: codes, reasons, field violations, truncation.
#include "server/grpc_status.h"

#include "google/rpc/error_details.pb.h"
#include "gtest/gtest.h"
#include "server/proto_convert.h"

namespace lowbit::server {
namespace {

TEST(GrpcStatusTest, FieldViolationsTravelAsBadRequest) {
  v1::QuantizeModelRequest request;
  request.mutable_rtn()->set_bits(9);
  absl::Status s = JobSpecFromRequest(request).status();
  ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  const grpc::Status g = ToGrpcStatus(s);
  EXPECT_EQ(g.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  google::rpc::Status rpc;
  ASSERT_TRUE(rpc.ParseFromString(g.error_details()));
  google::rpc::ErrorInfo info;
  google::rpc::BadRequest bad;
  for (const auto& any : rpc.details()) {
    if (any.Is<google::rpc::ErrorInfo>()) any.UnpackTo(&info);
    if (any.Is<google::rpc::BadRequest>()) any.UnpackTo(&bad);
  }
  EXPECT_EQ(info.reason(), "INVALID_REQUEST");
  EXPECT_EQ(info.domain(), "lowbit.dev");
  std::vector<std::string> fields;
  for (const auto& v : bad.field_violations()) fields.push_back(v.field());
  EXPECT_EQ(fields, (std::vector<std::string>{"source_uri", "destination_uri", "rtn"}));
}

TEST(GrpcStatusTest, MessagesAreTruncatedAndCodesKept) {
  const grpc::Status g = ToGrpcStatus(absl::DataLossError(std::string(5000, 'x')));
  EXPECT_EQ(g.error_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_EQ(g.error_message().size(), 1024u);
  google::rpc::Status rpc;
  ASSERT_TRUE(rpc.ParseFromString(g.error_details()));
  google::rpc::ErrorInfo info;
  ASSERT_TRUE(rpc.details(0).UnpackTo(&info));
  EXPECT_EQ(info.reason(), "DATA_LOSS");
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
}

TEST(GrpcStatusTest, RequestWithoutMethodNamesTheField) {
  v1::QuantizeModelRequest request;
  request.set_source_uri("a");
  request.set_destination_uri("b");
  absl::Status s = JobSpecFromRequest(request).status();
  EXPECT_NE(s.message().find("method: set one of rtn, int8"), std::string::npos) << s;
  request.mutable_int8()->set_symmetric(true);
  auto spec = JobSpecFromRequest(request);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->quant.bits, 8);
  EXPECT_EQ(spec->quant.group_size, -1);
}

}  // namespace
}  // namespace lowbit::server

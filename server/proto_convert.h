// Translation between the API's protos and core types. Nothing else happens here.
#ifndef LOWBIT_SERVER_PROTO_CONVERT_H_
#define LOWBIT_SERVER_PROTO_CONVERT_H_

#include <vector>

#include "absl/status/statusor.h"
#include "core/job/job_plan.h"
#include "core/job/quantize_job.h"
#include "core/job/report.h"
#include "lowbit/internal/job_record.pb.h"
#include "lowbit/v1/quantizer.pb.h"
#include "server/grpc_status.h"

namespace lowbit::server {

// The core job a request describes. INVALID_ARGUMENT (with field violations) for anything malformed;
// source and destination existence are checked by the caller, against the object store.
absl::StatusOr<QuantizeJobSpec> JobSpecFromRequest(const v1::QuantizeModelRequest& request);

// The one mapping between the API's output formats and core's.
v1::OutputFormat ToProto(OutputFormat format);

// The current time with full resolution (Debian's TimeUtil::GetCurrentTime() has whole seconds only).
google::protobuf::Timestamp NowTimestamp();

v1::LayerReport ToProto(const LayerReport& layer);
v1::Allocation ToProto(const AllocationReport& allocation);
LayerReport FromProto(const v1::LayerReport& layer);
v1::Job::Phase ToProto(JobPhase phase);
v1::ResourcePlan ToProto(const ResourceEstimate& estimate, uint64_t memory_limit_bytes);
v1::QuantizeResult ToProto(const JobReport& report);
// Where an attempt got to, in a job's record (the server's job store; a batch run's state file) and back.
void SetResumePoint(const ResumePoint& point, internal::JobRecord* record);
ResumePoint ResumePointOf(const internal::JobRecord& record);

}  // namespace lowbit::server

#endif  // LOWBIT_SERVER_PROTO_CONVERT_H_

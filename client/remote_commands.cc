#include "client/remote_commands.h"

#include <cstdio>
#include <iostream>

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>
#include <grpcpp/grpcpp.h>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/console.h"
#include "client/flags.h"
#include "core/util/status_macros.h"
#include "google/rpc/error_details.pb.h"
#include "lowbit/v1/quantizer.grpc.pb.h"

ABSL_FLAG(std::string, server, "localhost:50051", "lowbitd address (host:port)");
ABSL_FLAG(std::string, request_id, "", "submit: idempotency key; a retry with the same id returns the same job");
ABSL_FLAG(bool, watch, false, "submit: watch the job to its end");
ABSL_FLAG(std::string, state, "", "list: only jobs in this state (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)");

namespace lowbit::cli {
namespace {

using google::protobuf::util::TimeUtil;

std::unique_ptr<v1::Quantizer::Stub> Connect() {
  return v1::Quantizer::NewStub(grpc::CreateChannel(absl::GetFlag(FLAGS_server), grpc::InsecureChannelCredentials()));
}

absl::Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

std::string JobName(const std::string& name) { return absl::StrContains(name, "/") ? name : "jobs/" + name; }

// Job errors carry google.rpc.ErrorInfo and BadRequest inside Any; the JSON printer resolves them from
// the generated pool, so their descriptors must be linked in even though nothing else names them.
const google::protobuf::Descriptor* const kErrorDetailTypes[] = {google::rpc::ErrorInfo::descriptor(),
                                                                 google::rpc::BadRequest::descriptor()};

absl::StatusOr<std::string> ToJson(const google::protobuf::Message& m, bool multiline) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = multiline;
  if (auto s = google::protobuf::util::MessageToJsonString(m, &json, options); !s.ok()) {
    return absl::InternalError(absl::StrCat("cannot print ", m.GetTypeName(), " as JSON: ", s.ToString()));
  }
  if (!multiline && !json.empty() && json.back() == '\n') json.pop_back();
  return json;
}

absl::Status PrintJson(const google::protobuf::Message& m) {
  ASSIGN_OR_RETURN(std::string json, ToJson(m, true));
  std::cout << json;
  return absl::OkStatus();
}

LayerReport FromProto(const v1::LayerReport& p) {
  return {p.name(), p.method(), std::vector<int64_t>(p.shape().begin(), p.shape().end()), p.bits_per_weight(),
          p.relative_error(), p.seconds(), p.note()};
}

JobSummary FromProto(const v1::QuantizeResult& r) {
  JobSummary s;
  s.layers_quantized = r.layers_quantized();
  s.weights_quantized = r.weights_quantized();
  s.bits_per_weight = r.bits_per_weight();
  s.mean_relative_error = r.mean_relative_error();
  s.max_relative_error = r.max_relative_error();
  s.bytes_read = static_cast<uint64_t>(r.bytes_read());
  s.bytes_written = static_cast<uint64_t>(r.bytes_written());
  s.seconds = r.seconds();
  return s;
}

std::string StateLine(const v1::Job& job) {
  std::string line = absl::StrFormat("%s  %s  %d/%d layers", job.name(), v1::Job::State_Name(job.state()),
                                     job.layers_done(), job.layers_total());
  if (job.has_eta()) absl::StrAppend(&line, absl::StrFormat("  eta %.1fs", TimeUtil::DurationToMilliseconds(job.eta()) / 1e3));
  if (job.has_error()) absl::StrAppend(&line, "  error: ", job.error().message());
  return line;
}

void PrintEnd(const v1::Job& job) {
  if (job.state() == v1::Job::SUCCEEDED) {
    std::cout << SummaryLine(FromProto(job.result())) << "wrote " << job.result().output_uri() << "\n";
  } else {
    std::cout << StateLine(job) << "\n";
  }
}

absl::Status EndStatus(const v1::Job& job) {
  if (job.state() == v1::Job::FAILED || job.state() == v1::Job::CANCELLED) {
    return absl::FailedPreconditionError(absl::StrCat(job.name(), " ended ", v1::Job::State_Name(job.state()), ": ",
                                                      job.error().message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::QuantizeModelRequest> RequestFromFlags() {
  if (absl::GetFlag(FLAGS_input).empty()) return absl::InvalidArgumentError("--input is required");
  if (absl::GetFlag(FLAGS_output).empty()) return absl::InvalidArgumentError("--output is required");
  ASSIGN_OR_RETURN(QuantizeJobSpec spec, JobSpecFromFlags());
  v1::QuantizeModelRequest request;
  request.set_source_uri(absl::GetFlag(FLAGS_input));  // resolved by the server, under its store root
  request.set_destination_uri(absl::GetFlag(FLAGS_output));
  if (spec.quant.method == Method::kInt8) {
    request.mutable_int8()->set_symmetric(spec.quant.symmetric);
  } else if (spec.quant.method == Method::kGptq) {
    v1::GptqParams* g = request.mutable_gptq();
    g->set_bits(spec.quant.bits);
    g->set_group_size(static_cast<int32_t>(spec.quant.group_size));
    g->set_symmetric(spec.quant.symmetric);
    g->set_damp_percent(spec.quant.damp_percent);
    g->set_act_order(spec.quant.act_order);
    g->set_static_groups(spec.quant.static_groups);
  } else if (spec.quant.method == Method::kAwq) {
    v1::AwqParams* a = request.mutable_awq();
    a->set_bits(spec.quant.bits);
    a->set_group_size(static_cast<int32_t>(spec.quant.group_size));
    a->set_symmetric(spec.quant.symmetric);
    a->set_grid(spec.quant.awq_grid);
    a->set_clip(spec.quant.awq_clip);
  } else if (spec.quant.method == Method::kLut) {
    const LutOptions& o = spec.quant.lut;
    v1::LutParams* l = request.mutable_lut();
    l->set_bits(o.bits);
    l->set_mode(o.mode == LutMode::kUniform ? v1::LutParams::UNIFORM
                : o.mode == LutMode::kUnique ? v1::LutParams::UNIQUE : v1::LutParams::KMEANS);
    l->set_granularity(o.granularity == LutGranularity::kPerGroupedChannel ? v1::LutParams::PER_GROUPED_CHANNEL
                                                                           : v1::LutParams::PER_TENSOR);
    l->set_group_size(static_cast<int32_t>(o.group_size));
    l->set_cluster_dim(o.cluster_dim);
    l->set_per_channel_scale(o.per_channel_scale);
    l->set_sensitive(o.sensitive);
    l->set_seed(o.seed);
    l->set_max_iterations(o.max_iterations);
  } else if (spec.quant.method == Method::kVq) {
    const VqOptions& o = spec.quant.vq;
    v1::VqParams* v = request.mutable_vq();
    v->set_dim(o.dim);
    v->set_bits(o.bits);
    v->set_group_cols(static_cast<int32_t>(o.group_cols));
    v->set_group_rows(static_cast<int32_t>(o.group_rows));
    v->set_em_iterations(o.em_iterations);
    v->set_update_iterations(o.update_iterations);
    v->set_damp_percent(o.damp_percent);
    v->set_seed(o.seed);
  } else if (spec.quant.method == Method::kOneBit) {
    v1::OneBitParams* b = request.mutable_onebit();
    b->set_decomposition(spec.quant.onebit.decomposition == OneBitDecomposition::kSvd ? v1::OneBitParams::SVD
                                                                                      : v1::OneBitParams::NMF);
    b->set_max_iterations(spec.quant.onebit.max_iterations);
    b->set_refine_iterations(spec.quant.onebit.refine_iterations);
  } else {
    v1::RtnParams* rtn = request.mutable_rtn();
    rtn->set_bits(spec.quant.bits);
    rtn->set_group_size(static_cast<int32_t>(spec.quant.group_size));
    rtn->set_symmetric(spec.quant.symmetric);
    rtn->set_mse_clip(spec.quant.mse_clip);
  }
  static const v1::OutputFormat kFormats[] = {v1::OUTPUT_FORMAT_UNSPECIFIED, v1::OUTPUT_FORMAT_GPTQ, v1::OUTPUT_FORMAT_AWQ,
                                              v1::OUTPUT_FORMAT_NATIVE, v1::OUTPUT_FORMAT_GGUF};
  request.set_output_format(kFormats[static_cast<int>(spec.format)]);
  for (const std::string& p : spec.include) request.mutable_layers()->add_include(p);
  for (const std::string& p : spec.exclude) request.mutable_layers()->add_exclude(p);
  request.mutable_layers()->set_quantize_lm_head(spec.quantize_lm_head);
  for (const LayerOverride& o : spec.overrides) {
    v1::LayerOverride* po = request.mutable_layers()->add_overrides();
    po->set_pattern(o.pattern);
    po->mutable_rtn()->set_bits(o.quant.bits);
    po->mutable_rtn()->set_group_size(static_cast<int32_t>(o.quant.group_size));
    po->mutable_rtn()->set_symmetric(o.quant.symmetric);
  }
  request.set_overwrite(spec.overwrite);
  request.set_request_id(absl::GetFlag(FLAGS_request_id));
  request.set_validate_only(absl::GetFlag(FLAGS_dry_run));
  request.set_tokenizer_uri(spec.tokenizer_uri);
  request.set_shard_size_bytes(static_cast<int64_t>(spec.shard_bytes));
  request.set_gguf_type(spec.gguf_type);
  request.mutable_calibration()->set_text_uri(spec.calibration.text_uri);
  request.mutable_calibration()->set_samples(spec.calibration.samples);
  request.mutable_calibration()->set_seqlen(spec.calibration.seqlen);
  request.mutable_calibration()->set_seed(spec.calibration.seed);
  request.mutable_evaluation()->set_text_uri(spec.evaluation.text_uri);
  request.mutable_evaluation()->set_windows(spec.evaluation.windows);
  request.mutable_evaluation()->set_seqlen(spec.evaluation.seqlen);
  return request;
}

}  // namespace

absl::Status RunSubmitCommand() {
  ASSIGN_OR_RETURN(v1::QuantizeModelRequest request, RequestFromFlags());
  auto stub = Connect();
  grpc::ClientContext context;
  google::longrunning::Operation op;
  RETURN_IF_ERROR(FromGrpc(stub->QuantizeModel(&context, request, &op)));
  v1::Job job;
  op.metadata().UnpackTo(&job);
  if (absl::GetFlag(FLAGS_json) && !absl::GetFlag(FLAGS_watch)) return PrintJson(op);
  if (request.validate_only()) {
    std::cout << "plan: " << job.plan().summary() << "\n(validate only: nothing was queued)\n";
    return absl::OkStatus();
  }
  std::cout << "submitted " << job.name() << " (" << op.name() << ")\n";
  if (absl::GetFlag(FLAGS_watch)) return RunWatchCommand(job.name());
  return absl::OkStatus();
}

absl::Status RunGetCommand(const std::string& name) {
  auto stub = Connect();
  grpc::ClientContext context;
  v1::GetJobRequest request;
  request.set_name(JobName(name));
  v1::Job job;
  RETURN_IF_ERROR(FromGrpc(stub->GetJob(&context, request, &job)));
  if (absl::GetFlag(FLAGS_json)) return PrintJson(job);
  std::cout << StateLine(job) << "\n";
  if (job.layers_size() > 0) {
    std::cout << LayerTableHeader();
    for (const v1::LayerReport& l : job.layers()) std::cout << LayerTableRow(FromProto(l));
  }
  if (job.state() == v1::Job::SUCCEEDED) PrintEnd(job);
  return absl::OkStatus();
}

absl::Status RunListCommand() {
  auto stub = Connect();
  v1::ListJobsRequest request;
  if (const std::string state = absl::GetFlag(FLAGS_state); !state.empty()) request.set_filter("state=" + state);
  request.set_page_size(100);
  v1::ListJobsResponse all;
  do {
    grpc::ClientContext context;
    v1::ListJobsResponse page;
    RETURN_IF_ERROR(FromGrpc(stub->ListJobs(&context, request, &page)));
    for (const v1::Job& job : page.jobs()) *all.add_jobs() = job;
    request.set_page_token(page.next_page_token());
  } while (!request.page_token().empty());
  if (absl::GetFlag(FLAGS_json)) return PrintJson(all);
  std::cout << absl::StrFormat("%-32s %-10s %-9s %-22s %s\n", "job", "state", "layers", "created", "source");
  for (const v1::Job& job : all.jobs()) {
    std::cout << absl::StrFormat("%-32s %-10s %4d/%-4d %-22s %s\n", job.name(), v1::Job::State_Name(job.state()),
                                 job.layers_done(), job.layers_total(), TimeUtil::ToString(job.create_time()).substr(0, 19),
                                 job.request().source_uri());
  }
  return absl::OkStatus();
}

absl::Status RunWatchCommand(const std::string& name) {
  auto stub = Connect();
  grpc::ClientContext context;
  v1::WatchJobRequest request;
  request.set_name(JobName(name));
  auto reader = stub->WatchJob(&context, request);
  const bool json = absl::GetFlag(FLAGS_json);
  ProgressBar bar;
  int printed = 0;
  v1::Job job;
  bool any = false;
  while (reader->Read(&job)) {
    any = true;
    if (json) {
      ASSIGN_OR_RETURN(std::string line, ToJson(job, false));
      std::cout << line << "\n" << std::flush;
      continue;
    }
    if (printed == 0 && job.layers_size() > 0) {
      bar.Finish();
      std::cout << LayerTableHeader();
    }
    for (; printed < job.layers_size(); ++printed) {
      bar.Finish();
      std::cout << LayerTableRow(FromProto(job.layers(printed))) << std::flush;
    }
    bar.Update(job.layers_done(), job.layers_total(), v1::Job::State_Name(job.state()) + " " + job.current_layer());
  }
  bar.Finish();
  RETURN_IF_ERROR(FromGrpc(reader->Finish()));
  if (!any) return absl::UnavailableError("the watch ended without any job state");
  if (!json) PrintEnd(job);
  return EndStatus(job);
}

absl::Status RunCancelCommand(const std::string& name) {
  auto stub = Connect();
  grpc::ClientContext context;
  v1::CancelJobRequest request;
  request.set_name(JobName(name));
  v1::Job job;
  RETURN_IF_ERROR(FromGrpc(stub->CancelJob(&context, request, &job)));
  if (absl::GetFlag(FLAGS_json)) return PrintJson(job);
  std::cout << StateLine(job) << "\n";
  return absl::OkStatus();
}

}  // namespace lowbit::cli

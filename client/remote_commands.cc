#include "client/remote_commands.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>
#include <grpcpp/grpcpp.h>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/console.h"
#include "client/flags.h"
#include "core/util/status_macros.h"
#include "google/rpc/error_details.pb.h"
#include "lowbit/v1/quantizer.grpc.pb.h"

ABSL_FLAG(std::string, server, "localhost:50051", "lowbitd address (host:port)");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA bundle that signed lowbitd's certificate: connect over TLS");
ABSL_FLAG(std::string, tls_cert, "", "with --tls_ca: this client's PEM certificate, for a server that asks for one");
ABSL_FLAG(std::string, tls_key, "", "the private key of --tls_cert");
ABSL_FLAG(std::string, token_file, "", "file whose first line is the bearer token (default: $LOWBIT_TOKEN)");
ABSL_FLAG(bool, watch, false, "submit: watch the job to its end");
ABSL_FLAG(std::string, state, "", "list: only jobs in this state (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)");
ABSL_FLAG(std::string, filter, "",
          "list: an AIP-160 filter of state and labels, e.g. 'state = RUNNING AND labels.team = \"nlp\"'");
ABSL_FLAG(bool, outputs, false, "delete: also delete the files the job committed to its destination");

namespace lowbit::cli {
namespace {

using google::protobuf::util::TimeUtil;

std::string ReadPem(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "lowbit: cannot read %s\n", path.c_str());
    std::exit(2);
  }
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::unique_ptr<v1::Quantizer::Stub> Connect() {
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (!absl::GetFlag(FLAGS_tls_ca).empty()) {
    grpc::SslCredentialsOptions tls;
    tls.pem_root_certs = ReadPem(absl::GetFlag(FLAGS_tls_ca));
    if (!absl::GetFlag(FLAGS_tls_cert).empty()) {
      tls.pem_cert_chain = ReadPem(absl::GetFlag(FLAGS_tls_cert));
      tls.pem_private_key = ReadPem(absl::GetFlag(FLAGS_tls_key));
    }
    credentials = grpc::SslCredentials(tls);
  }
  return v1::Quantizer::NewStub(grpc::CreateChannel(absl::GetFlag(FLAGS_server), credentials));
}

// The bearer token of --token_file or $LOWBIT_TOKEN; "" for none.
std::string Token() {
  static const std::string token = [] {
    std::string t;
    if (!absl::GetFlag(FLAGS_token_file).empty()) {
      std::string text = ReadPem(absl::GetFlag(FLAGS_token_file));
      t = text.substr(0, text.find('\n'));
    } else if (const char* env = std::getenv("LOWBIT_TOKEN")) {
      t = env;
    }
    return std::string(absl::StripAsciiWhitespace(t));
  }();
  return token;
}

// A call's context, with the token when there is one.
std::unique_ptr<grpc::ClientContext> NewContext() {
  auto context = std::make_unique<grpc::ClientContext>();
  if (!Token().empty()) context->AddMetadata("authorization", "Bearer " + Token());
  return context;
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

// The request as the flags give it; paths are the server's, resolved under its store root.
absl::StatusOr<v1::QuantizeModelRequest> SubmitRequest() {
  if (absl::GetFlag(FLAGS_input).empty()) return absl::InvalidArgumentError("--input is required");
  if (absl::GetFlag(FLAGS_output).empty()) return absl::InvalidArgumentError("--output is required");
  return RequestFromFlags();
}

}  // namespace

absl::Status RunSubmitCommand() {
  ASSIGN_OR_RETURN(v1::QuantizeModelRequest request, SubmitRequest());
  auto stub = Connect();
  std::unique_ptr<grpc::ClientContext> context = NewContext();
  google::longrunning::Operation op;
  RETURN_IF_ERROR(FromGrpc(stub->QuantizeModel(context.get(), request, &op)));
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
  std::unique_ptr<grpc::ClientContext> context = NewContext();
  v1::GetJobRequest request;
  request.set_name(JobName(name));
  v1::Job job;
  RETURN_IF_ERROR(FromGrpc(stub->GetJob(context.get(), request, &job)));
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
  std::vector<std::string> filters;
  if (const std::string state = absl::GetFlag(FLAGS_state); !state.empty()) filters.push_back("state = " + state);
  if (const std::string filter = absl::GetFlag(FLAGS_filter); !filter.empty()) filters.push_back(filter);
  request.set_filter(absl::StrJoin(filters, " AND "));
  request.set_page_size(100);
  v1::ListJobsResponse all;
  do {
    std::unique_ptr<grpc::ClientContext> context = NewContext();
    v1::ListJobsResponse page;
    RETURN_IF_ERROR(FromGrpc(stub->ListJobs(context.get(), request, &page)));
    for (const v1::Job& job : page.jobs()) *all.add_jobs() = job;
    request.set_page_token(page.next_page_token());
  } while (!request.page_token().empty());
  if (absl::GetFlag(FLAGS_json)) return PrintJson(all);
  std::cout << absl::StrFormat("%-32s %-10s %-9s %-20s %-22s %-24s %s\n", "job", "state", "layers", "created", "replica",
                               "labels", "source");
  for (const v1::Job& job : all.jobs()) {
    // Labels in key order, so the column reads the same every time.
    const std::map<std::string, std::string> labels(job.request().labels().begin(), job.request().labels().end());
    std::cout << absl::StrFormat("%-32s %-10s %4d/%-4d %-20s %-22s %-24s %s\n", job.name(),
                                 v1::Job::State_Name(job.state()), job.layers_done(), job.layers_total(),
                                 TimeUtil::ToString(job.create_time()).substr(0, 19),
                                 job.replica().empty() ? "-" : job.replica(),
                                 labels.empty() ? "-" : absl::StrJoin(labels, ",", absl::PairFormatter("=")),
                                 job.request().source_uri());
  }
  return absl::OkStatus();
}

absl::Status RunWatchCommand(const std::string& name) {
  auto stub = Connect();
  std::unique_ptr<grpc::ClientContext> context = NewContext();
  v1::WatchJobRequest request;
  request.set_name(JobName(name));
  auto reader = stub->WatchJob(context.get(), request);
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

absl::Status RunDeleteCommand(const std::string& name) {
  auto stub = Connect();
  std::unique_ptr<grpc::ClientContext> context = NewContext();
  v1::DeleteJobRequest request;
  request.set_name(JobName(name));
  request.set_delete_outputs(absl::GetFlag(FLAGS_outputs));
  google::protobuf::Empty empty;
  RETURN_IF_ERROR(FromGrpc(stub->DeleteJob(context.get(), request, &empty)));
  std::cout << "deleted " << request.name() << (request.delete_outputs() ? " and its outputs" : "") << "\n";
  return absl::OkStatus();
}

absl::Status RunCancelCommand(const std::string& name) {
  auto stub = Connect();
  std::unique_ptr<grpc::ClientContext> context = NewContext();
  v1::CancelJobRequest request;
  request.set_name(JobName(name));
  v1::Job job;
  RETURN_IF_ERROR(FromGrpc(stub->CancelJob(context.get(), request, &job)));
  if (absl::GetFlag(FLAGS_json)) return PrintJson(job);
  std::cout << StateLine(job) << "\n";
  return absl::OkStatus();
}

}  // namespace lowbit::cli

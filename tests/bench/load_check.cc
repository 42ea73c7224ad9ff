// lowbit_load_check: N clients poll GetJob while a job runs. Reports GetJob latency percentiles and the
// job's duration beside the same job run without pollers before and after (bracketing machine noise).
//
//   lowbit_load_check --server HOST:PORT --input URI [--clients 50] [--poll_interval_ms 20]
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include <google/protobuf/util/time_util.h>
#include <grpcpp/grpcpp.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "lowbit/v1/quantizer.grpc.pb.h"

ABSL_FLAG(std::string, server, "localhost:50051", "lowbitd address");
ABSL_FLAG(std::string, input, "", "checkpoint URI on the server's store");
ABSL_FLAG(int, clients, 50, "concurrent polling clients");
ABSL_FLAG(int, poll_interval_ms, 20, "pause between one client's polls (0: back to back)");

namespace {

using lowbit::v1::Job;
using google::protobuf::util::TimeUtil;

// Submits the job, waits for it through WatchJob, and returns its duration by the server's clock.
double RunJob(lowbit::v1::Quantizer::Stub& stub, const std::string& output, std::string* name_out = nullptr,
              std::atomic<bool>* started = nullptr) {
  lowbit::v1::QuantizeModelRequest request;
  request.set_source_uri(absl::GetFlag(FLAGS_input));
  request.set_destination_uri(output);
  request.set_overwrite(true);
  request.mutable_rtn()->set_bits(4);
  request.mutable_rtn()->set_group_size(128);
  grpc::ClientContext submit;
  google::longrunning::Operation op;
  if (const grpc::Status s = stub.QuantizeModel(&submit, request, &op); !s.ok()) {
    std::fprintf(stderr, "submit failed: %s\n", s.error_message().c_str());
    std::exit(1);
  }
  Job job;
  op.metadata().UnpackTo(&job);
  if (name_out != nullptr) *name_out = job.name();
  if (started != nullptr) *started = true;
  grpc::ClientContext watch;
  lowbit::v1::WatchJobRequest w;
  w.set_name(job.name());
  auto reader = stub.WatchJob(&watch, w);
  while (reader->Read(&job)) {
  }
  if (job.state() != Job::SUCCEEDED) {
    std::fprintf(stderr, "job ended %s\n", Job::State_Name(job.state()).c_str());
    std::exit(1);
  }
  return TimeUtil::DurationToNanoseconds(job.end_time() - job.start_time()) / 1e9;
}

// CPU time of this process (user + system): the load generator's own share of the machine.
double ProcessCpuSeconds() {
  rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 + usage.ru_stime.tv_sec + usage.ru_stime.tv_usec / 1e6;
}

double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  auto channel = grpc::CreateChannel(absl::GetFlag(FLAGS_server), grpc::InsecureChannelCredentials());
  auto stub = lowbit::v1::Quantizer::NewStub(channel);
  RunJob(*stub, "loadcheck/warmup");
  const double before = RunJob(*stub, "loadcheck/baseline");

  const int clients = absl::GetFlag(FLAGS_clients);
  const auto interval = std::chrono::milliseconds(absl::GetFlag(FLAGS_poll_interval_ms));
  std::atomic<bool> started{false}, done{false};
  std::string name;
  std::vector<std::vector<double>> latencies(static_cast<size_t>(clients));
  std::vector<std::thread> pollers;
  for (int c = 0; c < clients; ++c) {
    pollers.emplace_back([&, c] {
      // Each client has its own channel, as independent clients would.
      auto own = lowbit::v1::Quantizer::NewStub(
          grpc::CreateCustomChannel(absl::GetFlag(FLAGS_server), grpc::InsecureChannelCredentials(),
                                    [c] { grpc::ChannelArguments a; a.SetInt("lowbit.client", c); return a; }()));
      while (!started) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      lowbit::v1::GetJobRequest request;
      request.set_name(name);
      while (!done) {
        grpc::ClientContext context;
        Job job;
        const auto t0 = std::chrono::steady_clock::now();
        const grpc::Status s = own->GetJob(&context, request, &job);
        const auto t1 = std::chrono::steady_clock::now();
        if (s.ok()) latencies[static_cast<size_t>(c)].push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
        if (interval.count() > 0) std::this_thread::sleep_for(interval);
      }
    });
  }
  // The name must be known before pollers start: submit, publish, then watch.
  const double cpu_before = ProcessCpuSeconds();
  const double loaded = RunJob(*stub, "loadcheck/loaded", &name, &started);
  const double client_cpu = ProcessCpuSeconds() - cpu_before;
  done = true;
  for (auto& t : pollers) t.join();
  const double after = RunJob(*stub, "loadcheck/baseline");

  std::vector<double> all;
  for (auto& v : latencies) all.insert(all.end(), v.begin(), v.end());
  std::printf("clients %d, poll interval %d ms: %zu GetJob calls during the loaded job (%.0f/s)\n", clients,
              absl::GetFlag(FLAGS_poll_interval_ms), all.size(), all.size() / loaded);
  std::vector<double> copy = all;
  std::printf("GetJob latency: p50 %.3f ms, p99 %.3f ms, max %.3f ms\n", Percentile(copy, 0.5), Percentile(copy, 0.99),
              Percentile(copy, 1.0));
  std::printf("the polling clients themselves used %.2f CPU-seconds (%.0f%% of the %u cores) on this machine\n",
              client_cpu, 100 * client_cpu / loaded / std::thread::hardware_concurrency(), std::thread::hardware_concurrency());
  std::printf("job seconds: unloaded %.3f (before) / %.3f (after), loaded %.3f; loaded / mean unloaded = %.2f\n", before,
              after, loaded, loaded / ((before + after) / 2));
  return 0;
}

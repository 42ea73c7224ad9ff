// lowbitd: the quantization job server.
//
// Shutdown on SIGTERM/SIGINT: the signal handler only writes the signal number to a pipe (the self-pipe
// trick: async-signal-safe, and it works whichever thread the kernel picks, including threads libraries
// started before main such as OpenBLAS's). A watcher thread reads the pipe, marks health NOT_SERVING,
// stops taking jobs, gives running jobs the grace period to finish, then preempts them at their next
// tensor (they return to QUEUED and run again after a restart) and shuts the gRPC server down. Exit 0.
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <fstream>
#include <memory>
#include <random>
#include <thread>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/match.h"
#include "absl/time/time.h"
#include "core/job/job_plan.h"
#include "core/storage/routing_object_store.h"
#include "core/util/memory.h"
#include "core/util/thread_pool.h"
#include "server/auth.h"
#include "server/fleet.h"
#include "server/health_service.h"
#include "server/job_executor.h"
#include "server/job_manager.h"
#include "server/job_store.h"
#include "server/metrics.h"
#include "server/metrics_http.h"
#include "server/postgres_job_store.h"
#include "server/quantizer_service.h"
#include "server/scheduler.h"

ABSL_FLAG(std::string, grpc_address, "",
          "gRPC listen address (port 0 picks a free port); default 127.0.0.1:50051, or 0.0.0.0:50051 once TLS or "
          "tokens are configured: an open port is never the default");
ABSL_FLAG(std::string, metrics_address, "",
          "Prometheus /metrics listen address; default 127.0.0.1:9464, or 0.0.0.0:9464 once TLS or tokens are configured");
ABSL_FLAG(std::string, health_address, "",
          "if set, also serve only grpc.health.v1 here in plaintext, for probes that cannot speak TLS (Kubernetes' "
          "grpc probes); the health service on --grpc_address stays");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain: serve gRPC and /metrics over TLS (re-read when it changes)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, "", "PEM CA bundle: clients must present a certificate it signed (mutual TLS)");
ABSL_FLAG(std::string, auth_token_file, "",
          "file of bearer tokens, one per line: every RPC but health, and /metrics, needs one (re-read when it changes)");
ABSL_FLAG(std::string, auth_jwks, "", "JWKS file: bearer JWTs signed RS256/ES256 by one of its keys are accepted");
ABSL_FLAG(std::string, auth_issuer, "", "with --auth_jwks: the required iss claim");
ABSL_FLAG(std::string, auth_audience, "", "with --auth_jwks: the required aud claim");
ABSL_FLAG(std::string, store_root, ".", "directory that file:// URIs resolve under; nothing outside it is reachable");
ABSL_FLAG(std::string, state_dir, "lowbit-state", "directory of the on-disk job store (jobs survive restarts)");
ABSL_FLAG(std::string, job_store, "",
          "postgres://... : share jobs with every replica using this PostgreSQL database (claims with leases; see "
          "docs/scale.md) instead of --state_dir; the password may come from PGPASSWORD or ~/.pgpass");
ABSL_FLAG(std::string, replica, "",
          "this replica's name in job claims and job metadata (default: the host name and a random suffix, unique "
          "per start)");
ABSL_FLAG(absl::Duration, lease, absl::Seconds(30),
          "with --job_store: a replica that has not renewed its claim for this long loses its jobs to the others");
ABSL_FLAG(int, max_concurrent_jobs, 1, "jobs running at once");
ABSL_FLAG(int, max_queued_jobs, 16, "jobs waiting beyond the running ones; more are refused with RESOURCE_EXHAUSTED");
ABSL_FLAG(int, worker_threads, 0, "quantization worker threads shared by all jobs (0 = one per core)");
ABSL_FLAG(int, max_tensors_in_flight, 4, "tensors each job holds in memory at once (read, not yet written)");
ABSL_FLAG(std::string, memory_limit, "",
          "memory jobs may plan to use, e.g. 20GiB or 16G (default: the cgroup limit in a container, else 80% of RAM; "
          "0: none); jobs planned above it are refused at submit, queued jobs are admitted within it");
ABSL_FLAG(absl::Duration, grace_period, absl::Seconds(30), "on SIGTERM, how long running jobs may take to finish");
ABSL_FLAG(std::string, s3_endpoint, "", "S3-compatible endpoint for s3:// URIs (default: AWS_ENDPOINT_URL, or AWS)");
ABSL_FLAG(std::string, s3_region, "", "S3 region (default: AWS_REGION, the profile's region, or us-east-1)");
ABSL_FLAG(absl::Duration, checkpoint_interval, absl::Seconds(60),
          "calibrated jobs save the hidden states at a block boundary at most this often, to resume from after an "
          "interruption (they are samples x seqlen x hidden floats: GBs on large models); 0s: every block");
ABSL_FLAG(absl::Duration, job_retention, absl::Hours(24 * 7),
          "records of finished jobs are pruned this long after they ended (their reports stay with the outputs)");
ABSL_FLAG(std::string, ready_file, "", "if set, written with '<grpc port> <metrics port>' once serving");

namespace lowbit::server {
namespace {

int signal_pipe[2] = {-1, -1};

// The name a replica claims jobs under: unique per start, so a restarted replica never mistakes the
// claims of its previous life for its own.
std::string ReplicaName() {
  if (std::string name = absl::GetFlag(FLAGS_replica); !name.empty()) return name;
  char host[256] = {};
  if (::gethostname(host, sizeof(host) - 1) != 0) std::snprintf(host, sizeof(host), "lowbitd");
  std::random_device random;
  return absl::StrFormat("%s-%04x", host, random() & 0xffff);
}

void OnShutdownSignal(int signal) {
  const char byte = static_cast<char>(signal);
  [[maybe_unused]] ssize_t n = ::write(signal_pipe[1], &byte, 1);
}

int Serve() {
  if (::pipe(signal_pipe) != 0) {
    std::perror("lowbitd: pipe");
    return 1;
  }
  struct sigaction action = {};
  action.sa_handler = OnShutdownSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);

  Metrics metrics;
  // file:// under --store_root; s3:// with the credentials of the environment (never logged).
  StoreConfig store_config;
  store_config.local_root = absl::GetFlag(FLAGS_store_root);
  store_config.s3_endpoint = absl::GetFlag(FLAGS_s3_endpoint);
  store_config.s3_region = absl::GetFlag(FLAGS_s3_region);
  store_config.observer = &metrics;
  absl::StatusOr<std::unique_ptr<RoutingObjectStore>> store = CreateObjectStore(store_config);
  if (!store.ok()) {
    std::fprintf(stderr, "lowbitd: %s\n", store.status().ToString().c_str());
    return 1;
  }
  // One node keeps its jobs on disk; a fleet shares them in PostgreSQL.
  const std::string replica = ReplicaName();
  const std::string job_store_uri = absl::GetFlag(FLAGS_job_store);
  const bool in_fleet = !job_store_uri.empty();
  if (in_fleet && !absl::StartsWith(job_store_uri, "postgres://") && !absl::StartsWith(job_store_uri, "postgresql://")) {
    std::fprintf(stderr, "lowbitd: --job_store must be a postgres:// URI\n");
    return 1;
  }
  std::unique_ptr<PostgresJobStore> shared_store;
  std::unique_ptr<FileJobStore> file_store;
  if (in_fleet) {
    absl::StatusOr<std::unique_ptr<PostgresJobStore>> connected = PostgresJobStore::Connect(job_store_uri, replica);
    if (!connected.ok()) {
      std::fprintf(stderr, "lowbitd: %s\n", connected.status().ToString().c_str());
      return 1;
    }
    shared_store = std::move(*connected);
  } else {
    absl::StatusOr<std::unique_ptr<FileJobStore>> created = FileJobStore::Create(absl::GetFlag(FLAGS_state_dir));
    if (!created.ok()) {
      std::fprintf(stderr, "lowbitd: %s\n", created.status().ToString().c_str());
      return 1;
    }
    file_store = std::move(*created);
  }
  JobStore* const job_store = in_fleet ? static_cast<JobStore*>(shared_store.get()) : file_store.get();
  const TlsFiles tls{absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key), absl::GetFlag(FLAGS_tls_client_ca)};
  absl::StatusOr<std::unique_ptr<Authenticator>> auth =
      Authenticator::Create({absl::GetFlag(FLAGS_auth_token_file), absl::GetFlag(FLAGS_auth_jwks),
                             absl::GetFlag(FLAGS_auth_issuer), absl::GetFlag(FLAGS_auth_audience)});
  if (!auth.ok()) {
    std::fprintf(stderr, "lowbitd: %s\n", auth.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials = GrpcServerCredentials(tls);
  if (!credentials.ok()) {
    std::fprintf(stderr, "lowbitd: %s\n", credentials.status().ToString().c_str());
    return 1;
  }
  // Only a secured server listens beyond loopback unless told to.
  const bool secured = tls.enabled() || (*auth)->enabled();
  const std::string any_or_loopback = secured ? "0.0.0.0" : "127.0.0.1";
  std::string grpc_address = absl::GetFlag(FLAGS_grpc_address), metrics_address = absl::GetFlag(FLAGS_metrics_address);
  if (grpc_address.empty()) grpc_address = any_or_loopback + ":50051";
  if (metrics_address.empty()) metrics_address = any_or_loopback + ":9464";

  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> metrics_http =
      MetricsHttpServer::Start(metrics_address, metrics.registry(), {tls, auth->get()});
  if (!metrics_http.ok()) {
    std::fprintf(stderr, "lowbitd: %s\n", metrics_http.status().ToString().c_str());
    return 1;
  }

  const int workers = absl::GetFlag(FLAGS_worker_threads) > 0 ? absl::GetFlag(FLAGS_worker_threads)
                                                              : static_cast<int>(std::thread::hardware_concurrency());
  ThreadPool pool(workers);
  JobOptions job_options;
  job_options.max_tensors_in_flight = absl::GetFlag(FLAGS_max_tensors_in_flight);
  job_options.hidden_state_interval = absl::GetFlag(FLAGS_checkpoint_interval);
  if (absl::GetFlag(FLAGS_memory_limit).empty()) {
    job_options.memory_limit_bytes = DefaultMemoryLimit();
  } else if (absl::StatusOr<uint64_t> limit = ParseByteSize(absl::GetFlag(FLAGS_memory_limit)); limit.ok()) {
    job_options.memory_limit_bytes = *limit;
  } else {
    std::fprintf(stderr, "lowbitd: --memory_limit: %s\n", limit.status().ToString().c_str());
    return 1;
  }
  JobManager::Options manager_options;
  manager_options.job = job_options;
  manager_options.retention = absl::GetFlag(FLAGS_job_retention);
  manager_options.replica = replica;
  JobManager jobs(manager_options, job_store, store->get(), &metrics);
  std::unique_ptr<Fleet> fleet;
  if (in_fleet) {
    fleet = std::make_unique<Fleet>(
        Fleet::Options{absl::GetFlag(FLAGS_lease), job_options.memory_limit_bytes, absl::GetFlag(FLAGS_max_concurrent_jobs),
                       &metrics},
        shared_store.get(), &jobs);
    jobs.JoinFleet(fleet.get());
  }
  if (absl::Status restored = jobs.Restore(); !restored.ok()) {
    std::fprintf(stderr, "lowbitd: %s\n", restored.ToString().c_str());
    return 1;
  }
  JobExecutor executor({job_options}, &jobs, store->get(), &pool, &metrics);
  Scheduler scheduler({absl::GetFlag(FLAGS_max_concurrent_jobs), absl::GetFlag(FLAGS_max_queued_jobs),
                       job_options.memory_limit_bytes},
                      [&executor](const std::string& id) { executor.Run(id); },
                      [&metrics, &fleet](int queued, int running) {
                        metrics.QueueChanged(queued, running);
                        if (fleet != nullptr) fleet->Wake();  // a runner may be free for the next claim
                      });
  jobs.StartScheduling(&scheduler);
  if (fleet != nullptr) {
    fleet->Start(&scheduler);
  } else {
    metrics.JobStoreReachable(true);  // its disk: a failing save shows in the jobs it refuses
  }

  QuantizerService quantizer_service(&jobs, auth->get());
  OperationsService operations_service(&jobs, auth->get());
  HealthService health_service, probe_health_service;
  // Called explicitly: with --as-needed the reflection library is otherwise dropped at link time.
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int grpc_port = 0;
  builder.AddListeningPort(grpc_address, *credentials, &grpc_port);
  builder.SetMaxReceiveMessageSize(1 << 20);  // every request field is bounded far below this (proto_convert.cc)
  builder.RegisterService(&quantizer_service);
  builder.RegisterService(&operations_service);
  builder.RegisterService(&health_service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || grpc_port == 0) {
    std::fprintf(stderr, "lowbitd: cannot listen on %s\n", grpc_address.c_str());
    return 1;
  }
  // Health alone, in plaintext, for probes: it tells nothing but SERVING or NOT_SERVING.
  std::unique_ptr<grpc::Server> probe_server;
  if (const std::string address = absl::GetFlag(FLAGS_health_address); !address.empty()) {
    grpc::ServerBuilder probe_builder;
    int probe_port = 0;
    probe_builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &probe_port);
    probe_builder.RegisterService(&probe_health_service);
    probe_server = probe_builder.BuildAndStart();
    if (probe_server == nullptr || probe_port == 0) {
      std::fprintf(stderr, "lowbitd: cannot listen on %s\n", address.c_str());
      return 1;
    }
  }
  const int metrics_port = (*metrics_http)->port();
  std::fprintf(stderr,
               "lowbitd: serving gRPC on %s (port %d, %s), metrics on port %d; store root %s; %d worker threads; %s\n",
               grpc_address.c_str(), grpc_port,
               tls.enabled() ? (tls.client_ca.empty() ? "TLS" : "mutual TLS") : "plaintext", metrics_port,
               absl::GetFlag(FLAGS_store_root).c_str(), workers,
               in_fleet ? absl::StrCat("replica ", replica, " of a fleet").c_str() : "single node");
  if ((*auth)->enabled() && !tls.enabled()) {
    std::fprintf(stderr, "lowbitd: warning: bearer tokens without --tls_cert cross the network in the clear\n");
  }
  if (const std::string ready = absl::GetFlag(FLAGS_ready_file); !ready.empty()) {
    std::ofstream(ready + ".tmp") << grpc_port << " " << metrics_port << "\n";
    std::rename((ready + ".tmp").c_str(), ready.c_str());
  }

  std::thread watcher([&] {
    char byte = 0;
    while (::read(signal_pipe[0], &byte, 1) < 0 && errno == EINTR) {
    }
    const int signal = byte;
    std::fprintf(stderr, "lowbitd: signal %d: draining (grace %s)\n", signal,
                 absl::FormatDuration(absl::GetFlag(FLAGS_grace_period)).c_str());
    health_service.SetServing(false);
    probe_health_service.SetServing(false);
    scheduler.StopAccepting();
    if (fleet != nullptr) fleet->StopClaiming();  // and gives back the claimed jobs that did not start
    if (!scheduler.WaitUntilIdle(absl::GetFlag(FLAGS_grace_period))) {
      std::fprintf(stderr, "lowbitd: grace period over: preempting running jobs\n");
      executor.PreemptAll();
      scheduler.WaitUntilIdle(absl::Seconds(30));
    }
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    if (probe_server != nullptr) probe_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  });
  server->Wait();
  watcher.join();
  scheduler.Shutdown();
  if (fleet != nullptr) fleet->Stop();
  std::fprintf(stderr, "lowbitd: stopped\n");
  return 0;
}

}  // namespace
}  // namespace lowbit::server

int main(int argc, char** argv) {
  lowbit::ConfigureAllocatorForLargeBuffers();
  absl::SetProgramUsageMessage("lowbitd: the lowbit quantization job server");
  absl::ParseCommandLine(argc, argv);
  return lowbit::server::Serve();
}

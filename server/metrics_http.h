// MetricsHttpServer: serves GET /metrics (Prometheus text format) from a registry.
//
// prometheus-cpp's pull exposer runs on civetweb, whose Debian build gives each worker a fixed 100 KiB
// stack; once OpenBLAS is loaded in the process, serialising a scrape overflows it (measured: SIGSEGV in
// printf at the guard page). This server gives each connection a thread with a normal stack instead, at
// most kMaxConnections at once, each with a deadline, so a slow client never holds up another scrape.
// With TLS files it speaks HTTPS (the files re-read when they change); with an Authenticator it asks for
// the same bearer token as the gRPC port.
#ifndef LOWBIT_SERVER_METRICS_HTTP_H_
#define LOWBIT_SERVER_METRICS_HTTP_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include <prometheus/registry.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/auth.h"

namespace lowbit::server {

class MetricsHttpServer {
 public:
  struct Options {
    TlsFiles tls;                         ///< cert and key: HTTPS (client_ca: clients must present a certificate)
    const Authenticator* auth = nullptr;  ///< not owned; null or disabled: no token asked
    absl::Duration connection_deadline = absl::Seconds(5);  ///< a connection's whole request and answer
  };
  static constexpr int kMaxConnections = 16;

  // `address` is "host:port" (port 0 picks a free one).
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(const std::string& address,
                                                                  std::shared_ptr<prometheus::Registry> registry,
                                                                  const Options& options);
  ~MetricsHttpServer();
  int port() const { return port_; }

 private:
  struct Tls;
  MetricsHttpServer(int fd, int port, std::shared_ptr<prometheus::Registry> registry, const Options& options);
  void Serve();
  void Answer(int client);

  const int fd_;
  const int port_;
  const std::shared_ptr<prometheus::Registry> registry_;
  const Options options_;
  std::unique_ptr<Tls> tls_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  absl::Mutex mu_;
  int connections_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace lowbit::server

#endif  // LOWBIT_SERVER_METRICS_HTTP_H_

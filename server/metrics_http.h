// MetricsHttpServer: serves GET /metrics (Prometheus text format) from a registry on one thread.
//
// prometheus-cpp's pull exposer runs on civetweb, whose Debian build gives each worker a fixed 100 KiB
// stack; once OpenBLAS is loaded in the process, serialising a scrape overflows it (measured: SIGSEGV in
// printf at the guard page). One thread with a normal stack serves scrapes one at a time instead.
#ifndef LOWBIT_SERVER_METRICS_HTTP_H_
#define LOWBIT_SERVER_METRICS_HTTP_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include <prometheus/registry.h>

#include "absl/status/statusor.h"

namespace lowbit::server {

class MetricsHttpServer {
 public:
  // `address` is "host:port" (port 0 picks a free one).
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(const std::string& address,
                                                                  std::shared_ptr<prometheus::Registry> registry);
  ~MetricsHttpServer();
  int port() const { return port_; }

 private:
  MetricsHttpServer(int fd, int port, std::shared_ptr<prometheus::Registry> registry)
      : fd_(fd), port_(port), registry_(std::move(registry)) {}
  void Serve();
  void Answer(int client);

  const int fd_;
  const int port_;
  const std::shared_ptr<prometheus::Registry> registry_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace lowbit::server

#endif  // LOWBIT_SERVER_METRICS_HTTP_H_

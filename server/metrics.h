// Prometheus metrics of DESIGN.md (prefix lowbit_, base units, no job or layer labels). Thread-safe.
#ifndef LOWBIT_SERVER_METRICS_H_
#define LOWBIT_SERVER_METRICS_H_

#include <memory>
#include <string>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "core/storage/s3_object_store.h"

namespace lowbit::server {

class Metrics final : public StoreRequestObserver {
 public:
  Metrics();
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  void JobSubmitted();
  // `state`: "succeeded", "failed" or "cancelled".
  void JobFinished(const std::string& state, double seconds);
  void QueueChanged(int queued, int running);
  void LayerQuantized(const std::string& method, double seconds, double relative_error);
  void BytesRead(double bytes);
  void BytesWritten(double bytes);
  // Object store requests by operation and HTTP status ("0" when the transport failed), and retries.
  void OnRequest(absl::string_view op, int code) override;
  void OnRetry(absl::string_view op) override;
  // A replica of a fleet: whether the shared job store answered its last renewal; jobs it took over
  // from a replica whose lease expired; jobs it stopped because it lost their claim.
  void JobStoreReachable(bool up);
  void JobTakenOver();
  void JobLost();

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Counter* jobs_submitted_;
  prometheus::Family<prometheus::Counter>* jobs_finished_;
  prometheus::Gauge* jobs_running_;
  prometheus::Gauge* jobs_queued_;
  prometheus::Histogram* job_duration_;
  prometheus::Family<prometheus::Counter>* layers_quantized_;
  prometheus::Family<prometheus::Histogram>* layer_seconds_;
  prometheus::Family<prometheus::Histogram>* layer_error_;
  prometheus::Counter* bytes_read_;
  prometheus::Counter* bytes_written_;
  prometheus::Family<prometheus::Counter>* store_requests_;
  prometheus::Counter* store_retries_;
  prometheus::Gauge* job_store_up_;
  prometheus::Counter* takeovers_;
  prometheus::Counter* lost_;
};

}  // namespace lowbit::server

#endif  // LOWBIT_SERVER_METRICS_H_

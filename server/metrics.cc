#include "server/metrics.h"

namespace lowbit::server {

Metrics::Metrics() : registry_(std::make_shared<prometheus::Registry>()) {
  using prometheus::BuildCounter;
  using prometheus::BuildGauge;
  using prometheus::BuildHistogram;
  prometheus::Registry& r = *registry_;
  jobs_submitted_ = &BuildCounter().Name("lowbit_jobs_submitted_total").Help("Quantization jobs accepted.").Register(r).Add({});
  jobs_finished_ = &BuildCounter().Name("lowbit_jobs_finished_total").Help("Jobs that ended, by final state.").Register(r);
  for (const char* state : {"succeeded", "failed", "cancelled"}) jobs_finished_->Add({{"state", state}});
  jobs_running_ = &BuildGauge().Name("lowbit_jobs_running").Help("Jobs running now.").Register(r).Add({});
  jobs_queued_ = &BuildGauge().Name("lowbit_jobs_queued").Help("Jobs waiting in the queue.").Register(r).Add({});
  job_duration_ = &BuildHistogram()
                       .Name("lowbit_job_duration_seconds")
                       .Help("Wall time of finished jobs, from start to end.")
                       .Register(r)
                       .Add({}, prometheus::Histogram::BucketBoundaries{1, 5, 15, 60, 300, 900, 3600, 10800, 43200});
  layers_quantized_ = &BuildCounter().Name("lowbit_layers_quantized_total").Help("Linear layers quantized, by method.").Register(r);
  layer_seconds_ = &BuildHistogram().Name("lowbit_layer_quantize_seconds").Help("Time to quantize and pack one layer, by method.").Register(r);
  layer_error_ = &BuildHistogram()
                      .Name("lowbit_layer_relative_error")
                      .Help("Relative Frobenius reconstruction error ||W - W_q|| / ||W|| of each layer, by method.")
                      .Register(r);
  bytes_read_ = &BuildCounter().Name("lowbit_bytes_read_total").Help("Checkpoint bytes read.").Register(r).Add({});
  bytes_written_ = &BuildCounter().Name("lowbit_bytes_written_total").Help("Output bytes written.").Register(r).Add({});
  store_requests_ = &BuildCounter()
                         .Name("lowbit_object_store_requests_total")
                         .Help("Object store (S3) requests by operation and HTTP status; code 0 is a transport failure.")
                         .Register(r);
  store_retries_ = &BuildCounter().Name("lowbit_object_store_retries_total").Help("Object store requests retried.").Register(r).Add({});
  // A fleet's replicas (server/fleet.h); a single node leaves them at 0.
  job_store_up_ = &BuildGauge().Name("lowbit_job_store_up").Help("1 while the job store answered: a fleet's last lease renewal; always 1 on a single node.").Register(r).Add({});
  takeovers_ = &BuildCounter().Name("lowbit_jobs_taken_over_total").Help("Jobs this replica claimed after another replica's lease expired.").Register(r).Add({});
  lost_ = &BuildCounter().Name("lowbit_jobs_lost_total").Help("Jobs this replica stopped because another replica holds them now.").Register(r).Add({});
}

void Metrics::OnRequest(absl::string_view op, int code) {
  store_requests_->Add({{"op", std::string(op)}, {"code", std::to_string(code)}}).Increment();
}

void Metrics::OnRetry(absl::string_view) { store_retries_->Increment(); }
void Metrics::JobStoreReachable(bool up) { job_store_up_->Set(up ? 1 : 0); }
void Metrics::JobTakenOver() { takeovers_->Increment(); }
void Metrics::JobLost() { lost_->Increment(); }

void Metrics::JobSubmitted() { jobs_submitted_->Increment(); }

void Metrics::JobFinished(const std::string& state, double seconds) {
  jobs_finished_->Add({{"state", state}}).Increment();
  job_duration_->Observe(seconds);
}

void Metrics::QueueChanged(int queued, int running) {
  jobs_queued_->Set(queued);
  jobs_running_->Set(running);
}

void Metrics::LayerQuantized(const std::string& method, double seconds, double relative_error) {
  layers_quantized_->Add({{"method", method}}).Increment();
  layer_seconds_->Add({{"method", method}}, prometheus::Histogram::BucketBoundaries{0.001, 0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60})
      .Observe(seconds);
  layer_error_->Add({{"method", method}}, prometheus::Histogram::BucketBoundaries{0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1})
      .Observe(relative_error);
}

void Metrics::BytesRead(double bytes) { bytes_read_->Increment(bytes); }
void Metrics::BytesWritten(double bytes) { bytes_written_->Increment(bytes); }

}  // namespace lowbit::server

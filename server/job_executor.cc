#include "server/job_executor.h"

#include <chrono>
#include <exception>

#include <google/protobuf/util/time_util.h>

#include "absl/strings/str_cat.h"
#include "core/job/quantize_job.h"
#include "server/grpc_status.h"
#include "server/proto_convert.h"

namespace lowbit::server {
namespace {

using google::protobuf::util::TimeUtil;

// Publishes a job's progress as it streams.
class ProgressObserver final : public JobObserver {
 public:
  ProgressObserver(const std::string& id, JobManager* manager, Metrics* metrics, const std::atomic<bool>* preempt)
      : id_(id), manager_(manager), metrics_(metrics), preempt_(preempt), started_(std::chrono::steady_clock::now()) {}

  void OnStart(int64_t layers_total, uint64_t bytes_total) override {
    bytes_total_ = bytes_total;
    manager_->Progress(id_, [&](v1::Job& job) {
      job.set_layers_total(static_cast<int32_t>(layers_total));
      job.set_bytes_total(static_cast<int64_t>(bytes_total));
    });
  }

  void OnTensorDone(const std::string& name, const LayerReport* layer, uint64_t bytes_read,
                    uint64_t bytes_written) override {
    metrics_->BytesRead(static_cast<double>(bytes_read - last_read_));
    metrics_->BytesWritten(static_cast<double>(bytes_written - last_written_));
    last_read_ = bytes_read;
    last_written_ = bytes_written;
    if (layer != nullptr) metrics_->LayerQuantized(layer->method, layer->seconds, layer->relative_error);
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    manager_->Progress(id_, [&](v1::Job& job) {
      job.set_current_layer(name);
      job.set_bytes_read(static_cast<int64_t>(bytes_read));
      job.set_bytes_written(static_cast<int64_t>(bytes_written));
      if (layer != nullptr) {
        job.set_layers_done(job.layers_done() + 1);
        *job.add_layers() = ToProto(*layer);
      }
      // Reading is the pace-setter of a streamed job: extrapolate from the bytes read so far.
      if (phase_ != JobPhase::kCalibrating && bytes_read > 0 && bytes_total_ >= bytes_read) {
        const double remaining = elapsed * static_cast<double>(bytes_total_ - bytes_read) / static_cast<double>(bytes_read);
        *job.mutable_eta() = TimeUtil::NanosecondsToDuration(static_cast<int64_t>(remaining * 1e9));
      }
    });
  }

  void OnAllocation(const AllocationReport& allocation) override {
    manager_->Progress(id_, [&](v1::Job& job) { *job.mutable_allocation() = ToProto(allocation); });
  }

  void OnShardCommitted(const ResumePoint& point) override { manager_->Checkpoint(id_, point); }

  // Called from the job's thread and from workers.
  absl::Status CheckCancelled() const override {
    if (preempt_->load()) return absl::CancelledError("job preempted: the server is shutting down");
    return manager_->CheckRunnable(id_);
  }

  absl::Status BeforeCommit() override { return manager_->MayCommit(*this); }

  void Progress(const JobProgress& p) override {
    const auto now = std::chrono::steady_clock::now();
    if (p.phase != phase_ || p.done < phase_done_) {
      phase_ = p.phase;
      phase_started_ = now;
    }
    phase_done_ = p.done;
    const double in_phase = std::chrono::duration<double>(now - phase_started_).count();
    manager_->Progress(id_, [&](v1::Job& job) {
      job.set_phase(ToProto(p.phase));
      job.set_phase_done(p.done);
      job.set_phase_total(p.total);
      if (!p.item.empty()) job.set_current_layer(p.item);
      // The calibrating phase is the pace-setter of a calibrated job: extrapolate from its blocks so far.
      if (p.phase == JobPhase::kCalibrating && p.done > 0 && p.total >= p.done) {
        const double remaining = in_phase * static_cast<double>(p.total - p.done) / static_cast<double>(p.done);
        *job.mutable_eta() = TimeUtil::NanosecondsToDuration(static_cast<int64_t>(remaining * 1e9));
      }
    });
  }

 private:
  const std::string id_;
  JobManager* const manager_;
  Metrics* const metrics_;
  const std::atomic<bool>* const preempt_;
  const std::chrono::steady_clock::time_point started_;
  uint64_t bytes_total_ = 0, last_read_ = 0, last_written_ = 0;
  JobPhase phase_ = JobPhase::kPlanning;
  int64_t phase_done_ = 0;
  std::chrono::steady_clock::time_point phase_started_ = std::chrono::steady_clock::now();
};

}  // namespace

void JobExecutor::Run(const std::string& id) {
  const auto started = std::chrono::steady_clock::now();
  absl::StatusOr<JobRecord> record = manager_->Start(id);
  if (!record.ok()) return;  // cancelled before it started, or gone
  absl::StatusOr<JobReport> report;
  try {
    absl::StatusOr<QuantizeJobSpec> spec = JobSpecFromRequest(record->job().request());
    if (!spec.ok()) {
      report = spec.status();
    } else {
      spec->lock_owner = record->job().name();  // the lock taken at submit, held across attempts
      // Where an interrupted attempt got to; the job checks the shards are still there before using it.
      spec->resume = ResumePointOf(*record);
      ProgressObserver observer(id, manager_, metrics_, &preempt_);
      JobOptions job_options = options_.job;
      job_options.pool = pool_;
      report = RunQuantizeJob(*spec, store_, store_, job_options, &observer);
    }
  } catch (const std::exception& e) {
    // core/ does not throw, but an allocation can; the job fails, the server lives on.
    report = absl::InternalError(absl::StrCat("job aborted: ", e.what()));
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  manager_->Finish(id, report, preempt_, seconds);
}

}  // namespace lowbit::server

// JobContext: what every long loop of a job asks and tells — whether to stop (cancel, deadline,
// preemption) and how far it has come — so a job can be watched and stopped at any moment.
//
// Loops call CheckCancelled() at least once per decoder block, per chunk of rows of a batched pass, per
// GPTQ lazy batch, per k-means/EM iteration and per AWQ grid point, and return its status when it is not
// OK. CheckCancelled() must be thread-safe (workers call it); Progress() is called from the job's thread.
// The default context never stops and reports nowhere.
#ifndef LOWBIT_CORE_UTIL_JOB_CONTEXT_H_
#define LOWBIT_CORE_UTIL_JOB_CONTEXT_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace lowbit {

// The phases of a job, in the order they run.
enum class JobPhase { kPlanning, kMeasuring, kCalibrating, kQuantizing, kWriting, kEvaluating };

struct JobProgress {
  JobPhase phase = JobPhase::kPlanning;
  int64_t done = 0;   ///< units of this phase finished (blocks, tensors, ...)
  int64_t total = 0;  ///< units of this phase in all; 0 when not known
  std::string item;   ///< what is being worked on, e.g. "model.layers.3.self_attn.q_proj.weight"
};

class JobContext {
 public:
  virtual ~JobContext() = default;
  // OK to go on; CANCELLED (cancelled or preempted) or DEADLINE_EXCEEDED to stop.
  virtual absl::Status CheckCancelled() const { return absl::OkStatus(); }
  virtual void Progress(const JobProgress& progress) {}
};

// CheckCancelled() of a context that may be null.
inline absl::Status CheckCancelled(const JobContext* context) {
  return context == nullptr ? absl::OkStatus() : context->CheckCancelled();
}

}  // namespace lowbit

#endif  // LOWBIT_CORE_UTIL_JOB_CONTEXT_H_

// The resource plan of a job: an upper bound of its peak working memory, computed from the checkpoint's
// headers and the job spec alone, before anything is loaded (TensorFlow Serving's Loader contract: the
// estimate is an upper bound, known before loading). lowbitd refuses at submit a job whose estimate
// exceeds its memory limit and admits queued jobs by their estimates; the local CLI applies the same plan.
#ifndef LOWBIT_CORE_JOB_JOB_PLAN_H_
#define LOWBIT_CORE_JOB_JOB_PLAN_H_

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "core/checkpoint/checkpoint_reader.h"
#include "core/job/quantize_job.h"

namespace lowbit {

struct ResourceEstimate {
  uint64_t streaming = 0;     ///< tensors in flight in the streaming pass and the workers' scratch
  uint64_t block_weights = 0; ///< one decoder block in float32 and as read, and the next one as read (prefetched)
  uint64_t activations = 0;   ///< calibration hidden states over all windows, one row chunk's scratch, the embeddings read
  uint64_t statistics = 0;    ///< the largest linear group's input statistics and the method's scratch on it
  uint64_t evaluation = 0;    ///< two models' hidden states, blocks and lm_heads over the evaluation windows
  uint64_t total = 0;         ///< the bound: streaming + the larger of the calibration and evaluation phases
  std::string activation_storage = "float32";  ///< how calibration holds its hidden states
  int64_t calibration_rows = 0;  ///< tokens of all calibration windows (an upper bound)

  nlohmann::json ToJson() const;
  // "12.3 GiB (streaming 1.2 GiB, block 2.4 GiB, ...)".
  std::string Summary() const;
};

// `tensors` and `descriptor` as a CheckpointReader lists them. UNIMPLEMENTED if the job needs a forward
// pass (calibration or evaluation) and the architecture is not in the table; INVALID_ARGUMENT if its
// config does not describe a decoder.
absl::StatusOr<ResourceEstimate> EstimateResources(const ModelDescriptor& descriptor,
                                                   const std::vector<TensorInfo>& tensors, const QuantizeJobSpec& spec,
                                                   const JobOptions& options);

// RESOURCE_EXHAUSTED stating the estimate and the limit if the estimate exceeds `limit_bytes` (0: no limit).
absl::Status CheckMemoryLimit(const ResourceEstimate& estimate, uint64_t limit_bytes);

// The memory a process here may use: the cgroup limit when there is one (containers), else 80% of RAM.
uint64_t DefaultMemoryLimit();

// "1.5 GiB".
std::string FormatBytes(uint64_t bytes);
// A byte count as Kubernetes writes quantities: "25769803776", "24Gi", "24GiB", "20G" (10^9), "512Mi", "0".
absl::StatusOr<uint64_t> ParseByteSize(absl::string_view text);

}  // namespace lowbit

#endif  // LOWBIT_CORE_JOB_JOB_PLAN_H_

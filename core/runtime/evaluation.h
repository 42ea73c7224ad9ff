// Perplexity of a model and its mean KL divergence to a reference model over evaluation windows, as
// quantization papers report them, computed block by block: the model and the reference (each read from
// its own checkpoint) are advanced through one decoder block at a time over all windows, and the final
// norm and lm_head are applied in row chunks with a log-sum-exp, so neither a whole model nor a
// tokens x vocabulary matrix of logits is ever held.
#ifndef LOWBIT_CORE_RUNTIME_EVALUATION_H_
#define LOWBIT_CORE_RUNTIME_EVALUATION_H_

#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "core/checkpoint/checkpoint_reader.h"
#include "core/runtime/decoder_block.h"
#include "core/runtime/token_windows.h"
#include "core/util/job_context.h"

namespace lowbit {

struct EvalResult {
  double perplexity = 0;
  double reference_perplexity = 0;  ///< 0 without a reference
  double kl_divergence = 0;         ///< mean KL(reference || model) per predicted token, nats
  int64_t tokens = 0;               ///< predicted tokens
};

// The model's log-probabilities of the next token at one predicted position (vocabulary values).
using LogProbsSink = std::function<absl::Status(const std::vector<double>& log_probs)>;

// `reference` may be null; otherwise it must have the model's architecture and shapes. `context` (may be
// null) is told each block and checked per block and per row chunk. `each_position` (may be null) gets
// every predicted position's distribution, window by window, in order.
absl::StatusOr<EvalResult> Evaluate(const CheckpointReader& model, const CheckpointReader* reference,
                                    const EvaluationWindows& windows, JobContext* context = nullptr,
                                    int64_t rows_per_chunk = kDefaultRowsPerChunk,
                                    const LogProbsSink& each_position = nullptr);

}  // namespace lowbit

#endif  // LOWBIT_CORE_RUNTIME_EVALUATION_H_

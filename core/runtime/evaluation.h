// Perplexity of a model and its mean KL divergence to a reference model on a text, over
// non-overlapping windows (each starting with BOS), as quantization papers report them.
#ifndef LOWBIT_CORE_RUNTIME_EVALUATION_H_
#define LOWBIT_CORE_RUNTIME_EVALUATION_H_

#include "absl/status/statusor.h"
#include "core/runtime/llama_model.h"
#include "core/runtime/tokenizer.h"
#include "core/storage/object_store.h"

namespace lowbit {

struct EvalOptions {
  int windows = 16;   ///< non-overlapping windows from the start of the text
  int seqlen = 128;   ///< tokens per window, BOS included
};

struct EvalResult {
  double perplexity = 0;
  double reference_perplexity = 0;  ///< 0 without a reference
  double kl_divergence = 0;         ///< mean KL(reference || model) per predicted token, nats
  int64_t tokens = 0;               ///< predicted tokens
};

// `reference` may be null. INVALID_ARGUMENT if the text has fewer tokens than one window.
absl::StatusOr<EvalResult> Evaluate(LlamaModel& model, LlamaModel* reference, ObjectStore* store,
                                    absl::string_view text_uri, const Llama2cTokenizer& tokenizer,
                                    const EvalOptions& options);

}  // namespace lowbit

#endif  // LOWBIT_CORE_RUNTIME_EVALUATION_H_

// llama2.c checkpoints (legacy `.bin`: seven int32 header fields, then float32 weights).
//
// The reader presents the model exactly as Hugging Face's conversion would: HF Llama tensor names, and
// q/k rows permuted from Meta's interleaved rotary layout to HF's rotate-half layout. A negative
// vocab_size in the header means the file carries its own classifier; otherwise lm_head is tied.
#ifndef LOWBIT_CORE_CHECKPOINT_LLAMA2C_H_
#define LOWBIT_CORE_CHECKPOINT_LLAMA2C_H_

#include <memory>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "core/checkpoint/checkpoint_reader.h"

namespace lowbit {

struct Llama2cHeader {
  int32_t dim = 0;
  int32_t hidden_dim = 0;
  int32_t n_layers = 0;
  int32_t n_heads = 0;
  int32_t n_kv_heads = 0;
  int32_t vocab_size = 0;  ///< absolute value; see shared_classifier
  int32_t seq_len = 0;
  bool shared_classifier = true;
};

absl::StatusOr<std::unique_ptr<CheckpointReader>> OpenLlama2c(ObjectStore* store, absl::string_view uri);

// Reorders the rows of a [n_heads * head_dim, cols] projection from Meta's rotary layout (pairs
// (2i, 2i+1) rotate together) to HF's (i and i + head_dim/2 rotate together), as HF's converter does.
void PermuteRotaryRowsToHf(int64_t n_heads, int64_t head_dim, int64_t cols, size_t elem_size, uint8_t* data);

}  // namespace lowbit

#endif  // LOWBIT_CORE_CHECKPOINT_LLAMA2C_H_

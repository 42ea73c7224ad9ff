// What a GGUF output needs beyond the tensors: llama.cpp's metadata for the architecture (hyper-parameters
// as convert_hf_to_gguf.py writes them) and the tokenizer, and the row order of q/k for llama.cpp's rope.
#ifndef LOWBIT_CORE_JOB_GGUF_OUTPUT_H_
#define LOWBIT_CORE_JOB_GGUF_OUTPUT_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/checkpoint/architecture.h"
#include "core/checkpoint/gguf.h"
#include "core/runtime/decoder_block.h"
#include "core/runtime/tokenizer.h"

namespace lowbit {

// general.*, <arch>.* and tokenizer.ggml.* for a model of `arch` and geometry `g` whose linear layers are
// mostly `type`. The tokenizer must be llama2.c's (written as tokenizer.ggml.model "llama"); UNIMPLEMENTED
// for others, naming them.
absl::StatusOr<GgufMetadata> GgufModelMetadata(const Architecture& arch, const BlockGeometry& g, const GgmlTypeTraits& type,
                                               const std::string& name, const Tokenizer* tokenizer);

// The order in which a tensor's rows are written: llama.cpp's "llama" rope rotates adjacent dimension
// pairs where HF rotates halves, so convert_hf_to_gguf.py permutes q_proj and k_proj rows per head
// (LlamaModel.permute); empty (rows as they are) for everything else.
std::vector<int64_t> GgufRowOrder(const Architecture& arch, const BlockGeometry& g, const std::string& hf_name);

}  // namespace lowbit

#endif  // LOWBIT_CORE_JOB_GGUF_OUTPUT_H_

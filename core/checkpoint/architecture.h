// The architecture table: per Hugging Face architecture name, the layout of its decoder block as data —
// which tensors a block holds, its linear layers in true-sequential groups with the input each group reads,
// and what AWQ folds each group's scales into — in the manner of AutoGPTQ's `inside_layer_modules`,
// AutoAWQ's `prev_op` and llama.cpp's `llama-arch.cpp`. The decoder block, the block-wise calibrator and
// evaluation read it; a checkpoint whose architecture is not here is never run through a forward pass.
#ifndef LOWBIT_CORE_CHECKPOINT_ARCHITECTURE_H_
#define LOWBIT_CORE_CHECKPOINT_ARCHITECTURE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/checkpoint/model_descriptor.h"

namespace lowbit {

// The four places a decoder block's linear layers read their input.
enum class LinearInput {
  kQkv = 0,     ///< q/k/v_proj: the attention RMSNorm's output
  kO = 1,       ///< o_proj: the attention output
  kGateUp = 2,  ///< gate/up_proj: the MLP RMSNorm's output
  kDown = 3,    ///< down_proj: SiLU(gate) * up
};

// Linear layers that read the same input and can be quantized together (in parallel).
struct LinearGroup {
  LinearInput input;
  std::vector<std::string> linears;  ///< weight names inside the block, e.g. "self_attn.q_proj.weight"
  std::string awq_prev_op;           ///< the tensor inside the block whose rows/values absorb AWQ's 1/s
};

struct Architecture {
  std::string name;                 ///< HF `architectures[0]`, e.g. "LlamaForCausalLM"
  std::string block_prefix;         ///< block N's tensors are named block_prefix + N + "." + ...
  std::string attn_norm, ffn_norm;  ///< RMSNorm weights inside the block
  std::vector<LinearGroup> groups;  ///< true-sequential order: q/k/v, o, gate/up, down
  std::string q_norm, k_norm;       ///< per-head RMSNorm weights of queries and keys (Qwen3); empty if none
  std::vector<std::string> required_extras;  ///< biases and norms every block of this architecture has
  std::string embed, final_norm, lm_head;  ///< top-level tensors; lm_head absent = tied to embed
  std::string gguf_arch;            ///< general.architecture in GGUF ("llama", "qwen2", "qwen3")
  bool gguf_permute_qk = false;     ///< llama.cpp's "llama" rope pairs adjacent dims: q/k rows reordered

  // "model.layers.3." for block 3.
  std::string BlockPrefix(int block) const;
};

// The GGUF name llama.cpp's converter (convert_hf_to_gguf.py, gguf-py's tensor_mapping.py) gives a tensor
// of this architecture ("model.layers.3.mlp.down_proj.weight" -> "blk.3.ffn_down.weight"); "" if none.
std::string GgufTensorName(const Architecture& arch, absl::string_view hf_name);
// The other way: the Hugging Face name of a GGUF tensor; "" if none.
std::string HfTensorName(const Architecture& arch, absl::string_view gguf_name);

// The order in which a tensor's rows are written to GGUF: llama.cpp's "llama" rope rotates adjacent
// dimension pairs where HF rotates halves, so convert_hf_to_gguf.py permutes q_proj and k_proj rows per head
// (LlamaModel.permute); file row i is HF row order[i]. Empty (rows as they are) for everything else.
std::vector<int64_t> GgufRowOrder(const Architecture& arch, int64_t heads, int64_t kv_heads, int64_t head_dim,
                                  absl::string_view hf_name);

// The entry for `name`, or null.
const Architecture* FindArchitecture(absl::string_view name);
// The first entry written to GGUF as `gguf_arch` (general.architecture), or null.
const Architecture* FindArchitectureByGguf(absl::string_view gguf_arch);
// The checkpoint's entry; UNIMPLEMENTED naming the architecture and the supported ones if absent.
absl::StatusOr<const Architecture*> ArchitectureOf(const ModelDescriptor& descriptor);

}  // namespace lowbit

#endif  // LOWBIT_CORE_CHECKPOINT_ARCHITECTURE_H_

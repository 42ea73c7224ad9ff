// What a GGUF output needs beyond the tensors: llama.cpp's metadata for the architecture (hyper-parameters
// as convert_hf_to_gguf.py writes them) and the tokenizer, and the row order of q/k for llama.cpp's rope.
#ifndef LOWBIT_CORE_JOB_GGUF_OUTPUT_H_
#define LOWBIT_CORE_JOB_GGUF_OUTPUT_H_

#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "core/checkpoint/architecture.h"
#include "core/checkpoint/gguf.h"
#include "core/quant/quantized_tensor.h"
#include "core/runtime/decoder_block.h"
#include "core/runtime/tokenizer.h"

namespace lowbit {

// What a GGUF file's linear layers become: one ggml type, or one of llama.cpp's mixtures (llama_ftype
// names from llama.h; which tensors get more bits follows llama-quant.cpp's llama_tensor_get_type):
// Q4_K_M and Q5_K_M put attn_v and ffn_down in Q6_K in the first and last eighth of the blocks and every
// third block between them (use_more_bits), and output.weight (when quantized) in Q6_K.
struct GgufFileType {
  const char* name;  ///< "Q4_K_M", or a ggml type's name
  GgmlType base;     ///< most linear layers
  GgmlType more;     ///< the tensors a mixture gives more bits (== base: none)
  uint32_t ftype;    ///< general.file_type (llama_ftype)
};
const std::vector<GgufFileType>& GgufFileTypes();
const GgufFileType* FindGgufFileType(absl::string_view name);  ///< case-insensitive; null if unknown

// The ggml type of the tensor llama.cpp names `gguf_name`, in a file of `file_type` with `layers` blocks.
GgmlType GgufTensorType(const GgufFileType& file_type, const std::string& gguf_name, int64_t layers);

// llama.cpp's fallback (llama-quant.cpp) for rows of `cols` values that `type`'s blocks do not divide:
// the K-quants and IQ4_XS go to a 32-value type (Q2_K, Q3_K, IQ4_XS → IQ4_NL, Q4_K → Q5_0, Q5_K → Q5_1,
// Q6_K → Q8_0), and a row no quantized type divides to F16. `type` itself when it fits.
GgmlType GgufFallbackType(GgmlType type, int64_t cols);

// The source's tokenizer as a GGUF file carries it: the loaded tokenizer, and for a tokenizer.json its
// file and tokenizer_config.json (vocabulary, merges, special tokens and chat template are copied).
struct GgufTokenizerSource {
  const Tokenizer* tokenizer = nullptr;
  nlohmann::json tokenizer_json;    ///< null unless the tokenizer is a tokenizer.json
  nlohmann::json tokenizer_config;  ///< tokenizer_config.json beside it, or null
  nlohmann::json model_config;      ///< config.json (special-token ids it names)
};

// general.*, <arch>.* (hyper-parameters and rope scaling) and tokenizer.ggml.* for a model of `arch` and
// geometry `g` in a file of `file_type`. The tokenizer: llama2.c's as tokenizer.ggml.model "llama"; a
// byte-level BPE tokenizer.json as "gpt2" with its merges and the pre-tokenizer llama.cpp names for its
// split pattern. UNIMPLEMENTED for other tokenizers and rope scalings llama.cpp does not run, naming them.
absl::StatusOr<GgufMetadata> GgufModelMetadata(const Architecture& arch, const BlockGeometry& g, const GgufFileType& file_type,
                                               const std::string& name, const GgufTokenizerSource& tokenizer);

// Tensors llama.cpp wants beyond the checkpoint's: rope_freqs.weight (F32, head_dim / 2 divisors of the
// rotary frequencies) for llama3's rope scaling, as convert_hf_to_gguf.py's generate_extra_tensors writes it.
std::vector<std::pair<GgufTensorSpec, std::string>> GgufExtraTensors(const BlockGeometry& g);

// llama.cpp's importance matrix (imatrix.gguf, as llama-imatrix writes it and llama-quantize --imatrix
// reads it): per linear layer, by its GGUF name, "<name>.in_sum2" (Σ x² per input column, F32) and
// "<name>.counts" (the tokens summed), with general.type "imatrix" and the calibration text, windows and
// window length.
struct ImatrixEntry {
  std::string gguf_name;
  std::vector<float> sum2;
  int64_t tokens = 0;
};
absl::Status WriteImatrix(ObjectWriter* out, const std::vector<ImatrixEntry>& entries, const std::string& dataset,
                          int64_t chunks, int64_t chunk_size);

// A GgmlTensor's rows in `row_order` (empty: as they are), as the file stores them.
std::string GgmlRowsInOrder(const GgmlTensor& t, const std::vector<int64_t>& row_order);


}  // namespace lowbit

#endif  // LOWBIT_CORE_JOB_GGUF_OUTPUT_H_

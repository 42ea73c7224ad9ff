// The GPTQ checkpoint layout (AutoGPTQ / GPTQModel / transformers / vLLM), for one linear layer:
//
//   <prefix>.qweight  I32 [padded_in * bits / 32, out]  codes packed along the input dim, LSB first;
//                                                      3-bit codes straddle int32 words (a continuous
//                                                      little-endian bit stream per output column)
//   <prefix>.qzeros   I32 [groups, padded_out * bits / 32]  zeros packed along the output dim: as
//                                                      (zero − 1) in the "gptq" (v1) checkpoint format,
//                                                      loaders adding 1 back; as they are in "gptq_v2",
//                                                      the form asymmetric grids need (a zero of 0 has
//                                                      no v1 form: GPTQModel's FORMAT.GPTQ_V2)
//   <prefix>.scales   F16 [groups, out]
//   <prefix>.g_idx    I32 [in]                         group of each input column
//
// padded_in/padded_out round up to a multiple of 32 with zero codes so that lowbit can read back any
// layer; jobs never write padded layers (GptqShapeProblem keeps them in FP16). The packer never quantizes.
#ifndef LOWBIT_CORE_PACK_GPTQ_H_
#define LOWBIT_CORE_PACK_GPTQ_H_

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "core/checkpoint/checkpoint_reader.h"
#include "core/checkpoint/safetensors.h"
#include "core/quant/quantized_tensor.h"

namespace lowbit {

// Bit widths the GPTQ layout defines.
bool GptqSupportsBits(int bits);

// How qzeros store the zero points: "gptq" (v1: zero − 1) or "gptq_v2" (the zeros).
enum class GptqZeros { kV1, kV2 };
// The checkpoint format a grid is written in: v1 for symmetric grids (what every engine loads, and the
// only one vLLM's Marlin kernels take), v2 for asymmetric ones.
GptqZeros GptqZerosFor(bool symmetric);
const char* GptqCheckpointFormat(GptqZeros zeros);
// The format a config names (`checkpoint_format`, or GPTQModel's `format`); v1 when it names none.
GptqZeros GptqZerosOf(const nlohmann::json& quantization_config);

// Why engines cannot load a [rows, cols] layer in the GPTQ layout, or "" if they can: vLLM's
// quantization/gptq.py (GPTQLinearMethod.create_weights) refuses an input size not divisible by the
// group size and an output size not divisible by the pack factor; the 3-bit packing and the ExLlama and
// Marlin kernels want both sizes in multiples of 32. `group_size` -1 is per output channel.
std::string GptqShapeProblem(int64_t rows, int64_t cols, int64_t group_size);

// The four tensors' specs for a [rows, cols] layer, known before it is quantized (the header of the
// output file is written first). `prefix` is the layer name without ".weight".
std::vector<TensorSpec> GptqTensorSpecs(const std::string& prefix, int64_t rows, int64_t cols, int bits,
                                        int64_t group_size);

// Packs `q` into the four tensors, in the order of GptqTensorSpecs.
absl::StatusOr<std::vector<Tensor>> PackGptq(const std::string& prefix, const QuantizedTensor& q, GptqZeros zeros);

// The inverse of PackGptq: `rows`/`cols` are the layer's true shape (the packed tensors are padded).
absl::StatusOr<QuantizedTensor> UnpackGptq(const Tensor& qweight, const Tensor& qzeros, const Tensor& scales,
                                           const Tensor& g_idx, int bits, int64_t rows, int64_t cols, GptqZeros zeros);

// The code width of a layer `cols` wide whose qweight has `qweight_rows` rows (padded_in * bits / 32).
int GptqCodeBits(int64_t qweight_rows, int64_t cols);

// The fields of quantize_config.json (also embedded as `quantization_config` in config.json) that
// GPTQModel (quantization/config.py), transformers/optimum (GPTQConfig) and vLLM (gptq.py,
// gptq_marlin.py) read.
struct GptqConfigFields {
  int bits = 4;
  int64_t group_size = 128;
  bool symmetric = true;
  bool desc_act = false;
  bool static_groups = false;
  double damp_percent = 0.01;
  bool lm_head = false;              ///< lm_head is quantized (vLLM and GPTQModel read it)
  nlohmann::json dynamic;            ///< GPTQModel's per-module rules, {"+:regex": {..}, "-:regex": {}}; null: none
  nlohmann::json modules_in_block;   ///< optimum's modules_in_block_to_quantize; null: every linear
};
nlohmann::json GptqQuantizeConfig(const GptqConfigFields& fields);

}  // namespace lowbit

#endif  // LOWBIT_CORE_PACK_GPTQ_H_

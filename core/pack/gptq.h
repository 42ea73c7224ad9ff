// The GPTQ checkpoint layout (AutoGPTQ / GPTQModel / transformers / vLLM), for one linear layer:
//
//   <prefix>.qweight  I32 [padded_in * bits / 32, out]  codes packed along the input dim, LSB first;
//                                                      3-bit codes straddle int32 words (a continuous
//                                                      little-endian bit stream per output column)
//   <prefix>.qzeros   I32 [groups, padded_out * bits / 32]  (zero − 1) packed along the output dim:
//                                                      the "v1" convention; loaders add 1 back
//   <prefix>.scales   F16 [groups, out]
//   <prefix>.g_idx    I32 [in]                         group of each input column
//
// padded_in/padded_out round up to a multiple of 32 with zero codes: real models are multiples of 128,
// and the padding keeps ragged layers (stories260K's 172) representable. The packer never quantizes.
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

// The four tensors' specs for a [rows, cols] layer, known before it is quantized (the header of the
// output file is written first). `prefix` is the layer name without ".weight".
std::vector<TensorSpec> GptqTensorSpecs(const std::string& prefix, int64_t rows, int64_t cols, int bits,
                                        int64_t group_size);

// Packs `q` into the four tensors, in the order of GptqTensorSpecs.
absl::StatusOr<std::vector<Tensor>> PackGptq(const std::string& prefix, const QuantizedTensor& q);

// The inverse of PackGptq: `rows`/`cols` are the layer's true shape (the packed tensors are padded).
absl::StatusOr<QuantizedTensor> UnpackGptq(const Tensor& qweight, const Tensor& qzeros, const Tensor& scales,
                                           const Tensor& g_idx, int bits, int64_t rows, int64_t cols);

// The code width of a layer `cols` wide whose qweight has `qweight_rows` rows (padded_in * bits / 32).
int GptqCodeBits(int64_t qweight_rows, int64_t cols);

// quantize_config.json (also embedded as `quantization_config` in config.json).
nlohmann::json GptqQuantizeConfig(int bits, int64_t group_size, bool symmetric);

}  // namespace lowbit

#endif  // LOWBIT_CORE_PACK_GPTQ_H_

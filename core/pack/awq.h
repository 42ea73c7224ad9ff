// The AWQ GEMM checkpoint layout (AutoAWQ's WQLinear_GEMM; transformers and vLLM load it with
// quant_method "awq", version "gemm"), 4-bit, for one linear layer:
//
//   <prefix>.qweight  I32 [in, padded_out / 8]      eight codes per word along the output dim; nibble i
//                                                   (bits 4i..4i+3) of word j holds output 8j + kAwqOrder[i]
//   <prefix>.qzeros   I32 [groups, padded_out / 8]  the zero points themselves (no GPTQ-style − 1), same packing
//   <prefix>.scales   F16 [groups, out]
//
// padded_out rounds up to a multiple of 8 with zero codes so that lowbit reads any layer back; jobs never
// write padded layers (AwqShapeProblem keeps them in FP16). Groups are sequential (no act-order permutation).
#ifndef LOWBIT_CORE_PACK_AWQ_H_
#define LOWBIT_CORE_PACK_AWQ_H_

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "core/checkpoint/safetensors.h"
#include "core/quant/quantized_tensor.h"

namespace lowbit {

// Which output column each nibble of a packed word holds: AutoAWQ's order_map.
inline constexpr int kAwqOrder[8] = {0, 2, 4, 6, 1, 3, 5, 7};

// Why engines cannot load a [rows, cols] layer in the AWQ layout, or "" if they can: vLLM's
// quantization/awq.py (AWQLinearMethod.create_weights) refuses an input size not divisible by the group
// size and an output size not divisible by the pack factor 8; AutoAWQ's GEMM kernels and transformers'
// WQLinear take the same shapes (real models are multiples of 128).
std::string AwqShapeProblem(int64_t rows, int64_t cols, int64_t group_size);

std::vector<TensorSpec> AwqTensorSpecs(const std::string& prefix, int64_t rows, int64_t cols, int64_t group_size);

// INVALID_ARGUMENT unless `q` is 4-bit with sequential groups.
absl::StatusOr<std::vector<Tensor>> PackAwq(const std::string& prefix, const QuantizedTensor& q);

// The inverse of PackAwq; `group_size` is the config's (groups are not recorded per tensor).
absl::StatusOr<QuantizedTensor> UnpackAwq(const Tensor& qweight, const Tensor& qzeros, const Tensor& scales,
                                          int64_t group_size);

// quantize_config.json / `quantization_config` for the AWQ layout; `not_converted` are the decoder-block
// linear modules kept in FP16 (transformers' AwqConfig and vLLM's awq.py skip modules whose name contains
// one of modules_to_not_convert).
nlohmann::json AwqQuantizeConfig(int64_t group_size, bool zero_point, const std::vector<std::string>& not_converted);

}  // namespace lowbit

#endif  // LOWBIT_CORE_PACK_AWQ_H_

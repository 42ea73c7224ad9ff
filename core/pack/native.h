// The lowbit native layout for every method's results: plain safetensors, specified in
// docs/native-format.md. Per linear layer `<prefix>` (the weight name without ".weight"):
//
//   grid scheme (RTN, INT8, GPTQ, AWQ codes of any shape, for lowbit's own readers; engines get GPTQ/AWQ):
//     <prefix>.codes           U8  [rows, ceil(cols * bits / 8)]     each row a little-endian bit stream
//     <prefix>.scales          F16 [rows, groups]
//     <prefix>.zeros           U8  [rows, groups]                    w = scale * (code − zero)
//     <prefix>.g_idx           I32 [cols]                            act-order only: the group of each column
//   codebook scheme (LUT, VQ):
//     <prefix>.codes           U8  [rows, ceil(cols / dim * index_bits / 8)]  each row a little-endian bit stream
//                                                                         of index_bits-wide codes, LSB first
//                                  ([rows / dim, ceil(cols * index_bits / 8)] for vectors along the output axis)
//     <prefix>.codebook        F16 or I8 [tiles, 2^index_bits, dim]       row tiles outer, column tiles inner
//     <prefix>.codebook_scale  F16 [tiles]                               I8 codebooks only: value = int8 * scale
//     <prefix>.row_scale       F16 [rows]                                optional per-output-channel scale
//   onebit scheme:
//     <prefix>.sign            U8  [rows, ceil(cols / 8)]                bit c % 8 of byte c / 8: 1 = +1, 0 = −1
//     <prefix>.a               F16 [rows]
//     <prefix>.b               F16 [cols]
//
// Each layer's parameters sit in the file's __metadata__ under "lowbit.layout.<prefix>" as a JSON object
// (NativeLayout), so the file is self-describing; the packer never quantizes.
#ifndef LOWBIT_CORE_PACK_NATIVE_H_
#define LOWBIT_CORE_PACK_NATIVE_H_

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "core/checkpoint/safetensors.h"
#include "core/quant/quantized_tensor.h"
#include "core/quant/quantizer.h"

namespace lowbit {

inline constexpr char kNativeLayoutKeyPrefix[] = "lowbit.layout.";

struct NativeLayout {
  enum class Scheme { kCodebook, kOneBit, kGrid };
  Scheme scheme = Scheme::kCodebook;
  int64_t rows = 0, cols = 0;
  // kCodebook only:
  int dim = 1;
  bool along_rows = false;  ///< vectors of `dim` output channels ("vector_axis": "output")
  int index_bits = 4;
  int64_t group_rows = 0, group_cols = 0;
  bool int8_codebook = false;
  bool row_scale = false;
  // kGrid only (index_bits holds the code width):
  int64_t group_size = 0;  ///< columns per group as stored (a layer narrower than the group: its width)
  bool g_idx = false;

  nlohmann::json ToJson() const;
  // INVALID_ARGUMENT for a malformed or inconsistent layout.
  static absl::StatusOr<NativeLayout> FromJson(absl::string_view text);
};

// The layout a config gives a [rows, cols] layer (known before it is quantized).
NativeLayout NativeLayoutFor(int64_t rows, int64_t cols, const QuantConfig& config);
std::vector<TensorSpec> NativeTensorSpecs(const std::string& prefix, const NativeLayout& layout);

// Packs any quantized layer in the order of NativeTensorSpecs.
absl::StatusOr<std::vector<Tensor>> PackNative(const std::string& prefix, const QuantizedLayer& layer);

// The inverse of PackNative; `parts` by full tensor name. INVALID_ARGUMENT on missing or misshapen parts.
absl::StatusOr<QuantizedLayer> UnpackNative(const std::string& prefix, const NativeLayout& layout,
                                            const std::map<std::string, Tensor>& parts);

// quantization_config for config.json.
nlohmann::json NativeQuantizeConfig(const QuantConfig& config);

}  // namespace lowbit

#endif  // LOWBIT_CORE_PACK_NATIVE_H_

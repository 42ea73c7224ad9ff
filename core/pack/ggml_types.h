// ggml's tensor types as one table (ggml's `type_traits[]`): block size, bytes per block, bits per weight,
// and for the quantized types the grid a quantizer must target, so that lowbit's own codes are written
// into llama.cpp's blocks as they are. Block layouts from ggml-common.h; dequantization from ggml-quants.c
// (dequantize_row_q4_0 and friends), written here.
//
// The "legacy" block types are lowbit's uniform grids with 32-column groups: Q4_0/Q5_0/Q8_0 are the
// symmetric 4/5/8-bit grids (x = d·(q − 2^(b−1))), Q4_1/Q5_1 the zero-point ones (x = d·q + m, with
// m = −d·zero rounded to FP16). Values are stored row by row, blocks along a row (ggml's ne[0]).
#ifndef LOWBIT_CORE_PACK_GGML_TYPES_H_
#define LOWBIT_CORE_PACK_GGML_TYPES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/quant/quantized_tensor.h"

namespace lowbit {

// ggml_type values (ggml.h).
enum class GgmlType : uint32_t { kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ5_0 = 6, kQ5_1 = 7, kQ8_0 = 8, kBF16 = 30 };

struct GgmlTypeTraits {
  GgmlType type;
  const char* name;      ///< as llama.cpp names it ("Q4_0")
  int64_t block_size;    ///< values per block (1 for the float types)
  size_t block_bytes;    ///< bytes per block
  int bits;              ///< code width of a quantized type; 0 for float types
  bool symmetric;        ///< quantized: the grid's zero is 2^(bits-1) (no stored minimum)
  bool quantized() const { return bits > 0; }
  double bits_per_weight() const { return 8.0 * static_cast<double>(block_bytes) / static_cast<double>(block_size); }
  // Bytes of a row of `n` values; `n` must be a multiple of block_size.
  size_t RowBytes(int64_t n) const { return static_cast<size_t>(n / block_size) * block_bytes; }
};

// Every type of the table, and lookups by name (case-insensitive) and by value.
const std::vector<GgmlTypeTraits>& GgmlTypes();
const GgmlTypeTraits* FindGgmlType(absl::string_view name);
const GgmlTypeTraits& TraitsOf(GgmlType type);

// `q`'s codes in `t`'s blocks (q: t.bits wide, groups of t.block_size columns, zero 2^(bits-1) for the
// symmetric types), rows in the order `row_order` gives (empty: 0..rows-1). INVALID_ARGUMENT if q does
// not sit on the type's grid.
absl::StatusOr<std::string> PackGgmlRows(const QuantizedTensor& q, const GgmlTypeTraits& t,
                                         const std::vector<int64_t>& row_order);
// Float rows (rows x cols, row-major) as F32, F16 or BF16, rows in `row_order` (empty: as they are).
std::string EncodeFloatRows(const float* values, int64_t rows, int64_t cols, GgmlType type,
                            const std::vector<int64_t>& row_order);
// One row of `n` values of type `type` back to float.
void DequantizeGgmlRow(GgmlType type, const char* data, int64_t n, float* out);

}  // namespace lowbit

#endif  // LOWBIT_CORE_PACK_GGML_TYPES_H_

// ggml's tensor types as one table (ggml's `type_traits[]`): block size, bytes per block, bits per weight,
// and for the quantized types the grid a quantizer must target, so that lowbit's own codes are written
// into llama.cpp's blocks as they are. Block layouts from ggml-common.h; the values they decode to from
// ggml-quants.c (dequantize_row_q4_0 ... dequantize_row_iq4_xs), written here.
//
// Every quantized type is one grid: a block of `block_size` values is cut into sub-blocks of `sub_block`
// values, and value j of the block is
//
//   x_j = d·scale[s]·level(q_j) − dmin·min[s],   s = j / sub_block,
//
// with d and dmin FP16, scale[] and min[] small integers (the K-quants' 4-, 6- or 8-bit sub-block scales;
// 1 for the types with one scale per block) and level() either q − zero (uniform) or a table (IQ4's
// non-uniform levels). Q4_1/Q5_1's stored minimum m is dmin = −m with min[] = 1. A quantizer chooses d,
// dmin, scale[], min[] and q_j (GgmlBlock); PackGgmlBlock lays them out as ggml does.
#ifndef LOWBIT_CORE_QUANT_GGML_TYPES_H_
#define LOWBIT_CORE_QUANT_GGML_TYPES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace lowbit {

// ggml_type values (ggml.h).
enum class GgmlType : uint32_t {
  kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ5_0 = 6, kQ5_1 = 7, kQ8_0 = 8,
  kQ2_K = 10, kQ3_K = 11, kQ4_K = 12, kQ5_K = 13, kQ6_K = 14, kIQ4_NL = 20, kIQ4_XS = 23, kBF16 = 30,
};

// The grid of a quantized type (see the top of this file).
struct GgmlGrid {
  int sub_block = 0;               ///< values sharing scale[s] and min[s]
  int levels = 0;                  ///< codes 0..levels-1
  int zero = 0;                    ///< level(q) = q − zero ...
  const int8_t* table = nullptr;   ///< ... or table[q], ascending (IQ4_NL, IQ4_XS)
  int scale_min = 1, scale_max = 1;  ///< range of the integer sub-block scales (1, 1: d alone)
  int min_max = 0;                 ///< mins 0..min_max; 0: no minimum
  bool free_min = false;           ///< the minimum may have either sign (Q4_1, Q5_1: an FP16 value)

  bool has_min() const { return min_max > 0; }
  bool two_level() const { return scale_max > 1; }
  float level(int q) const { return table != nullptr ? static_cast<float>(table[q]) : static_cast<float>(q - zero); }
};

struct GgmlTypeTraits {
  GgmlType type;
  const char* name;      ///< as llama.cpp names it ("Q4_K")
  int64_t block_size;    ///< values per block (1 for the float types)
  size_t block_bytes;    ///< bytes per block
  GgmlGrid grid;         ///< levels == 0 for the float types
  bool quantized() const { return grid.levels > 0; }
  double bits_per_weight() const { return 8.0 * static_cast<double>(block_bytes) / static_cast<double>(block_size); }
  // Bytes of a row of `n` values; `n` must be a multiple of block_size.
  size_t RowBytes(int64_t n) const { return static_cast<size_t>(n / block_size) * block_bytes; }
};

// Every type of the table, and lookups by name (case-insensitive) and by value (null if not in the table).
const std::vector<GgmlTypeTraits>& GgmlTypes();
const GgmlTypeTraits* FindGgmlType(absl::string_view name);
const GgmlTypeTraits* FindGgmlType(GgmlType type);
const GgmlTypeTraits& TraitsOf(GgmlType type);  ///< `type` must be in the table

// One block, unpacked.
struct GgmlBlock {
  static constexpr int kMaxValues = 256, kMaxSubBlocks = 16;
  float d = 0, dmin = 0;  ///< FP16-exact
  int16_t scale[kMaxSubBlocks] = {};
  int16_t min[kMaxSubBlocks] = {};
  uint8_t q[kMaxValues] = {};

  float step(int s) const { return d * static_cast<float>(scale[s]); }
  float offset(int s) const { return dmin * static_cast<float>(min[s]); }
  // x_j as ggml computes it: (d·scale)·level − dmin·min, in float.
  float value(const GgmlGrid& g, int j) const {
    const int s = j / g.sub_block;
    return step(s) * g.level(q[j]) - offset(s);
  }
};

// `b` as t's bytes (t.block_bytes at `out`), and back. Fields outside the type's ranges are masked.
void PackGgmlBlock(const GgmlTypeTraits& t, const GgmlBlock& b, uint8_t* out);
void UnpackGgmlBlock(const GgmlTypeTraits& t, const uint8_t* in, GgmlBlock* b);

// Float rows (rows x cols, row-major) as F32, F16 or BF16, rows in `row_order` (empty: as they are).
std::string EncodeFloatRows(const float* values, int64_t rows, int64_t cols, GgmlType type,
                            const std::vector<int64_t>& row_order);
// One row of `n` values of type `type` back to float, as ggml-quants.c does.
void DequantizeGgmlRow(GgmlType type, const char* data, int64_t n, float* out);

}  // namespace lowbit

#endif  // LOWBIT_CORE_QUANT_GGML_TYPES_H_

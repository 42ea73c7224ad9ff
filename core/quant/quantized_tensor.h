// The results of quantizers, which packers turn into output formats. Three kinds, one per family:
//
//   QuantizedTensor  a group-wise uniform grid, w[r][c] ≈ scale[r][g] * (code[r][c] - zero[r][g]) with
//                    g = g_idx[c]: RTN, INT8, GPTQ and AWQ.
//   CodebookTensor   codes indexing codebooks of d-dimensional vectors (d consecutive inputs, or d consecutive
//                    output channels), one codebook per tile of rows x columns, optionally times a per-row
//                    scale: LUT palettization and VQ.
//   OneBitTensor     w[r][c] ≈ sign[r][c] * a[r] * b[c]: OneBit.
//   GgmlTensor       rows of ggml blocks (core/quant/ggml_types.h), codes chosen by RTN, GPTQ or AWQ on
//                    ggml's grids for GGUF files.
//
// QuantizedLayer holds any of them; Dequantize/BitsPerWeight on it work for all.
//
// Invariants: codes in [0, 2^bits); scales positive, finite and exactly representable in FP16 (the
// precision every output format stores); zeros in [1, 2^bits - 1] so that GPTQ's v1 convention, which
// stores zero - 1, never underflows.
#ifndef LOWBIT_CORE_QUANT_QUANTIZED_TENSOR_H_
#define LOWBIT_CORE_QUANT_QUANTIZED_TENSOR_H_

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "core/quant/ggml_types.h"
#include "core/tensor/tensor.h"

namespace lowbit {

struct QuantizedTensor {
  int64_t rows = 0;          ///< output features
  int64_t cols = 0;          ///< input features
  int bits = 4;              ///< code width, 2..8
  int64_t group_size = 0;    ///< input columns per group; == cols for per-output-channel grids
  bool symmetric = false;    ///< zero fixed at 2^(bits-1)
  std::vector<uint8_t> codes;  ///< rows * cols, row-major
  std::vector<float> scales;   ///< rows * num_groups(), row-major
  std::vector<int32_t> zeros;  ///< rows * num_groups(), row-major
  std::vector<int32_t> g_idx;  ///< group of each column when not col / group_size (GPTQ act-order); else empty

  // Groups per row; the last one is ragged when cols % group_size != 0.
  int64_t num_groups() const { return (cols + group_size - 1) / group_size; }
  int64_t group_of(int64_t col) const { return g_idx.empty() ? col / group_size : g_idx[col]; }

  Matrix Dequantize() const;
  // Dequantizes one row into `out` (cols floats), so errors can be measured without a full copy.
  void DequantizeRow(int64_t row, float* out) const;
  // Storage bits per weight of the packed form: codes, plus an FP16 scale and a `bits`-wide zero per group.
  double BitsPerWeight() const;
};

// Codebook (palettized) weights. Vectors along the input axis (VQ, the default):
//   w[r][v*d + j] = row_scale[r] * codebook[tile(r, v*d)][code[r][v]][j];
// along the output axis (coremltools' vector palettization):
//   w[u*d + j][c] = row_scale[u*d + j] * codebook[tile(u*d + j, c)][code[u][c]][j].
//
// Invariants: the vector axis' length and its tile size are multiples of dim; codes < entries(); tiles are
// group_rows x group_cols (the last ones ragged); codebook values exactly representable in their storage
// (FP16, or int8 times an FP16 scale per codebook); row_scales empty or rows long, FP16-exact.
struct CodebookTensor {
  enum class Storage { kF16, kInt8 };
  int64_t rows = 0;
  int64_t cols = 0;
  int dim = 1;                   ///< vector length d
  bool along_rows = false;       ///< vectors of d consecutive output channels instead of input features
  int index_bits = 4;            ///< bits per code; entries() = 2^index_bits
  int64_t group_rows = 0;        ///< rows sharing one codebook
  int64_t group_cols = 0;        ///< columns sharing one codebook
  Storage storage = Storage::kF16;
  std::vector<uint16_t> codes;   ///< rows * (cols / dim), or (rows / dim) * cols along rows; row-major
  std::vector<float> codebooks;  ///< tiles() * entries() * dim, tile-major (row tiles outer), as stored
  std::vector<float> codebook_scales;  ///< kInt8: one FP16 scale per codebook (value = int8 * scale)
  std::vector<float> row_scales;       ///< optional per-output-channel scale

  int64_t entries() const { return int64_t{1} << index_bits; }
  int64_t row_tiles() const { return (rows + group_rows - 1) / group_rows; }
  int64_t col_tiles() const { return (cols + group_cols - 1) / group_cols; }
  int64_t tiles() const { return row_tiles() * col_tiles(); }
  int64_t tile_of(int64_t row, int64_t col) const { return (row / group_rows) * col_tiles() + col / group_cols; }
  const float* centroid(int64_t tile, int64_t code) const {
    return codebooks.data() + (tile * entries() + code) * dim;
  }
  void DequantizeRow(int64_t row, float* out) const;
  // Codes, codebooks (16 or 8 bits per value, plus 16 per int8 codebook's scale) and row scales.
  double BitsPerWeight() const;
};

// OneBit's sign-value factorisation: w[r][c] ≈ (sign[r][c] ? +1 : -1) * a[r] * b[c], a and b FP16-exact.
struct OneBitTensor {
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<uint8_t> signs;  ///< rows * cols, 1 for +1 and 0 for -1
  std::vector<float> a;        ///< rows: per-output-channel value
  std::vector<float> b;        ///< cols: per-input-channel value

  void DequantizeRow(int64_t row, float* out) const;
  // One bit per weight plus 16 per value: 1 + 16(rows + cols)/(rows·cols) (1.0078 at 4096 x 4096).
  double BitsPerWeight() const;
};

// Rows of ggml blocks, in the checkpoint's row order, exactly as a GGUF file stores them.
struct GgmlTensor {
  int64_t rows = 0;
  int64_t cols = 0;  ///< a multiple of the type's block size
  GgmlType type = GgmlType::kQ8_0;
  std::string blocks;  ///< rows * RowBytes(cols)

  void DequantizeRow(int64_t row, float* out) const;
  double BitsPerWeight() const { return TraitsOf(type).bits_per_weight(); }
};

using QuantizedLayer = std::variant<QuantizedTensor, CodebookTensor, OneBitTensor, GgmlTensor>;

void DequantizeRow(const QuantizedLayer& layer, int64_t row, float* out);
Matrix Dequantize(const QuantizedLayer& layer);
double BitsPerWeight(const QuantizedLayer& layer);

}  // namespace lowbit

#endif  // LOWBIT_CORE_QUANT_QUANTIZED_TENSOR_H_

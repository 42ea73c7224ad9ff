// QuantizedTensor: a weight matrix on a group-wise uniform grid, w[r][c] ≈ scale[r][g] * (code[r][c] - zero[r][g])
// with g = g_idx[c]. The shared result of RTN, INT8 and GPTQ; packers turn it into output formats.
//
// Invariants: codes in [0, 2^bits); scales positive, finite and exactly representable in FP16 (the
// precision every output format stores); zeros in [1, 2^bits - 1] so that GPTQ's v1 convention, which
// stores zero - 1, never underflows.
#ifndef LOWBIT_CORE_QUANT_QUANTIZED_TENSOR_H_
#define LOWBIT_CORE_QUANT_QUANTIZED_TENSOR_H_

#include <cstdint>
#include <string>
#include <vector>

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

}  // namespace lowbit

#endif  // LOWBIT_CORE_QUANT_QUANTIZED_TENSOR_H_

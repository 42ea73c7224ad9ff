// Codes on ggml's block grids (core/quant/ggml_types.h): a weighted least-squares search for a block's
// scales and minimums, the nearest code of a value once they are fixed, and RTN of whole matrices.
//
// The search, per block of values x with weights w (importances; all 1 without calibration):
//  1. per sub-block, the affine grid x ≈ a·level(q) + b minimising Σ w (x − a·level(q) − b)²: from a few
//     candidate ranges (the extreme value mapped to either end of the levels, the range shrunk or widened
//     by 5%), each refined by solving the 2x2 (1x1 without a minimum) normal equations for the
//     codes it rounds to, then rounding again;
//  2. for the two-level types, the sub-block a's (and −b's) as integers times one FP16 d (dmin): d chosen
//     among candidates and by least squares to minimise Σ_s W_s (a_s − d·n_s)², W_s the sub-block's
//     weight Σ w·level²;
//  3. the codes rounded on the stored grid, d and dmin refitted by least squares for those codes and
//     rounded to FP16, kept if the block's weighted error falls.
// GPTQ fixes a block's grid this way on its error-updated weights, then rounds each column onto it.
#ifndef LOWBIT_CORE_QUANT_GGML_GRID_H_
#define LOWBIT_CORE_QUANT_GGML_GRID_H_

#include "absl/status/statusor.h"
#include "core/quant/ggml_types.h"
#include "core/quant/quantized_tensor.h"
#include "core/tensor/tensor.h"

namespace lowbit {

// The grid and codes of one block of t.block_size values `x` (weights `w`, null: all 1).
void FitGgmlBlock(const GgmlTypeTraits& t, const float* x, const float* w, GgmlBlock* block);

// The code of `x` on sub-block `s` of a block whose scales are fixed; `*value` its value on the grid.
uint8_t NearestGgmlCode(const GgmlGrid& g, const GgmlBlock& block, int s, float x, float* value);

// Weighted squared error of a fitted block against x.
double GgmlBlockError(const GgmlTypeTraits& t, const GgmlBlock& block, const float* x, const float* w);

// Every row of `w` on t's blocks; `importance` (cols values, e.g. the Hessian's diagonal) weights the
// search, null for none. INVALID_ARGUMENT if t is not quantized, cols is not a multiple of its block size,
// or a weight is not finite.
absl::StatusOr<GgmlTensor> QuantizeGgmlRtn(const Matrix& w, const GgmlTypeTraits& t, const float* importance);

}  // namespace lowbit

#endif  // LOWBIT_CORE_QUANT_GGML_GRID_H_

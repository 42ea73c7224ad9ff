// Vector quantization after GPTVQ (van Baalen et al., 2024): vectors of d consecutive input dimensions
// share codebooks of k = 2^(d·b) centroids, one codebook per tile of group_rows x group_cols weights.
//
// Per column tile, as in GPTQ: the codebooks are initialised by weighted k-means (EM) on the tile's current
// weights, every component weighted by 1/[U]_cc² (U the Cholesky factor of H⁻¹, GPTQ's error scale, so
// columns whose errors are cheap to compensate count less); then d columns at a time each row's vector takes
// its nearest centroid (same weighting) and the quantization error is fed back into the columns not yet
// quantized through U, lazily per tile with one BLAS product for the trailing columns. After the pass the
// codebooks are updated by conjugate gradients with exact line search on the layer's output error
// tr((W − Ŵ) H (W − Ŵ)ᵀ) against the original weights, and finally stored as int8 with an FP16 scale
// per codebook. Bits per weight include the codebooks.
#ifndef LOWBIT_CORE_QUANT_VQ_H_
#define LOWBIT_CORE_QUANT_VQ_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "core/quant/gptq.h"
#include "core/quant/quantized_tensor.h"
#include "core/tensor/tensor.h"
#include "core/util/job_context.h"

namespace lowbit {

enum class VqInit { kKMeans, kUniform };

struct VqOptions {
  int dim = 2;                    ///< d: 1, 2 or 4 consecutive input dimensions per vector
  int bits = 3;                   ///< b: bits per dimension; k = 2^(d·b) ≤ 4096 centroids
  int64_t group_cols = 256;       ///< columns per codebook tile (a multiple of d)
  int64_t group_rows = 256;       ///< rows per codebook tile; -1 = all rows
  int em_iterations = 25;         ///< k-means iterations of the initialisation
  int update_iterations = 10;     ///< conjugate-gradient steps of the codebook update; 0 = none
  double damp_percent = 0.01;     ///< Hessian damping, as GPTQ
  uint32_t seed = 0;
  VqInit init = VqInit::kKMeans;  ///< kUniform: per-dimension uniform grids from min to max (a test reference)
};

absl::Status ValidateVqOptions(const VqOptions& options);

// INVALID_ARGUMENT for bad options, a width not divisible by d, a Hessian of the wrong size or non-finite
// weights; FAILED_PRECONDITION if H stays indefinite.
// `context` is checked once per codebook initialisation and per update step.
absl::StatusOr<CodebookTensor> QuantizeVq(const Matrix& w, const CalibrationStats& stats, const VqOptions& options,
                                          const JobContext* context = nullptr);

}  // namespace lowbit

#endif  // LOWBIT_CORE_QUANT_VQ_H_

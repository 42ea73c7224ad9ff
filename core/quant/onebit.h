// OneBit (Xu et al., 2024): W ≈ sign(W) ⊙ (a bᵀ), a 1-bit sign matrix and two FP16 value vectors.
//
// a bᵀ is the best rank-1 approximation of |W| (the paper's sign-value-independent decomposition, SVID),
// found either as the top singular pair by power iteration ("svd") or by rank-1 non-negative matrix
// factorisation with alternating non-negative least squares ("nmf", the paper's choice). |W| is
// non-negative, so both reach the same Perron pair; they differ in starting point and path.
// With calibration statistics, `refine_iterations` rounds of alternating exact least squares on the
// layer's output error tr(ΔW H ΔWᵀ) refine a (per row, closed form) and b (one cols x cols solve); the
// signs stay. Each round never increases the output error; the best iterate is kept.
#ifndef LOWBIT_CORE_QUANT_ONEBIT_H_
#define LOWBIT_CORE_QUANT_ONEBIT_H_

#include "absl/status/statusor.h"
#include "core/quant/gptq.h"
#include "core/quant/quantized_tensor.h"
#include "core/tensor/tensor.h"

namespace lowbit {

enum class OneBitDecomposition { kSvd, kNmf };

struct OneBitOptions {
  OneBitDecomposition decomposition = OneBitDecomposition::kNmf;
  int max_iterations = 100;   ///< power / NMF iterations (stops earlier on convergence)
  int refine_iterations = 0;  ///< calibrated least-squares rounds; needs statistics
};

// INVALID_ARGUMENT for non-finite weights, a Hessian of the wrong size, or values outside FP16.
absl::StatusOr<OneBitTensor> QuantizeOneBit(const Matrix& w, const OneBitOptions& options,
                                            const CalibrationStats* stats);

}  // namespace lowbit

#endif  // LOWBIT_CORE_QUANT_ONEBIT_H_

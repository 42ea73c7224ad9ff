// GPTQ (Frantar et al., 2022): quantizes a linear layer column by column, each column's rounding error
// fed back into the columns not yet quantized through the inverse Hessian H⁻¹ of the layer's inputs
// (H = 2XXᵀ/n), using the upper Cholesky factor of H⁻¹, with lazy batch updates: inside a block of
// columns updates are applied at once, to the rest of the matrix as one matrix product (BLAS).
//
// Options follow AutoGPTQ/GPTQModel: damp_percent, act_order (desc_act: columns in order of decreasing
// H diagonal, recorded as g_idx), static_groups (grids from the original weights, so act-order keeps
// sequential groups), dead columns (zero H diagonal: weight zeroed). If the damped H is not positive
// definite the damping is raised and the factorisation retried; the result says so.
#ifndef LOWBIT_CORE_QUANT_GPTQ_H_
#define LOWBIT_CORE_QUANT_GPTQ_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "core/quant/quantized_tensor.h"
#include "core/tensor/tensor.h"
#include "core/util/job_context.h"

namespace lowbit {

// Second-moment statistics of one linear layer's inputs, accumulated over calibration tokens.
struct CalibrationStats {
  int64_t cols = 0;             ///< input features
  int64_t samples = 0;          ///< tokens accumulated
  std::vector<float> hessian;   ///< cols * cols, row-major: H = 2/n Σ x xᵀ
  std::vector<float> mean_abs;  ///< cols: mean |x| per input channel (AWQ's activation scale)
};

// Adds `n` input rows x (n x cols, row-major) to H with one BLAS syrk, keeping H = 2/n Σ x xᵀ.
void AccumulateHessian(const float* x, int64_t n, CalibrationStats* stats);

// H's diagonal, floored at 1e-12: each input column's second moment, the importance a block search weighs
// values by (an imatrix's entries up to the factor 2).
std::vector<float> HessianDiagonal(const CalibrationStats& stats);

// The upper Cholesky factor U of H⁻¹ (row-major, lower triangle zero) for H damped by damp_percent of its
// mean diagonal; the damping is raised 4x, up to 5 times, while H is not positive definite. `context` (may be
// null) is checked between the O(cols³) LAPACK steps.
struct InverseHessianFactor {
  std::vector<float> u;
  double damp_percent_used = 0;
  int retries = 0;
};
absl::StatusOr<InverseHessianFactor> FactorInverseHessian(const std::vector<float>& h, int64_t cols, double damp_percent,
                                                          const JobContext* context = nullptr);

struct GptqOptions {
  int bits = 4;                ///< 2..8
  int64_t group_size = 128;    ///< -1 = one group per output channel
  bool symmetric = false;
  double damp_percent = 0.01;  ///< added to the diagonal, as a fraction of its mean
  bool act_order = false;      ///< desc_act
  bool static_groups = false;
  int64_t block_size = 128;    ///< columns per lazy batch
  const GgmlTypeTraits* ggml = nullptr;  ///< codes on this ggml type's blocks (bits, group_size, symmetric unused)
};

struct GptqResult {
  QuantizedLayer layer;          ///< a QuantizedTensor, or a GgmlTensor for options.ggml
  double damp_percent_used = 0;  ///< > damp_percent when the factorisation needed retries
  int cholesky_retries = 0;
};

// INVALID_ARGUMENT for bad options, a Hessian of the wrong size or non-finite weights; FAILED_PRECONDITION
// if H stays indefinite after the retries.
// `context` is checked once per lazy batch.
absl::StatusOr<GptqResult> QuantizeGptq(const Matrix& w, const CalibrationStats& stats, const GptqOptions& options,
                                       const JobContext* context = nullptr);

// tr(Δ H Δᵀ) for a rows x cols difference Δ (row-major): the output error it causes on the calibration
// inputs. `scratch` (resized to rows * cols) holds Δ·H; one BLAS ssymm.
double OutputError(const std::vector<float>& delta, int64_t rows, const CalibrationStats& stats,
                   std::vector<float>* scratch);

// tr(ΔW H ΔWᵀ) / tr(W H Wᵀ): the layer's relative output error on the calibration inputs.
double RelativeOutputError(const Matrix& w, const Matrix& w_hat, const CalibrationStats& stats);

}  // namespace lowbit

#endif  // LOWBIT_CORE_QUANT_GPTQ_H_

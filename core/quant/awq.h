// AWQ (Lin et al., 2023), the layer-level parts; core/runtime/calibration.cc folds the scales into the model.
//
// Scale search: for the linear layers sharing one input x, s = mean|x|^α normalised by √(max s · min s)
// (AutoAWQ's normalisation), α on a grid of `grid` points in [0, 1); the α kept minimises the output error
// of the block the layers feed (AutoAWQ's module2inspect: the attention for q/k/v, the MLP for gate/up),
// given as a function of Ŵ = Q(W·diag(s))·diag(s)⁻¹ with Q group-wise RTN. Without one (o_proj, down_proj,
// whose block is the layer itself) it is the layers' own output error Σ tr(ΔW H ΔWᵀ), exact from the
// inputs' second moments H.
// Clip search: per output channel and group, the weights are clamped to ±shrink·max|w| for shrink = 1,
// 0.95, …, 0.55 (AutoAWQ's grid of 20 with max_shrink 0.5), keeping the clamp with the least output error
// of that group, wᵀ H_gg w. Quantization then uses the clamped weights; the grid follows GPTQ's conventions
// (the range always covers 0), so the result packs into both the GPTQ and the AWQ layouts.
#ifndef LOWBIT_CORE_QUANT_AWQ_H_
#define LOWBIT_CORE_QUANT_AWQ_H_

#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "core/quant/gptq.h"
#include "core/quant/quantized_tensor.h"
#include "core/tensor/tensor.h"
#include "core/util/job_context.h"

namespace lowbit {

struct AwqOptions {
  int bits = 4;               ///< 2..8
  int64_t group_size = 128;   ///< input columns per group; -1 = per output channel
  bool zero_point = true;     ///< asymmetric grid (AWQ's default) instead of absmax
  int grid = 20;              ///< α points of the scale search
  bool clip = true;           ///< run the clip search
  const GgmlTypeTraits* ggml = nullptr;  ///< final codes on this ggml type's blocks (the search uses bits/group_size)
};

struct AwqScales {
  std::vector<float> scales;   ///< per input channel: the layers use W·diag(s), their input x / s
  double alpha = 0;
  double error = 0;            ///< summed output error at the chosen α
  double error_unscaled = 0;   ///< the same at α = 0 (plain RTN)
};

// The output error of the block fed by `layers` when they hold `w_hat` (in the order of `layers`).
using AwqBlockError = std::function<double(const std::vector<Matrix>& w_hat)>;

// INVALID_ARGUMENT if the layers' widths, the statistics or the weights do not fit. `block_error` may be
// null: then the layers' own output error from H.
absl::StatusOr<AwqScales> SearchAwqScales(const std::vector<const Matrix*>& layers, const CalibrationStats& stats,
                                          const AwqOptions& options, const AwqBlockError& block_error = nullptr,
                                          const JobContext* context = nullptr);  // checked per grid point

// H and mean|x| of the input divided by `scales`: diag(1/s) H diag(1/s).
CalibrationStats ScaleStats(const CalibrationStats& stats, const std::vector<float>& scales);

// Group-wise RTN of `w` (already scaled) after the clip search against `stats` (of the scaled input);
// `clip` false skips the search (AutoAWQ skips q_proj and k_proj, whose outputs meet in the softmax).
// With options.ggml, the clipped weights go onto that type's blocks, the search weighted by H's diagonal.
absl::StatusOr<QuantizedLayer> QuantizeAwqLayer(const Matrix& w, const CalibrationStats& stats, bool clip,
                                                 const AwqOptions& options);

}  // namespace lowbit

#endif  // LOWBIT_CORE_QUANT_AWQ_H_

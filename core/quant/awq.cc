#include "core/quant/awq.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/quant/ggml_grid.h"
#include "core/quant/rtn.h"
#include "core/util/status_macros.h"

namespace lowbit {
namespace {

RtnOptions Rtn(const AwqOptions& o) {
  return {o.bits, o.group_size, o.zero_point ? GridKind::kAsymmetric : GridKind::kSymmetric, false};
}

// The layers' summed output error when quantized with input scales s.
absl::StatusOr<double> ScaledError(const std::vector<const Matrix*>& layers, const std::vector<float>& s,
                                   const CalibrationStats& stats, const AwqOptions& o, const AwqBlockError& block_error) {
  double error = 0;
  std::vector<Matrix> w_hats;
  std::vector<float> delta, scratch;
  for (const Matrix* w : layers) {
    Matrix scaled = *w;
    for (int64_t r = 0; r < w->rows; ++r)
      for (int64_t c = 0; c < w->cols; ++c) scaled.data[r * w->cols + c] *= s[c];
    ASSIGN_OR_RETURN(QuantizedTensor q, QuantizeRtn(scaled, Rtn(o)));
    Matrix w_hat = q.Dequantize();
    for (int64_t r = 0; r < w->rows; ++r)
      for (int64_t c = 0; c < w->cols; ++c) w_hat.data[r * w->cols + c] /= s[c];
    if (block_error) {
      w_hats.push_back(std::move(w_hat));
    } else {
      delta.resize(w->data.size());
      for (size_t i = 0; i < delta.size(); ++i) delta[i] = w->data[i] - w_hat.data[i];
      error += OutputError(delta, w->rows, stats, &scratch);
    }
  }
  return block_error ? block_error(w_hats) : error;
}

}  // namespace

absl::StatusOr<AwqScales> SearchAwqScales(const std::vector<const Matrix*>& layers, const CalibrationStats& stats,
                                          const AwqOptions& o, const AwqBlockError& block_error,
                                          const JobContext* context) {
  const int64_t cols = stats.cols;
  if (stats.hessian.size() != static_cast<size_t>(cols * cols) || stats.mean_abs.size() != static_cast<size_t>(cols)) {
    return absl::InvalidArgumentError("awq: calibration statistics are incomplete");
  }
  for (const Matrix* w : layers) {
    if (w->cols != cols) return absl::InvalidArgumentError(absl::StrCat("awq: a layer is ", w->cols, " wide, its input ", cols));
    RETURN_IF_ERROR(CheckFinite(w->data.data(), w->rows * w->cols, "weights"));
  }
  if (o.grid < 1) return absl::InvalidArgumentError("grid: must be at least 1");
  AwqScales best;
  best.error = INFINITY;
  std::vector<float> s(static_cast<size_t>(cols));
  for (int i = 0; i < o.grid; ++i) {
    RETURN_IF_ERROR(CheckCancelled(context));
    const double alpha = static_cast<double>(i) / o.grid;
    float lo = INFINITY, hi = 0;
    for (int64_t c = 0; c < cols; ++c) {
      s[c] = std::max(1e-4f, static_cast<float>(std::pow(static_cast<double>(stats.mean_abs[c]), alpha)));
      lo = std::min(lo, s[c]), hi = std::max(hi, s[c]);
    }
    const float norm = std::sqrt(lo * hi);
    for (float& v : s) v /= norm;
    ASSIGN_OR_RETURN(double error, ScaledError(layers, s, stats, o, block_error));
    if (i == 0) best.error_unscaled = error;
    if (error < best.error) {
      best.error = error;
      best.alpha = alpha;
      best.scales = s;
    }
  }
  return best;
}

CalibrationStats ScaleStats(const CalibrationStats& stats, const std::vector<float>& s) {
  CalibrationStats scaled = stats;
  const int64_t n = stats.cols;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) scaled.hessian[i * n + j] /= s[i] * s[j];
  for (int64_t i = 0; i < static_cast<int64_t>(scaled.mean_abs.size()); ++i) scaled.mean_abs[i] /= s[i];
  return scaled;
}

absl::StatusOr<QuantizedLayer> QuantizeAwqLayer(const Matrix& w, const CalibrationStats& stats, bool clip,
                                                const AwqOptions& o) {
  // The final rounding, of the (clipped) scaled weights.
  const auto quantize = [&](const Matrix& m) -> absl::StatusOr<QuantizedLayer> {
    if (o.ggml == nullptr) return QuantizeRtn(m, Rtn(o));
    return QuantizeGgmlRtn(m, *o.ggml, HessianDiagonal(stats).data());
  };
  if (stats.cols != w.cols || stats.hessian.size() != static_cast<size_t>(w.cols * w.cols)) {
    return absl::InvalidArgumentError(absl::StrCat("the Hessian is for ", stats.cols, " inputs, the layer has ", w.cols));
  }
  if (!clip) return quantize(w);
  const int64_t cols = w.cols;
  RETURN_IF_ERROR(CheckFinite(w.data.data(), w.rows * cols, "weights"));
  const int64_t g = o.group_size == -1 || o.group_size > cols ? cols : o.group_size;
  const GridKind kind = o.zero_point ? GridKind::kAsymmetric : GridKind::kSymmetric;
  const int maxq = (1 << o.bits) - 1;
  constexpr int kGrid = 20, kSteps = 10;  // shrink 1 − i/20 for i < 20 · max_shrink 0.5
  Matrix clipped = w;
  std::vector<float> x, xc, delta, hd;
  for (int64_t c0 = 0; c0 < cols; c0 += g) {
    const int64_t n = std::min(cols, c0 + g) - c0;
    x.resize(static_cast<size_t>(n)), xc.resize(x.size()), delta.resize(x.size()), hd.resize(x.size());
    for (int64_t r = 0; r < w.rows; ++r) {
      std::copy(w.row(r) + c0, w.row(r) + c0 + n, x.begin());
      float amax = 0;
      for (float v : x) amax = std::max(amax, std::abs(v));
      double best_error = INFINITY;
      float best_max = amax;
      for (int i = 0; i < kSteps; ++i) {
        const float max_val = amax * (1.0f - static_cast<float>(i) / kGrid);
        for (int64_t j = 0; j < n; ++j) xc[j] = std::clamp(x[j], -max_val, max_val);
        ASSIGN_OR_RETURN(GroupGrid grid, FindGrid(xc.data(), n, o.bits, kind));
        for (int64_t j = 0; j < n; ++j) {
          delta[j] = x[j] - grid.scale * (static_cast<float>(QuantizeValue(xc[j], grid, maxq)) - static_cast<float>(grid.zero));
        }
        // δᵀ H_gg δ on this group's block of H.
        cblas_ssymv(CblasRowMajor, CblasUpper, static_cast<int>(n), 1.0f, stats.hessian.data() + c0 * cols + c0,
                    static_cast<int>(cols), delta.data(), 1, 0.0f, hd.data(), 1);
        const double error = cblas_dsdot(static_cast<int>(n), delta.data(), 1, hd.data(), 1);
        if (error < best_error) best_error = error, best_max = max_val;
      }
      for (int64_t j = 0; j < n; ++j) clipped.data[r * cols + c0 + j] = std::clamp(x[j], -best_max, best_max);
    }
  }
  return quantize(clipped);
}

}  // namespace lowbit

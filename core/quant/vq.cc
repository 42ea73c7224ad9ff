#include "core/quant/vq.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/quant/kmeans.h"
#include "core/quant/rtn.h"
#include "core/util/status_macros.h"

namespace lowbit {
namespace {

// Per-dimension uniform grids from each dimension's min to max: code bits split into d fields of b bits.
std::vector<float> UniformCodebook(const float* x, int64_t n, int d, int b) {
  const int k = 1 << (d * b), levels = (1 << b) - 1;
  std::vector<float> lo(static_cast<size_t>(d), INFINITY), hi(static_cast<size_t>(d), -INFINITY);
  for (int64_t i = 0; i < n; ++i)
    for (int j = 0; j < d; ++j) lo[j] = std::min(lo[j], x[i * d + j]), hi[j] = std::max(hi[j], x[i * d + j]);
  std::vector<float> codebook(static_cast<size_t>(k) * d);
  for (int c = 0; c < k; ++c)
    for (int j = 0; j < d; ++j) {
      const int level = (c >> (j * b)) & levels;
      codebook[c * d + j] = lo[j] + (hi[j] - lo[j]) * static_cast<float>(level) / static_cast<float>(levels);
    }
  return codebook;
}

// Rounds one codebook to int8 times an FP16 scale (absmax / 127, rounded up so no value clips).
absl::StatusOr<float> StoreAsInt8(float* codebook, int64_t n) {
  float amax = 0;
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::abs(codebook[i]));
  ASSIGN_OR_RETURN(const float scale, RoundUpToF16(amax / 127.0f));
  for (int64_t i = 0; i < n; ++i) {
    codebook[i] = std::clamp(std::nearbyint(codebook[i] / scale), -127.0f, 127.0f) * scale;
  }
  return scale;
}

// Ŵ from codes and `values` (a codebook-shaped array), row-major rows x cols.
void Expand(const CodebookTensor& t, const std::vector<float>& values, std::vector<float>* out) {
  const int64_t vectors = t.cols / t.dim;
  for (int64_t r = 0; r < t.rows; ++r) {
    for (int64_t v = 0; v < vectors; ++v) {
      const float* c = values.data() + (t.tile_of(r, v * t.dim) * t.entries() + t.codes[r * vectors + v]) * t.dim;
      std::copy(c, c + t.dim, out->data() + r * t.cols + v * t.dim);
    }
  }
}

// The gradient of a function of Ŵ with respect to the codebook entries: sums of `g` over each entry's uses.
void Gather(const CodebookTensor& t, const std::vector<float>& g, std::vector<double>* out) {
  std::fill(out->begin(), out->end(), 0.0);
  const int64_t vectors = t.cols / t.dim;
  for (int64_t r = 0; r < t.rows; ++r) {
    for (int64_t v = 0; v < vectors; ++v) {
      const int64_t base = (t.tile_of(r, v * t.dim) * t.entries() + t.codes[r * vectors + v]) * t.dim;
      for (int j = 0; j < t.dim; ++j) (*out)[base + j] += g[r * t.cols + v * t.dim + j];
    }
  }
}

double Dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Conjugate gradients with exact line search on f(C) = tr((W − Ŵ(C)) H (W − Ŵ(C))ᵀ), codes fixed:
// f is quadratic in C, so each step is optimal along its direction and f never increases.
void UpdateCodebooks(const std::vector<float>& w, const std::vector<float>& h, int iterations, CodebookTensor* t) {
  const int m = static_cast<int>(t->rows), n = static_cast<int>(t->cols);
  std::vector<float> w_hat(w.size()), grad_w(w.size()), p_hat(w.size()), p_hat_h(w.size());
  Expand(*t, t->codebooks, &w_hat);
  for (size_t i = 0; i < w.size(); ++i) w_hat[i] -= w[i];  // Ŵ − W
  // ∂f/∂Ŵ = 2 (Ŵ − W) H
  cblas_ssymm(CblasRowMajor, CblasRight, CblasUpper, m, n, 2.0f, h.data(), n, w_hat.data(), n, 0.0f, grad_w.data(), n);
  std::vector<double> g(t->codebooks.size()), g_next(g.size()), p(g.size());
  Gather(*t, grad_w, &g);
  for (size_t i = 0; i < g.size(); ++i) p[i] = -g[i];
  std::vector<float> p_float(g.size());
  for (int it = 0; it < iterations; ++it) {
    const double gg = Dot(g, g);
    if (gg == 0) break;
    for (size_t i = 0; i < p.size(); ++i) p_float[i] = static_cast<float>(p[i]);
    Expand(*t, p_float, &p_hat);
    cblas_ssymm(CblasRowMajor, CblasRight, CblasUpper, m, n, 1.0f, h.data(), n, p_hat.data(), n, 0.0f, p_hat_h.data(), n);
    const double curvature = cblas_dsdot(static_cast<int>(p_hat.size()), p_hat.data(), 1, p_hat_h.data(), 1);
    if (!(curvature > 0)) break;
    const double step = -Dot(g, p) / (2 * curvature);
    for (size_t i = 0; i < p.size(); ++i) t->codebooks[i] += static_cast<float>(step * p[i]);
    cblas_saxpy(static_cast<int>(grad_w.size()), static_cast<float>(2 * step), p_hat_h.data(), 1, grad_w.data(), 1);
    Gather(*t, grad_w, &g_next);
    const double beta = Dot(g_next, g_next) / gg;  // Fletcher-Reeves
    for (size_t i = 0; i < p.size(); ++i) p[i] = -g_next[i] + beta * p[i];
    g.swap(g_next);
  }
}

}  // namespace

absl::Status ValidateVqOptions(const VqOptions& o) {
  if (o.dim != 1 && o.dim != 2 && o.dim != 4) return absl::InvalidArgumentError(absl::StrCat("dim: must be 1, 2 or 4, got ", o.dim));
  if (o.bits < 1 || o.bits > 8 || o.dim * o.bits > 12) {
    return absl::InvalidArgumentError(absl::StrCat("bits: bits per dimension must be 1..8 with dim·bits ≤ 12, got ", o.bits,
                                                   " at dim ", o.dim));
  }
  if (o.group_cols <= 0 || o.group_cols % o.dim != 0) {
    return absl::InvalidArgumentError(absl::StrCat("group_cols: must be a positive multiple of dim, got ", o.group_cols));
  }
  if (o.group_rows == 0 || o.group_rows < -1) return absl::InvalidArgumentError("group_rows: must be -1 or positive");
  if (o.em_iterations < 1 || o.update_iterations < 0) return absl::InvalidArgumentError("em_iterations/update_iterations: out of range");
  if (!(o.damp_percent > 0 && o.damp_percent < 1)) return absl::InvalidArgumentError("damp_percent: must be in (0, 1)");
  return absl::OkStatus();
}

absl::StatusOr<CodebookTensor> QuantizeVq(const Matrix& w, const CalibrationStats& stats, const VqOptions& o,
                                          const JobContext* context) {
  RETURN_IF_ERROR(ValidateVqOptions(o));
  const int64_t rows = w.rows, cols = w.cols;
  const int d = o.dim;
  if (cols % d != 0) return absl::InvalidArgumentError(absl::StrCat("dim: ", d, " does not divide the input width ", cols));
  if (stats.cols != cols || stats.hessian.size() != static_cast<size_t>(cols * cols)) {
    return absl::InvalidArgumentError(absl::StrCat("the Hessian is for ", stats.cols, " inputs, the layer has ", cols));
  }
  RETURN_IF_ERROR(CheckFinite(w.data.data(), rows * cols, "weights"));
  RETURN_IF_ERROR(CheckFinite(stats.hessian.data(), cols * cols, "Hessian"));
  CodebookTensor t;
  t.rows = rows;
  t.cols = cols;
  t.dim = d;
  t.index_bits = d * o.bits;
  t.group_rows = o.group_rows == -1 ? rows : std::min(o.group_rows, rows);
  t.group_cols = std::min(o.group_cols, cols);
  t.storage = CodebookTensor::Storage::kInt8;
  const int k = static_cast<int>(t.entries());
  const int64_t vectors = cols / d;
  t.codes.resize(static_cast<size_t>(rows * vectors));
  t.codebooks.resize(static_cast<size_t>(t.tiles() * k * d));
  t.codebook_scales.resize(static_cast<size_t>(t.tiles()));

  // Work on Wᵀ (one contiguous column per input), GPTQ's dead-input rule included.
  std::vector<float> original = w.data, h = stats.hessian;
  for (int64_t c = 0; c < cols; ++c) {
    if (h[c * cols + c] == 0.0f) {
      h[c * cols + c] = 1.0f;
      for (int64_t r = 0; r < rows; ++r) original[r * cols + c] = 0.0f;
    }
  }
  std::vector<float> wt(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) wt[c * rows + r] = original[r * cols + c];
  ASSIGN_OR_RETURN(InverseHessianFactor factor, FactorInverseHessian(h, cols, o.damp_percent, context));
  const std::vector<float>& U = factor.u;
  std::vector<float> importance(static_cast<size_t>(cols));
  for (int64_t c = 0; c < cols; ++c) importance[c] = 1.0f / (U[c * cols + c] * U[c * cols + c]);

  std::vector<float> err(static_cast<size_t>(t.group_cols * rows)), points, point_w;
  std::vector<float> vec(static_cast<size_t>(d)), q(static_cast<size_t>(d) * rows);
  for (int64_t c0 = 0; c0 < cols; c0 += t.group_cols) {
    const int64_t c1 = std::min(cols, c0 + t.group_cols);
    // Initialise this column tile's codebooks on the weights as GPTQ has updated them so far.
    for (int64_t r0 = 0; r0 < rows; r0 += t.group_rows) {
      RETURN_IF_ERROR(CheckCancelled(context));
      const int64_t r1 = std::min(rows, r0 + t.group_rows);
      const int64_t n = (r1 - r0) * ((c1 - c0) / d);
      points.resize(static_cast<size_t>(n * d));
      point_w.resize(points.size());
      int64_t i = 0;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; c += d, ++i)
          for (int j = 0; j < d; ++j) {
            points[i * d + j] = wt[(c + j) * rows + r];
            point_w[i * d + j] = importance[c + j];
          }
      std::vector<float> codebook;
      if (o.init == VqInit::kUniform) {
        codebook = UniformCodebook(points.data(), n, d, o.bits);
      } else {
        const KMeansOptions km{k, o.em_iterations, o.seed, 256};
        codebook = KMeans(points.data(), point_w.data(), n, d, km).centroids;
      }
      const int64_t tile = t.tile_of(r0, c0);
      ASSIGN_OR_RETURN(t.codebook_scales[tile], StoreAsInt8(codebook.data(), static_cast<int64_t>(codebook.size())));
      std::copy(codebook.begin(), codebook.end(), t.codebooks.begin() + tile * k * d);
    }
    // Quantize d columns at a time, feeding each column's error forward (GPTQ inside the tile).
    for (int64_t i = c0; i < c1; i += d) {
      for (int64_t r = 0; r < rows; ++r) {
        for (int j = 0; j < d; ++j) vec[j] = wt[(i + j) * rows + r];
        const float* centroids = t.codebooks.data() + t.tile_of(r, i) * k * d;
        const int code = NearestCentroid(vec.data(), importance.data() + i, centroids, k, d);
        t.codes[r * vectors + i / d] = static_cast<uint16_t>(code);
        for (int j = 0; j < d; ++j) q[j * rows + r] = centroids[code * d + j];
      }
      for (int j = 0; j < d; ++j) {
        const int64_t c = i + j;
        float* e = err.data() + (c - c0) * rows;
        const float u = U[c * cols + c];
        for (int64_t r = 0; r < rows; ++r) e[r] = (wt[c * rows + r] - q[j * rows + r]) / u;
        for (int64_t c2 = c + 1; c2 < c1; ++c2) {
          cblas_saxpy(static_cast<int>(rows), -U[c * cols + c2], e, 1, wt.data() + c2 * rows, 1);
        }
      }
    }
    if (c1 < cols) {  // the trailing columns at once: Wᵀ[c1:] -= U[c0:c1, c1:]ᵀ · Err
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(cols - c1), static_cast<int>(rows),
                  static_cast<int>(c1 - c0), -1.0f, U.data() + c0 * cols + c1, static_cast<int>(cols), err.data(),
                  static_cast<int>(rows), 1.0f, wt.data() + c1 * rows, static_cast<int>(rows));
    }
  }
  if (o.update_iterations > 0) {
    RETURN_IF_ERROR(CheckCancelled(context));
    UpdateCodebooks(original, h, o.update_iterations, &t);
    for (int64_t tile = 0; tile < t.tiles(); ++tile) {
      ASSIGN_OR_RETURN(t.codebook_scales[tile], StoreAsInt8(t.codebooks.data() + tile * k * d, int64_t{k} * d));
    }
  }
  return t;
}

}  // namespace lowbit

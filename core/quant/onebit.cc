#include "core/quant/onebit.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/tensor/dtype.h"
#include "core/util/status_macros.h"

extern "C" {
void spotrf_(const char* uplo, const int* n, float* a, const int* lda, int* info);
void spotrs_(const char* uplo, const int* n, const int* nrhs, const float* a, const int* lda, float* b, const int* ldb,
             int* info);
}

namespace lowbit {
namespace {

double Norm2(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += static_cast<double>(x) * x;
  return s;
}

// The top singular pair of the non-negative A (rows x cols) by power iteration, as σ^½u, σ^½v.
void PowerIteration(const std::vector<float>& abs_w, int64_t rows, int64_t cols, int iterations, std::vector<float>* a,
                    std::vector<float>* b) {
  const int m = static_cast<int>(rows), n = static_cast<int>(cols);
  b->assign(static_cast<size_t>(cols), static_cast<float>(1.0 / std::sqrt(static_cast<double>(cols))));
  a->assign(static_cast<size_t>(rows), 0.0f);
  std::vector<float> next(static_cast<size_t>(cols));
  for (int it = 0; it < iterations; ++it) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, m, n, 1.0f, abs_w.data(), n, b->data(), 1, 0.0f, a->data(), 1);
    cblas_sgemv(CblasRowMajor, CblasTrans, m, n, 1.0f, abs_w.data(), n, a->data(), 1, 0.0f, next.data(), 1);
    const double norm = std::sqrt(Norm2(next));
    if (norm == 0) break;
    double change = 0;
    for (int64_t c = 0; c < cols; ++c) {
      next[c] = static_cast<float>(next[c] / norm);
      change = std::max(change, static_cast<double>(std::abs(next[c] - (*b)[c])));
    }
    b->swap(next);
    if (change < 1e-7) break;
  }
  cblas_sgemv(CblasRowMajor, CblasNoTrans, m, n, 1.0f, abs_w.data(), n, b->data(), 1, 0.0f, a->data(), 1);
  const double sigma = std::sqrt(Norm2(*a));  // ‖A v‖ with ‖v‖ = 1
  if (sigma == 0) return;
  const float root = static_cast<float>(std::sqrt(sigma));
  for (float& x : *a) x = static_cast<float>(x / sigma) * root;
  for (float& x : *b) x *= root;
}

// Rank-1 NMF of A by alternating non-negative least squares, from the row and column means.
void RankOneNmf(const std::vector<float>& abs_w, int64_t rows, int64_t cols, int iterations, std::vector<float>* a,
                std::vector<float>* b) {
  const int m = static_cast<int>(rows), n = static_cast<int>(cols);
  std::vector<float> ones_r(static_cast<size_t>(rows), 1.0f / static_cast<float>(rows));
  a->assign(static_cast<size_t>(rows), 0.0f);
  b->assign(static_cast<size_t>(cols), 0.0f);
  cblas_sgemv(CblasRowMajor, CblasTrans, m, n, 1.0f, abs_w.data(), n, ones_r.data(), 1, 0.0f, b->data(), 1);
  double previous = INFINITY;
  const double total = Norm2(abs_w);
  for (int it = 0; it < iterations; ++it) {
    const double bb = Norm2(*b);
    if (bb == 0) break;
    cblas_sgemv(CblasRowMajor, CblasNoTrans, m, n, static_cast<float>(1.0 / bb), abs_w.data(), n, b->data(), 1, 0.0f,
                a->data(), 1);
    for (float& x : *a) x = std::max(x, 0.0f);
    const double aa = Norm2(*a);
    if (aa == 0) break;
    cblas_sgemv(CblasRowMajor, CblasTrans, m, n, static_cast<float>(1.0 / aa), abs_w.data(), n, a->data(), 1, 0.0f,
                b->data(), 1);
    for (float& x : *b) x = std::max(x, 0.0f);
    // ‖A − abᵀ‖² = ‖A‖² − ‖a‖²‖b‖² at the b-step's optimum (aᵀAb = ‖a‖²‖b‖²).
    const double objective = total - aa * Norm2(*b);
    if (previous - objective <= 1e-7 * total) break;
    previous = objective;
  }
}

// tr(ΔW H ΔWᵀ) for Ŵ = diag(a)·S·diag(b); `delta` and `scratch` are rows x cols buffers.
double SignValueError(const Matrix& w, const std::vector<uint8_t>& signs, const std::vector<float>& a,
                      const std::vector<float>& b, const CalibrationStats& stats, std::vector<float>* delta,
                      std::vector<float>* scratch) {
  for (int64_t r = 0; r < w.rows; ++r)
    for (int64_t c = 0; c < w.cols; ++c)
      (*delta)[r * w.cols + c] = w.data[r * w.cols + c] - (signs[r * w.cols + c] ? a[r] : -a[r]) * b[c];
  return OutputError(*delta, w.rows, stats, scratch);
}

// Alternating exact least squares for a (rows) and b (cols) on tr(ΔW H ΔWᵀ), signs fixed.
absl::Status Refine(const Matrix& w, const std::vector<uint8_t>& signs, const CalibrationStats& stats, int rounds,
                    std::vector<float>* a, std::vector<float>* b) {
  const int64_t rows = w.rows, cols = w.cols;
  const int m = static_cast<int>(rows), n = static_cast<int>(cols);
  std::vector<float> wh(static_cast<size_t>(rows * cols)), v(wh.size()), vh(wh.size());
  cblas_ssymm(CblasRowMajor, CblasRight, CblasUpper, m, n, 1.0f, stats.hessian.data(), n, w.data.data(), n, 0.0f,
              wh.data(), n);
  std::vector<float> best_a = *a, best_b = *b;
  double best = SignValueError(w, signs, *a, *b, stats, &v, &vh);
  std::vector<float> gram(static_cast<size_t>(cols * cols)), rhs(static_cast<size_t>(cols));
  for (int round = 0; round < rounds; ++round) {
    // a_r = w_r H v_rᵀ / v_r H v_rᵀ with v_r = s_r ⊙ b.
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) v[r * cols + c] = signs[r * cols + c] ? (*b)[c] : -(*b)[c];
    cblas_ssymm(CblasRowMajor, CblasRight, CblasUpper, m, n, 1.0f, stats.hessian.data(), n, v.data(), n, 0.0f, vh.data(), n);
    for (int64_t r = 0; r < rows; ++r) {
      const double num = cblas_sdot(n, wh.data() + r * cols, 1, v.data() + r * cols, 1);
      const double den = cblas_sdot(n, vh.data() + r * cols, 1, v.data() + r * cols, 1);
      if (den > 0) (*a)[r] = static_cast<float>(num / den);
    }
    // b solves (H ⊙ BᵀB) b = Σ_r B_r ⊙ (WH)_r with B = diag(a)·S.
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) v[r * cols + c] = signs[r * cols + c] ? (*a)[r] : -(*a)[r];
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, n, m, 1.0f, v.data(), n, 0.0f, gram.data(), n);
    double mean_diag = 0;
    for (int64_t i = 0; i < cols; ++i) {
      for (int64_t j = i; j < cols; ++j) {
        gram[i * cols + j] *= stats.hessian[i * cols + j];
        gram[j * cols + i] = gram[i * cols + j];
      }
      mean_diag += gram[i * cols + i];
    }
    mean_diag /= static_cast<double>(cols);
    if (mean_diag <= 0) break;
    for (int64_t i = 0; i < cols; ++i) gram[i * cols + i] += static_cast<float>(1e-6 * mean_diag);  // dead inputs
    std::fill(rhs.begin(), rhs.end(), 0.0f);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) rhs[c] += v[r * cols + c] * wh[r * cols + c];
    int info = 0, one = 1;
    spotrf_("L", &n, gram.data(), &n, &info);
    if (info != 0) break;
    spotrs_("L", &n, &one, gram.data(), &n, rhs.data(), &n, &info);
    if (info != 0) break;
    *b = rhs;
    const double e = SignValueError(w, signs, *a, *b, stats, &v, &vh);
    if (!(e < best)) break;
    best = e, best_a = *a, best_b = *b;
  }
  *a = best_a;
  *b = best_b;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<OneBitTensor> QuantizeOneBit(const Matrix& w, const OneBitOptions& o, const CalibrationStats* stats) {
  RETURN_IF_ERROR(CheckFinite(w.data.data(), w.rows * w.cols, "weights"));
  if (o.max_iterations < 1) return absl::InvalidArgumentError("max_iterations: must be at least 1");
  if (o.refine_iterations < 0) return absl::InvalidArgumentError("refine_iterations: must not be negative");
  if (o.refine_iterations > 0) {
    if (stats == nullptr) return absl::InvalidArgumentError("refine_iterations: refinement needs calibration data");
    if (stats->cols != w.cols || stats->hessian.size() != static_cast<size_t>(w.cols * w.cols)) {
      return absl::InvalidArgumentError(absl::StrCat("the Hessian is for ", stats->cols, " inputs, the layer has ", w.cols));
    }
  }
  OneBitTensor t;
  t.rows = w.rows;
  t.cols = w.cols;
  t.signs.resize(w.data.size());
  std::vector<float> abs_w(w.data.size());
  for (size_t i = 0; i < w.data.size(); ++i) {
    t.signs[i] = w.data[i] >= 0.0f ? 1 : 0;
    abs_w[i] = std::abs(w.data[i]);
  }
  if (o.decomposition == OneBitDecomposition::kSvd) {
    PowerIteration(abs_w, w.rows, w.cols, o.max_iterations, &t.a, &t.b);
  } else {
    RankOneNmf(abs_w, w.rows, w.cols, o.max_iterations, &t.a, &t.b);
  }
  if (o.refine_iterations > 0) RETURN_IF_ERROR(Refine(w, t.signs, *stats, o.refine_iterations, &t.a, &t.b));
  // Balance the two vectors' ranges so both fit FP16 comfortably, then round them.
  float max_a = 0, max_b = 0;
  for (float x : t.a) max_a = std::max(max_a, std::abs(x));
  for (float x : t.b) max_b = std::max(max_b, std::abs(x));
  if (max_a > 0 && max_b > 0) {
    const float balance = std::sqrt(max_b / max_a);
    for (float& x : t.a) x *= balance;
    for (float& x : t.b) x /= balance;
  }
  for (std::vector<float>* v : {&t.a, &t.b}) {
    for (float& x : *v) {
      x = RoundToF16(x);
      if (!std::isfinite(x)) return absl::InvalidArgumentError("a OneBit value vector overflows FP16");
    }
  }
  return t;
}

}  // namespace lowbit

#include "core/quant/gptq.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "core/quant/rtn.h"
#include "core/util/status_macros.h"

// LAPACK from OpenBLAS (column-major Fortran interface).
extern "C" {
void spotrf_(const char* uplo, const int* n, float* a, const int* lda, int* info);
void spotri_(const char* uplo, const int* n, float* a, const int* lda, int* info);
}

namespace lowbit {
namespace {

// For a symmetric row-major matrix, LAPACK's column-major "L" factor is our row-major upper triangle:
// after this call the upper triangle holds U with A = UᵀU. False if A is not positive definite.
bool CholeskyUpper(float* a, int n) {
  int info = 0;
  spotrf_("L", &n, a, &n, &info);
  return info == 0;
}

// The upper Cholesky factor of H⁻¹ (row-major, lower triangle zeroed), from a damped copy of H. Each of
// the three LAPACK calls is O(n³) and cannot be interrupted, so `context` is checked between them.
absl::StatusOr<std::vector<float>> InverseCholeskyUpper(const std::vector<float>& h, int n, double damp, double mean_diag,
                                                        const JobContext* context) {
  std::vector<float> a = h;
  for (int i = 0; i < n; ++i) a[static_cast<size_t>(i) * n + i] += static_cast<float>(damp * mean_diag);
  if (!CholeskyUpper(a.data(), n)) return absl::FailedPreconditionError("H is not positive definite");
  RETURN_IF_ERROR(CheckCancelled(context));
  int info = 0;
  spotri_("L", &n, a.data(), &n, &info);  // H⁻¹ into the row-major upper triangle
  if (info != 0) return absl::FailedPreconditionError("H is singular");
  RETURN_IF_ERROR(CheckCancelled(context));
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < i; ++j) a[static_cast<size_t>(i) * n + j] = a[static_cast<size_t>(j) * n + i];
  if (!CholeskyUpper(a.data(), n)) return absl::FailedPreconditionError("H⁻¹ is not positive definite");
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < i; ++j) a[static_cast<size_t>(i) * n + j] = 0.0f;
  return a;
}

}  // namespace

absl::StatusOr<InverseHessianFactor> FactorInverseHessian(const std::vector<float>& h, int64_t cols, double damp_percent,
                                                          const JobContext* context) {
  double mean_diag = 0;
  for (int64_t c = 0; c < cols; ++c) mean_diag += h[c * cols + c];
  mean_diag /= static_cast<double>(cols);
  InverseHessianFactor factor;
  absl::StatusOr<std::vector<float>> u = absl::FailedPreconditionError("not factorised");
  double damp = damp_percent;
  for (int attempt = 0; attempt < 6; ++attempt, damp *= 4) {
    u = InverseCholeskyUpper(h, static_cast<int>(cols), damp, mean_diag, context);
    if (u.ok() || absl::IsCancelled(u.status()) || absl::IsDeadlineExceeded(u.status())) break;
    ++factor.retries;
  }
  if (!u.ok() && !absl::IsFailedPrecondition(u.status())) return u.status();  // stopped
  if (!u.ok()) return absl::FailedPreconditionError(absl::StrCat("the Hessian stays indefinite up to damping ", damp / 4));
  factor.damp_percent_used = damp;
  factor.u = *std::move(u);
  return factor;
}

void AccumulateHessian(const float* x, int64_t n, CalibrationStats* stats) {
  const int64_t c = stats->cols;
  if (stats->hessian.empty()) stats->hessian.assign(static_cast<size_t>(c * c), 0.0f);
  const double total = static_cast<double>(stats->samples + n);
  // H ← H·(old/total) + (2/total)·XᵀX, on the upper triangle; the lower one is mirrored below.
  cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, static_cast<int>(c), static_cast<int>(n),
              static_cast<float>(2.0 / total), x, static_cast<int>(c),
              static_cast<float>(static_cast<double>(stats->samples) / total), stats->hessian.data(), static_cast<int>(c));
  stats->mean_abs.resize(static_cast<size_t>(c), 0.0f);
  std::vector<double> sum_abs(static_cast<size_t>(c), 0.0);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < c; ++i) sum_abs[i] += std::abs(x[t * c + i]);
  for (int64_t i = 0; i < c; ++i) {
    stats->mean_abs[i] = static_cast<float>((stats->mean_abs[i] * static_cast<double>(stats->samples) + sum_abs[i]) / total);
  }
  stats->samples += n;
  for (int64_t i = 0; i < c; ++i)
    for (int64_t j = 0; j < i; ++j) stats->hessian[i * c + j] = stats->hessian[j * c + i];
}

absl::StatusOr<GptqResult> QuantizeGptq(const Matrix& w, const CalibrationStats& stats, const GptqOptions& o,
                                       const JobContext* context) {
  const int64_t rows = w.rows, cols = w.cols;
  if (o.bits < 2 || o.bits > 8) return absl::InvalidArgumentError(absl::StrCat("bits must be in 2..8, got ", o.bits));
  if (o.group_size == 0 || o.group_size < -1) return absl::InvalidArgumentError("group_size must be -1 or positive");
  if (stats.cols != cols || stats.hessian.size() != static_cast<size_t>(cols * cols)) {
    return absl::InvalidArgumentError(absl::StrCat("the Hessian is for ", stats.cols, " inputs, the layer has ", cols));
  }
  RETURN_IF_ERROR(CheckFinite(w.data.data(), rows * cols, "weight matrix"));
  RETURN_IF_ERROR(CheckFinite(stats.hessian.data(), cols * cols, "Hessian"));
  const int64_t g = o.group_size == -1 || o.group_size > cols ? cols : o.group_size;
  const GridKind kind = o.symmetric ? GridKind::kSymmetric : GridKind::kAsymmetric;
  const int maxq = (1 << o.bits) - 1;
  // Blocks hold whole groups, so a group's grid is always found on fully updated weights.
  const int64_t block = g < cols ? std::max(g, std::max<int64_t>(1, o.block_size / g) * g) : o.block_size;

  // Work on Wᵀ (one contiguous column per input feature) and a copy of H.
  std::vector<float> wt(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) wt[c * rows + r] = w.data[r * cols + c];
  // H as given, or a modified copy (dead inputs, act-order): a copy is cols² floats, 485 MB for a 7B
  // down_proj, so it is made only when needed.
  std::vector<float> h_modified;
  for (int64_t c = 0; c < cols; ++c) {
    if (stats.hessian[c * cols + c] == 0.0f) {  // a dead input: never active, so its weights cannot matter
      if (h_modified.empty()) h_modified = stats.hessian;
      h_modified[c * cols + c] = 1.0f;
      std::fill(wt.begin() + c * rows, wt.begin() + (c + 1) * rows, 0.0f);
    }
  }
  if (o.act_order && h_modified.empty()) h_modified = stats.hessian;
  const std::vector<float>& h_used = h_modified.empty() ? stats.hessian : h_modified;
  // Static groups: grids from the original weights, per sequential group.
  std::vector<GroupGrid> static_grids;
  if (o.static_groups) {
    for (int64_t gi = 0; gi * g < cols; ++gi) {
      for (int64_t r = 0; r < rows; ++r) {
        std::vector<float> slice(w.row(r) + gi * g, w.row(r) + std::min(cols, (gi + 1) * g));
        ASSIGN_OR_RETURN(GroupGrid grid, FindGrid(slice.data(), static_cast<int64_t>(slice.size()), o.bits, kind));
        static_grids.push_back(grid);  // [group][row]
      }
    }
  }
  std::vector<int64_t> perm(static_cast<size_t>(cols));
  std::iota(perm.begin(), perm.end(), 0);
  if (o.act_order) {
    const std::vector<float>& h = h_modified;
    std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) { return h[a * cols + a] > h[b * cols + b]; });
    std::vector<float> wp(wt.size()), hp(h.size());
    for (int64_t i = 0; i < cols; ++i) {
      std::copy(wt.begin() + perm[i] * rows, wt.begin() + (perm[i] + 1) * rows, wp.begin() + i * rows);
      for (int64_t j = 0; j < cols; ++j) hp[i * cols + j] = h[perm[i] * cols + perm[j]];
    }
    wt.swap(wp);
    h_modified.swap(hp);
  }

  GptqResult result;
  ASSIGN_OR_RETURN(InverseHessianFactor factor, FactorInverseHessian(h_used, cols, o.damp_percent, context));
  h_modified = std::vector<float>();  // U replaces it
  result.damp_percent_used = factor.damp_percent_used;
  result.cholesky_retries = factor.retries;
  const std::vector<float>& U = factor.u;

  QuantizedTensor& q = result.tensor;
  q.rows = rows;
  q.cols = cols;
  q.bits = o.bits;
  q.group_size = g;
  q.symmetric = o.symmetric;
  const int64_t groups = q.num_groups();
  q.codes.resize(static_cast<size_t>(rows * cols));
  q.scales.resize(static_cast<size_t>(rows * groups));
  q.zeros.resize(static_cast<size_t>(rows * groups));
  std::vector<GroupGrid> grid(static_cast<size_t>(rows));
  std::vector<float> err(static_cast<size_t>(block * rows)), slice;
  for (int64_t i1 = 0; i1 < cols; i1 += block) {
    RETURN_IF_ERROR(CheckCancelled(context));
    const int64_t i2 = std::min(cols, i1 + block);
    for (int64_t i = i1; i < i2; ++i) {
      float* col = wt.data() + i * rows;
      if (o.static_groups) {
        const int64_t gi = perm[i] / g;
        std::copy(static_grids.begin() + gi * rows, static_grids.begin() + (gi + 1) * rows, grid.begin());
      } else if (i % g == 0) {
        const int64_t end = std::min(cols, i + g), gi = i / g;
        slice.resize(static_cast<size_t>(end - i));
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t c = i; c < end; ++c) slice[c - i] = wt[c * rows + r];
          ASSIGN_OR_RETURN(grid[r], FindGrid(slice.data(), end - i, o.bits, kind));
          q.scales[r * groups + gi] = grid[r].scale;
          q.zeros[r * groups + gi] = grid[r].zero;
        }
      }
      const float d = U[i * cols + i];
      float* e = err.data() + (i - i1) * rows;
      for (int64_t r = 0; r < rows; ++r) {
        const uint8_t code = QuantizeValue(col[r], grid[r], maxq);
        q.codes[r * cols + perm[i]] = code;
        e[r] = (col[r] - grid[r].scale * (static_cast<float>(code) - static_cast<float>(grid[r].zero))) / d;
      }
      // Feed the error into the rest of the block now...
      for (int64_t j = i + 1; j < i2; ++j) cblas_saxpy(static_cast<int>(rows), -U[i * cols + j], e, 1, wt.data() + j * rows, 1);
    }
    // ...and into all later columns at once: Wᵀ[i2:] -= U[i1:i2, i2:]ᵀ · Err.
    if (i2 < cols) {
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(cols - i2), static_cast<int>(rows),
                  static_cast<int>(i2 - i1), -1.0f, U.data() + i1 * cols + i2, static_cast<int>(cols), err.data(),
                  static_cast<int>(rows), 1.0f, wt.data() + i2 * rows, static_cast<int>(rows));
    }
  }
  if (o.static_groups) {
    for (int64_t gi = 0; gi < groups; ++gi) {
      for (int64_t r = 0; r < rows; ++r) {
        q.scales[r * groups + gi] = static_grids[gi * rows + r].scale;
        q.zeros[r * groups + gi] = static_grids[gi * rows + r].zero;
      }
    }
  } else if (o.act_order) {
    q.g_idx.resize(static_cast<size_t>(cols));
    for (int64_t i = 0; i < cols; ++i) q.g_idx[perm[i]] = static_cast<int32_t>(i / g);
  }
  return result;
}

double OutputError(const std::vector<float>& delta, int64_t rows, const CalibrationStats& stats,
                   std::vector<float>* scratch) {
  const int n = static_cast<int>(stats.cols);
  scratch->resize(delta.size());
  cblas_ssymm(CblasRowMajor, CblasRight, CblasUpper, static_cast<int>(rows), n, 1.0f, stats.hessian.data(), n,
              delta.data(), n, 0.0f, scratch->data(), n);
  return cblas_dsdot(static_cast<int>(delta.size()), delta.data(), 1, scratch->data(), 1);
}

double RelativeOutputError(const Matrix& w, const Matrix& w_hat, const CalibrationStats& stats) {
  const int64_t cols = w.cols;
  double num = 0, den = 0;
  std::vector<float> hw(static_cast<size_t>(cols)), d(static_cast<size_t>(cols));
  for (int64_t r = 0; r < w.rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) d[c] = w.row(r)[c] - w_hat.row(r)[c];
    cblas_ssymv(CblasRowMajor, CblasUpper, static_cast<int>(cols), 1.0f, stats.hessian.data(), static_cast<int>(cols),
                d.data(), 1, 0.0f, hw.data(), 1);
    for (int64_t c = 0; c < cols; ++c) num += static_cast<double>(d[c]) * hw[c];
    cblas_ssymv(CblasRowMajor, CblasUpper, static_cast<int>(cols), 1.0f, stats.hessian.data(), static_cast<int>(cols),
                w.row(r), 1, 0.0f, hw.data(), 1);
    for (int64_t c = 0; c < cols; ++c) den += static_cast<double>(w.row(r)[c]) * hw[c];
  }
  return den > 0 ? num / den : 0;
}

}  // namespace lowbit

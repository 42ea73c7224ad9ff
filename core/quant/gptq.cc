#include "core/quant/gptq.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <optional>

#include "absl/strings/str_cat.h"
#include "core/quant/ggml_grid.h"
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

std::vector<float> HessianDiagonal(const CalibrationStats& stats) {
  std::vector<float> diagonal(static_cast<size_t>(stats.cols));
  for (int64_t c = 0; c < stats.cols; ++c) diagonal[c] = std::max(stats.hessian[c * stats.cols + c], 1e-12f);
  return diagonal;
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

namespace {

// The grids GPTQ rounds onto, one policy per kind: Start(i) fits the grids of the groups beginning at
// column i (on the error-updated Wᵀ), Round(r, i, x) is the value x of row r rounds to (its code
// recorded), Finish(i) closes column i.

// GPTQ's own group-wise uniform grids (optionally act-order, optionally static).
class UniformColumns {
 public:
  UniformColumns(const GptqOptions& o, int64_t rows, int64_t cols, int64_t g, const std::vector<float>& wt,
                 const std::vector<int64_t>& perm, std::vector<GroupGrid> static_grids)
      : o_(o), rows_(rows), cols_(cols), g_(g), wt_(wt), perm_(perm), static_grids_(std::move(static_grids)),
        kind_(o.symmetric ? GridKind::kSymmetric : GridKind::kAsymmetric), maxq_((1 << o.bits) - 1), grid_(rows) {
    q_.rows = rows, q_.cols = cols, q_.bits = o.bits, q_.group_size = g, q_.symmetric = o.symmetric;
    q_.codes.resize(static_cast<size_t>(rows * cols));
    q_.scales.resize(static_cast<size_t>(rows * q_.num_groups()));
    q_.zeros.resize(q_.scales.size());
  }
  absl::Status Start(int64_t i) {
    if (o_.static_groups) {
      const int64_t gi = perm_[i] / g_;
      std::copy(static_grids_.begin() + gi * rows_, static_grids_.begin() + (gi + 1) * rows_, grid_.begin());
    } else if (i % g_ == 0) {
      const int64_t end = std::min(cols_, i + g_), gi = i / g_, groups = q_.num_groups();
      slice_.resize(static_cast<size_t>(end - i));
      for (int64_t r = 0; r < rows_; ++r) {
        for (int64_t c = i; c < end; ++c) slice_[c - i] = wt_[c * rows_ + r];
        ASSIGN_OR_RETURN(grid_[r], FindGrid(slice_.data(), end - i, o_.bits, kind_));
        q_.scales[r * groups + gi] = grid_[r].scale;
        q_.zeros[r * groups + gi] = grid_[r].zero;
      }
    }
    return absl::OkStatus();
  }
  float Round(int64_t r, int64_t i, float x) {
    const uint8_t code = QuantizeValue(x, grid_[r], maxq_);
    q_.codes[r * cols_ + perm_[i]] = code;
    return grid_[r].scale * (static_cast<float>(code) - static_cast<float>(grid_[r].zero));
  }
  void Finish(int64_t) {}
  QuantizedTensor Take() {
    const int64_t groups = q_.num_groups();
    if (o_.static_groups) {
      for (int64_t gi = 0; gi < groups; ++gi) {
        for (int64_t r = 0; r < rows_; ++r) {
          q_.scales[r * groups + gi] = static_grids_[gi * rows_ + r].scale;
          q_.zeros[r * groups + gi] = static_grids_[gi * rows_ + r].zero;
        }
      }
    } else if (o_.act_order) {
      q_.g_idx.resize(static_cast<size_t>(cols_));
      for (int64_t i = 0; i < cols_; ++i) q_.g_idx[perm_[i]] = static_cast<int32_t>(i / g_);
    }
    return std::move(q_);
  }

 private:
  const GptqOptions& o_;
  const int64_t rows_, cols_, g_;
  const std::vector<float>& wt_;
  const std::vector<int64_t>& perm_;
  const std::vector<GroupGrid> static_grids_;
  const GridKind kind_;
  const int maxq_;
  std::vector<GroupGrid> grid_;
  std::vector<float> slice_;
  QuantizedTensor q_;
};

// ggml's blocks: each block's scales and minimums fitted (FitGgmlBlock, unweighted: the error feedback
// is what accounts for H, and weighting the fit by H's diagonal measured worse on stories260K) on the
// error-updated weights when GPTQ reaches its first column, its codes then chosen column by column.
class GgmlColumns {
 public:
  GgmlColumns(const GgmlTypeTraits& t, int64_t rows, int64_t cols, const std::vector<float>& wt)
      : t_(t), rows_(rows), cols_(cols), wt_(wt), blocks_(static_cast<size_t>(rows)) {
    out_ = GgmlTensor{rows, cols, t.type, std::string(static_cast<size_t>(rows) * t.RowBytes(cols), '\0')};
  }
  absl::Status Start(int64_t i) {
    if (i % t_.block_size != 0) return absl::OkStatus();
    x_.resize(static_cast<size_t>(t_.block_size));
    for (int64_t r = 0; r < rows_; ++r) {
      for (int64_t j = 0; j < t_.block_size; ++j) x_[j] = wt_[(i + j) * rows_ + r];
      FitGgmlBlock(t_, x_.data(), nullptr, &blocks_[r]);
      if (!std::isfinite(blocks_[r].d) || !std::isfinite(blocks_[r].dmin)) {
        return absl::InvalidArgumentError(absl::StrCat("row ", r, ": a block's scale overflows FP16"));
      }
    }
    return absl::OkStatus();
  }
  float Round(int64_t r, int64_t i, float x) {
    const int j = static_cast<int>(i % t_.block_size);
    float value;
    blocks_[r].q[j] = NearestGgmlCode(t_.grid, blocks_[r], j / t_.grid.sub_block, x, &value);
    return value;
  }
  void Finish(int64_t i) {
    if ((i + 1) % t_.block_size != 0) return;
    const size_t row_bytes = t_.RowBytes(cols_), at = static_cast<size_t>(i / t_.block_size) * t_.block_bytes;
    for (int64_t r = 0; r < rows_; ++r) {
      PackGgmlBlock(t_, blocks_[r], reinterpret_cast<uint8_t*>(out_.blocks.data()) + r * row_bytes + at);
    }
  }
  GgmlTensor Take() { return std::move(out_); }

 private:
  const GgmlTypeTraits& t_;
  const int64_t rows_, cols_;
  const std::vector<float>& wt_;
  std::vector<GgmlBlock> blocks_;
  std::vector<float> x_;
  GgmlTensor out_;
};

// GPTQ's sweep over the columns of Wᵀ (cols x rows) with lazy batches of `block` columns.
template <typename Columns>
absl::Status Sweep(std::vector<float>* wt_ptr, const std::vector<float>& U, int64_t rows, int64_t cols, int64_t block,
                   Columns* grid, const JobContext* context) {
  std::vector<float>& wt = *wt_ptr;
  std::vector<float> err(static_cast<size_t>(block * rows));
  for (int64_t i1 = 0; i1 < cols; i1 += block) {
    RETURN_IF_ERROR(CheckCancelled(context));
    const int64_t i2 = std::min(cols, i1 + block);
    for (int64_t i = i1; i < i2; ++i) {
      float* col = wt.data() + i * rows;
      RETURN_IF_ERROR(grid->Start(i));
      const float d = U[i * cols + i];
      float* e = err.data() + (i - i1) * rows;
      for (int64_t r = 0; r < rows; ++r) e[r] = (col[r] - grid->Round(r, i, col[r])) / d;
      grid->Finish(i);
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
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<GptqResult> QuantizeGptq(const Matrix& w, const CalibrationStats& stats, const GptqOptions& o,
                                       const JobContext* context) {
  const int64_t rows = w.rows, cols = w.cols;
  if (o.ggml == nullptr && (o.bits < 2 || o.bits > 8)) return absl::InvalidArgumentError(absl::StrCat("bits must be in 2..8, got ", o.bits));
  if (o.ggml == nullptr && (o.group_size == 0 || o.group_size < -1)) return absl::InvalidArgumentError("group_size must be -1 or positive");
  if (o.ggml != nullptr && (!o.ggml->quantized() || cols % o.ggml->block_size != 0 || o.act_order || o.static_groups)) {
    return absl::InvalidArgumentError(absl::StrCat(o.ggml->name, ": needs rows of multiples of ", o.ggml->block_size,
                                                   " values (the layer has ", cols, ") and sequential columns"));
  }
  if (stats.cols != cols || stats.hessian.size() != static_cast<size_t>(cols * cols)) {
    return absl::InvalidArgumentError(absl::StrCat("the Hessian is for ", stats.cols, " inputs, the layer has ", cols));
  }
  RETURN_IF_ERROR(CheckFinite(w.data.data(), rows * cols, "weight matrix"));
  RETURN_IF_ERROR(CheckFinite(stats.hessian.data(), cols * cols, "Hessian"));
  const int64_t g = o.ggml != nullptr ? o.ggml->block_size : o.group_size == -1 || o.group_size > cols ? cols : o.group_size;
  const GridKind kind = o.symmetric ? GridKind::kSymmetric : GridKind::kAsymmetric;
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
  std::optional<GgmlColumns> ggml;
  if (o.ggml != nullptr) ggml.emplace(*o.ggml, rows, cols, wt);
  ASSIGN_OR_RETURN(InverseHessianFactor factor, FactorInverseHessian(h_used, cols, o.damp_percent, context));
  h_modified = std::vector<float>();  // U replaces it
  result.damp_percent_used = factor.damp_percent_used;
  result.cholesky_retries = factor.retries;
  if (ggml) {
    RETURN_IF_ERROR(Sweep(&wt, factor.u, rows, cols, block, &*ggml, context));
    result.layer = ggml->Take();
  } else {
    UniformColumns uniform(o, rows, cols, g, wt, perm, std::move(static_grids));
    RETURN_IF_ERROR(Sweep(&wt, factor.u, rows, cols, block, &uniform, context));
    result.layer = uniform.Take();
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

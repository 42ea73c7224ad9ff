#include "tests/test_util/reference_gptq.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/quant/rtn.h"

namespace lowbit::testing {

Dense Cholesky(const Dense& a) {  // lower L with a = L Lᵀ
  const size_t n = a.size();
  Dense l(n, std::vector<double>(n, 0.0));
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = 0; j <= i; ++j) {
      double s = a[i][j];
      for (size_t k = 0; k < j; ++k) s -= l[i][k] * l[j][k];
      l[i][j] = i == j ? std::sqrt(s) : s / l[j][j];
    }
  }
  return l;
}

Dense Inverse(const Dense& a) {  // Gauss-Jordan
  const size_t n = a.size();
  Dense m = a, inv(n, std::vector<double>(n, 0.0));
  for (size_t i = 0; i < n; ++i) inv[i][i] = 1;
  for (size_t c = 0; c < n; ++c) {
    size_t p = c;
    for (size_t r = c; r < n; ++r) if (std::fabs(m[r][c]) > std::fabs(m[p][c])) p = r;
    std::swap(m[c], m[p]);
    std::swap(inv[c], inv[p]);
    const double d = m[c][c];
    for (size_t k = 0; k < n; ++k) m[c][k] /= d, inv[c][k] /= d;
    for (size_t r = 0; r < n; ++r) {
      if (r == c) continue;
      const double f = m[r][c];
      for (size_t k = 0; k < n; ++k) m[r][k] -= f * m[c][k], inv[r][k] -= f * inv[c][k];
    }
  }
  return inv;
}

// The paper's algorithm, one column at a time: quantize column i, then spread its error over every
// later column through row i of the upper Cholesky factor of H⁻¹.
QuantizedTensor ReferenceGptq(const Matrix& w, const CalibrationStats& stats, int bits, int64_t g, bool act_order) {
  const int64_t rows = w.rows, cols = w.cols;
  std::vector<int64_t> perm(static_cast<size_t>(cols));
  std::iota(perm.begin(), perm.end(), 0);
  if (act_order) {
    std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) {
      return stats.hessian[a * cols + a] > stats.hessian[b * cols + b];
    });
  }
  Dense h(cols, std::vector<double>(cols));
  double mean = 0;
  for (int64_t i = 0; i < cols; ++i) mean += stats.hessian[perm[i] * cols + perm[i]] / static_cast<double>(cols);
  for (int64_t i = 0; i < cols; ++i)
    for (int64_t j = 0; j < cols; ++j) h[i][j] = stats.hessian[perm[i] * cols + perm[j]] + (i == j ? 0.01 * mean : 0.0);
  const Dense l = Cholesky(Inverse(h));  // H⁻¹ = L Lᵀ, so U = Lᵀ
  Dense wd(rows, std::vector<double>(cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < cols; ++i) wd[r][i] = w.row(r)[perm[i]];
  QuantizedTensor q;
  q.rows = rows, q.cols = cols, q.bits = bits, q.group_size = g;
  const int64_t groups = q.num_groups();
  q.codes.resize(static_cast<size_t>(rows * cols));
  q.scales.resize(static_cast<size_t>(rows * groups));
  q.zeros.resize(static_cast<size_t>(rows * groups));
  std::vector<GroupGrid> grid(static_cast<size_t>(rows));
  for (int64_t i = 0; i < cols; ++i) {
    if (i % g == 0) {
      for (int64_t r = 0; r < rows; ++r) {
        std::vector<float> slice;
        for (int64_t c = i; c < std::min(cols, i + g); ++c) slice.push_back(static_cast<float>(wd[r][c]));
        grid[r] = *FindGrid(slice.data(), static_cast<int64_t>(slice.size()), bits, GridKind::kAsymmetric);
        q.scales[r * groups + i / g] = grid[r].scale;
        q.zeros[r * groups + i / g] = grid[r].zero;
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      const uint8_t code = QuantizeValue(static_cast<float>(wd[r][i]), grid[r], (1 << bits) - 1);
      q.codes[r * cols + perm[i]] = code;
      const double err = (wd[r][i] - grid[r].scale * (code - grid[r].zero)) / l[i][i];
      for (int64_t j = i + 1; j < cols; ++j) wd[r][j] -= err * l[j][i];
    }
  }
  if (act_order) {
    q.g_idx.resize(static_cast<size_t>(cols));
    for (int64_t i = 0; i < cols; ++i) q.g_idx[perm[i]] = static_cast<int32_t>(i / g);
  }
  return q;
}

double CodeAgreement(const QuantizedTensor& a, const QuantizedTensor& b) {
  int64_t same = 0;
  for (size_t i = 0; i < a.codes.size(); ++i) same += a.codes[i] == b.codes[i];
  return static_cast<double>(same) / static_cast<double>(a.codes.size());
}

}  // namespace lowbit::testing

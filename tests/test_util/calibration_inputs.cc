#include "tests/test_util/calibration_inputs.h"

#include <algorithm>
#include <cmath>
#include <random>

namespace lowbit::testing {

LayerInputs CorrelatedInputs(int64_t cols, int64_t n, uint32_t seed, const std::vector<int64_t>& outliers,
                             float outlier_scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> mix(static_cast<size_t>(cols * cols));
  for (float& v : mix) v = normal(rng) / std::sqrt(static_cast<float>(cols));
  for (int64_t i = 0; i < cols; ++i) mix[i * cols + i] += 1.0f;
  LayerInputs in;
  in.n = n, in.cols = cols;
  in.x.assign(static_cast<size_t>(n * cols), 0.0f);
  std::vector<float> z(static_cast<size_t>(cols));
  for (int64_t t = 0; t < n; ++t) {
    for (float& v : z) v = normal(rng);
    for (int64_t j = 0; j < cols; ++j) {
      float s = 0;
      for (int64_t k = 0; k < cols; ++k) s += z[k] * mix[k * cols + j];
      const bool outlier = std::find(outliers.begin(), outliers.end(), j) != outliers.end();
      in.x[t * cols + j] = s * (outlier ? outlier_scale : 1.0f);
    }
  }
  in.stats.cols = cols;
  AccumulateHessian(in.x.data(), n, &in.stats);
  return in;
}

double OutputError(const Matrix& w, const Matrix& w_hat, const LayerInputs& in) {
  double e = 0;
  for (int64_t t = 0; t < in.n; ++t) {
    const float* x = in.x.data() + t * in.cols;
    for (int64_t r = 0; r < w.rows; ++r) {
      double d = 0;
      for (int64_t c = 0; c < w.cols; ++c) d += (static_cast<double>(w.row(r)[c]) - w_hat.row(r)[c]) * x[c];
      e += d * d;
    }
  }
  return e;
}

Matrix RandomMatrix(int64_t rows, int64_t cols, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  Matrix w{rows, cols, std::vector<float>(static_cast<size_t>(rows * cols))};
  for (float& v : w.data) v = scale * normal(rng);
  return w;
}

}  // namespace lowbit::testing

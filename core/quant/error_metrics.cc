#include "core/quant/error_metrics.h"

#include <cmath>
#include <vector>

namespace lowbit {

namespace {

// Accumulates ||w - w_hat||² and ||w||² over n elements, in double.
void Accumulate(const float* w, const float* w_hat, int64_t n, double* diff, double* norm) {
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(w[i]) - static_cast<double>(w_hat[i]);
    *diff += d * d;
    *norm += static_cast<double>(w[i]) * static_cast<double>(w[i]);
  }
}

double Ratio(double diff, double norm) {
  if (norm == 0.0) return diff == 0.0 ? 0.0 : INFINITY;
  return std::sqrt(diff / norm);
}

}  // namespace

double RelativeFrobeniusError(const Matrix& w, const Matrix& w_hat) {
  double diff = 0.0, norm = 0.0;
  Accumulate(w.data.data(), w_hat.data.data(), static_cast<int64_t>(w.data.size()), &diff, &norm);
  return Ratio(diff, norm);
}

double RelativeFrobeniusError(const Matrix& w, const QuantizedLayer& q) {
  double diff = 0.0, norm = 0.0;
  std::vector<float> row(static_cast<size_t>(w.cols));
  for (int64_t r = 0; r < w.rows; ++r) {
    DequantizeRow(q, r, row.data());
    Accumulate(w.row(r), row.data(), w.cols, &diff, &norm);
  }
  return Ratio(diff, norm);
}

}  // namespace lowbit

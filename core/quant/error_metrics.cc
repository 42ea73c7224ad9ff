#include "core/quant/error_metrics.h"

#include <cmath>

namespace lowbit {

double RelativeFrobeniusError(const Matrix& w, const Matrix& w_hat) {
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < w.data.size(); ++i) {
    const double d = static_cast<double>(w.data[i]) - static_cast<double>(w_hat.data[i]);
    diff += d * d;
    norm += static_cast<double>(w.data[i]) * static_cast<double>(w.data[i]);
  }
  if (norm == 0.0) return diff == 0.0 ? 0.0 : INFINITY;
  return std::sqrt(diff / norm);
}

}  // namespace lowbit

// Synthetic layer inputs for calibrated quantizer tests: correlated channels, a few of them outliers, and
// the output error measured directly on those inputs (not through H), as an independent check.
#ifndef LOWBIT_TESTS_TEST_UTIL_CALIBRATION_INPUTS_H_
#define LOWBIT_TESTS_TEST_UTIL_CALIBRATION_INPUTS_H_

#include <cstdint>
#include <vector>

#include "core/quant/gptq.h"
#include "core/tensor/tensor.h"

namespace lowbit::testing {

struct LayerInputs {
  int64_t n = 0, cols = 0;
  std::vector<float> x;     ///< n * cols, row-major
  CalibrationStats stats;   ///< accumulated from x with AccumulateHessian
};

// x = z·A with A = I + noise/√cols; channels in `outliers` scaled by `outlier_scale`.
LayerInputs CorrelatedInputs(int64_t cols, int64_t n, uint32_t seed, const std::vector<int64_t>& outliers = {},
                             float outlier_scale = 1.0f);

// Σ_t ‖W x_t − Ŵ x_t‖², in double.
double OutputError(const Matrix& w, const Matrix& w_hat, const LayerInputs& inputs);

Matrix RandomMatrix(int64_t rows, int64_t cols, uint32_t seed, float scale = 0.05f);

}  // namespace lowbit::testing

#endif  // LOWBIT_TESTS_TEST_UTIL_CALIBRATION_INPUTS_H_

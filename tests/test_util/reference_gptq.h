// GPTQ written straight from the paper for tests: double precision, column by column, no blocking or lazy
// updates, its own Cholesky and inverse; lowbit's grid conventions (FindGrid, QuantizeValue) on top.
#ifndef LOWBIT_TESTS_TEST_UTIL_REFERENCE_GPTQ_H_
#define LOWBIT_TESTS_TEST_UTIL_REFERENCE_GPTQ_H_

#include <vector>

#include "core/quant/gptq.h"
#include "core/quant/quantized_tensor.h"

namespace lowbit::testing {

using Dense = std::vector<std::vector<double>>;

Dense Cholesky(const Dense& a);  // lower L with a = L Lᵀ
Dense Inverse(const Dense& a);   // Gauss-Jordan

// Asymmetric GPTQ of `w` with damping 0.01 of the mean diagonal, group size g, optionally act-order.
QuantizedTensor ReferenceGptq(const Matrix& w, const CalibrationStats& stats, int bits, int64_t g, bool act_order);

// The fraction of equal codes.
double CodeAgreement(const QuantizedTensor& a, const QuantizedTensor& b);

}  // namespace lowbit::testing

#endif  // LOWBIT_TESTS_TEST_UTIL_REFERENCE_GPTQ_H_

// Reconstruction error of a quantized layer, computed in one place for every method.
#ifndef LOWBIT_CORE_QUANT_ERROR_METRICS_H_
#define LOWBIT_CORE_QUANT_ERROR_METRICS_H_

#include "core/quant/quantized_tensor.h"
#include "core/tensor/tensor.h"

namespace lowbit {

// ||W − Ŵ||_F / ||W||_F, accumulated in double; 0 when W and Ŵ are both zero. Shapes must match.
double RelativeFrobeniusError(const Matrix& w, const Matrix& w_hat);
// The same for a quantized tensor, dequantized one row at a time (no full-size copy).
double RelativeFrobeniusError(const Matrix& w, const QuantizedLayer& q);

}  // namespace lowbit

#endif  // LOWBIT_CORE_QUANT_ERROR_METRICS_H_

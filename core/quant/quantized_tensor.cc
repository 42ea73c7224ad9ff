#include "core/quant/quantized_tensor.h"

namespace lowbit {

void QuantizedTensor::DequantizeRow(int64_t r, float* out) const {
  const int64_t groups = num_groups();
  const uint8_t* code = codes.data() + r * cols;
  if (!g_idx.empty()) {
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t g = r * groups + g_idx[c];
      out[c] = scales[g] * (static_cast<float>(code[c]) - static_cast<float>(zeros[g]));
    }
    return;
  }
  for (int64_t g = 0; g < groups; ++g) {
    const float scale = scales[r * groups + g];
    const float zero = static_cast<float>(zeros[r * groups + g]);
    const int64_t end = std::min(cols, (g + 1) * group_size);
    for (int64_t c = g * group_size; c < end; ++c) out[c] = scale * (static_cast<float>(code[c]) - zero);
  }
}

Matrix QuantizedTensor::Dequantize() const {
  Matrix w{rows, cols, std::vector<float>(static_cast<size_t>(rows * cols))};
  for (int64_t r = 0; r < rows; ++r) DequantizeRow(r, w.row(r));
  return w;
}

double QuantizedTensor::BitsPerWeight() const {
  const double weights = static_cast<double>(rows) * static_cast<double>(cols);
  const double group_bits = static_cast<double>(rows) * static_cast<double>(num_groups()) * (16.0 + bits);
  return (weights * bits + group_bits) / weights;
}

}  // namespace lowbit

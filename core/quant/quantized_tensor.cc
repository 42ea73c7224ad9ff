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

namespace lowbit {

void CodebookTensor::DequantizeRow(int64_t r, float* out) const {
  if (along_rows) {
    const uint16_t* code = codes.data() + (r / dim) * cols;
    const int64_t j = r % dim;
    const float scale = row_scales.empty() ? 1.0f : row_scales[r];
    for (int64_t c = 0; c < cols; ++c) out[c] = scale * centroid(tile_of(r, c), code[c])[j];
    return;
  }
  const int64_t vectors = cols / dim;
  const uint16_t* code = codes.data() + r * vectors;
  const float scale = row_scales.empty() ? 1.0f : row_scales[r];
  for (int64_t v = 0; v < vectors; ++v) {
    const float* c = centroid(tile_of(r, v * dim), code[v]);
    for (int j = 0; j < dim; ++j) out[v * dim + j] = scale * c[j];
  }
}

double CodebookTensor::BitsPerWeight() const {
  const double weights = static_cast<double>(rows) * static_cast<double>(cols);
  const double value_bits = storage == Storage::kF16 ? 16.0 : 8.0;
  double bits = static_cast<double>(rows) * static_cast<double>(cols) / dim * index_bits;
  bits += static_cast<double>(tiles()) * static_cast<double>(entries() * dim) * value_bits;
  if (storage == Storage::kInt8) bits += static_cast<double>(tiles()) * 16.0;
  bits += static_cast<double>(row_scales.size()) * 16.0;
  return bits / weights;
}

void OneBitTensor::DequantizeRow(int64_t r, float* out) const {
  const uint8_t* sign = signs.data() + r * cols;
  for (int64_t c = 0; c < cols; ++c) out[c] = (sign[c] ? a[r] : -a[r]) * b[c];
}

double OneBitTensor::BitsPerWeight() const {
  const double weights = static_cast<double>(rows) * static_cast<double>(cols);
  return (weights + 16.0 * static_cast<double>(rows + cols)) / weights;
}

void GgmlTensor::DequantizeRow(int64_t r, float* out) const {
  const size_t row_bytes = TraitsOf(type).RowBytes(cols);
  DequantizeGgmlRow(type, blocks.data() + static_cast<size_t>(r) * row_bytes, cols, out);
}

void DequantizeRow(const QuantizedLayer& layer, int64_t row, float* out) {
  std::visit([&](const auto& t) { t.DequantizeRow(row, out); }, layer);
}

Matrix Dequantize(const QuantizedLayer& layer) {
  const int64_t rows = std::visit([](const auto& t) { return t.rows; }, layer);
  const int64_t cols = std::visit([](const auto& t) { return t.cols; }, layer);
  Matrix w{rows, cols, std::vector<float>(static_cast<size_t>(rows * cols))};
  for (int64_t r = 0; r < rows; ++r) DequantizeRow(layer, r, w.row(r));
  return w;
}

double BitsPerWeight(const QuantizedLayer& layer) {
  return std::visit([](const auto& t) { return t.BitsPerWeight(); }, layer);
}

}  // namespace lowbit

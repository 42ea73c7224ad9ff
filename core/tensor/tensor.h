// In-memory tensors: raw checkpoint bytes as read, and the float32 matrix quantizers work on.
#ifndef LOWBIT_CORE_TENSOR_TENSOR_H_
#define LOWBIT_CORE_TENSOR_TENSOR_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/tensor/dtype.h"

namespace lowbit {

// Number of elements of a shape (1 for a scalar).
int64_t NumElements(const std::vector<int64_t>& shape);
// "[64, 172]"
std::string ShapeString(const std::vector<int64_t>& shape);

// A tensor exactly as stored: dtype, shape and little-endian bytes.
struct Tensor {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::string bytes;  ///< little-endian element data, NumElements(shape) * DTypeSize(dtype) bytes
};

// A dense row-major float32 matrix. For a linear layer: rows = output features, cols = input features,
// the layout of torch.nn.Linear.weight.
struct Matrix {
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<float> data;  ///< rows * cols

  float* row(int64_t r) { return data.data() + r * cols; }
  const float* row(int64_t r) const { return data.data() + r * cols; }
};

// Widens a float tensor (F32/F16/BF16) to a float32 matrix: 2-D tensors keep their shape, 1-D
// become one row. INVALID_ARGUMENT for other dtypes or ranks, naming the tensor.
absl::StatusOr<Matrix> ToMatrix(const Tensor& tensor);

// Fails with INVALID_ARGUMENT naming `what` and the first offending index if any element is NaN or Inf.
absl::Status CheckFinite(const float* data, int64_t n, absl::string_view what);

}  // namespace lowbit

#endif  // LOWBIT_CORE_TENSOR_TENSOR_H_

#include "core/tensor/tensor.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace lowbit {

int64_t NumElements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::StatusOr<Matrix> ToMatrix(const Tensor& tensor) {
  if (!IsFloatDType(tensor.dtype)) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", tensor.name, " has dtype ",
                                                   DTypeName(tensor.dtype), ", not a float type"));
  }
  if (tensor.shape.empty() || tensor.shape.size() > 2) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", tensor.name, " has shape ",
                                                   ShapeString(tensor.shape), ", not a matrix"));
  }
  Matrix m;
  m.rows = tensor.shape.size() == 2 ? tensor.shape[0] : 1;
  m.cols = tensor.shape.back();
  const size_t n = static_cast<size_t>(m.rows * m.cols);
  if (tensor.bytes.size() != n * DTypeSize(tensor.dtype)) {
    return absl::DataLossError(absl::StrCat("tensor ", tensor.name, " holds ", tensor.bytes.size(),
                                            " bytes, its shape needs ", n * DTypeSize(tensor.dtype)));
  }
  m.data.resize(n);
  ConvertToF32(tensor.dtype, tensor.bytes.data(), n, m.data.data());
  return m;
}

absl::Status CheckFinite(const float* data, int64_t n, absl::string_view what) {
  // Fast scan on exponent bits (vectorizes); the slow loop below runs only to name the culprit.
  uint32_t all_ones_exponent = 0;
  for (int64_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, data + i, sizeof bits);
    all_ones_exponent |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
  }
  if (all_ones_exponent == 0) return absl::OkStatus();
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(data[i])) {
      return absl::InvalidArgumentError(absl::StrCat(what, " has a non-finite value (", data[i],
                                                     ") at element ", i));
    }
  }
  return absl::OkStatus();
}

}  // namespace lowbit

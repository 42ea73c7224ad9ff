#include "core/pack/awq.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/tensor/dtype.h"
#include "core/util/status_macros.h"

namespace lowbit {
namespace {

int64_t RoundUp8(int64_t n) { return (n + 7) / 8 * 8; }


// Packs a row of `n` 4-bit values (one per output column) into n_padded / 8 words in AWQ order.
void PackRow(const int32_t* values, int64_t n, int64_t words, uint32_t* out) {
  for (int64_t j = 0; j < words; ++j) {
    uint32_t word = 0;
    for (int i = 0; i < 8; ++i) {
      const int64_t col = 8 * j + kAwqOrder[i];
      if (col < n) word |= static_cast<uint32_t>(values[col] & 15) << (4 * i);
    }
    out[j] = word;
  }
}

int32_t UnpackAt(const uint32_t* words, int64_t col) {
  const int64_t j = col / 8;
  for (int i = 0; i < 8; ++i) {
    if (kAwqOrder[i] == col % 8) return static_cast<int32_t>((words[j] >> (4 * i)) & 15);
  }
  return 0;
}

}  // namespace

std::string AwqShapeProblem(int64_t rows, int64_t cols, int64_t group_size) {
  if (rows % 8 != 0) return absl::StrCat("its output size ", rows, " is not a multiple of 8");
  const int64_t g = group_size > 0 ? group_size : cols;
  if (cols % g != 0) return absl::StrCat("its input size ", cols, " is not a multiple of the group size ", g);
  return "";
}

std::vector<TensorSpec> AwqTensorSpecs(const std::string& prefix, int64_t rows, int64_t cols, int64_t group_size) {
  const int64_t g = group_size == -1 || group_size > cols ? cols : group_size;
  const int64_t groups = (cols + g - 1) / g;
  return {
      {prefix + ".qweight", DType::kI32, {cols, RoundUp8(rows) / 8}},
      {prefix + ".qzeros", DType::kI32, {groups, RoundUp8(rows) / 8}},
      {prefix + ".scales", DType::kF16, {groups, rows}},
  };
}

absl::StatusOr<std::vector<Tensor>> PackAwq(const std::string& prefix, const QuantizedTensor& q) {
  if (q.bits != 4) return absl::InvalidArgumentError(absl::StrCat("the AWQ layout packs 4-bit codes, not ", q.bits));
  if (!q.g_idx.empty()) return absl::InvalidArgumentError("the AWQ layout has no act-order permutation (g_idx)");
  const std::vector<TensorSpec> specs = AwqTensorSpecs(prefix, q.rows, q.cols, q.group_size);
  const int64_t words = specs[0].shape[1], groups = q.num_groups();
  std::vector<Tensor> out;
  for (const TensorSpec& s : specs) {
    out.push_back({s.name, s.dtype, s.shape, std::string(static_cast<size_t>(NumElements(s.shape)) * DTypeSize(s.dtype), '\0')});
  }
  std::vector<int32_t> column(static_cast<size_t>(q.rows));
  uint32_t* qweight = reinterpret_cast<uint32_t*>(out[0].bytes.data());
  for (int64_t c = 0; c < q.cols; ++c) {  // input row c of qweight: the codes of every output for input c
    for (int64_t r = 0; r < q.rows; ++r) column[r] = q.codes[r * q.cols + c];
    PackRow(column.data(), q.rows, words, qweight + c * words);
  }
  uint32_t* qzeros = reinterpret_cast<uint32_t*>(out[1].bytes.data());
  uint16_t* scales = reinterpret_cast<uint16_t*>(out[2].bytes.data());
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t r = 0; r < q.rows; ++r) {
      column[r] = q.zeros[r * groups + g];
      scales[g * q.rows + r] = F32ToF16(q.scales[r * groups + g]);  // transposed: [groups, out] from [out, groups]
    }
    PackRow(column.data(), q.rows, words, qzeros + g * words);
  }
  return out;
}

absl::StatusOr<QuantizedTensor> UnpackAwq(const Tensor& qweight, const Tensor& qzeros, const Tensor& scales,
                                          int64_t group_size) {
  if (qweight.shape.size() != 2 || scales.shape.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat("tensors ", qweight.name, " and ", scales.name, " must be matrices"));
  }
  QuantizedTensor q;
  q.cols = qweight.shape[0];
  q.rows = scales.shape[1];
  q.bits = 4;
  q.group_size = group_size == -1 || group_size > q.cols ? q.cols : group_size;
  if (q.group_size <= 0) return absl::InvalidArgumentError("group_size must be positive");
  const std::vector<TensorSpec> specs = AwqTensorSpecs("", q.rows, q.cols, q.group_size);
  RETURN_IF_ERROR(ExpectSpec(qweight, specs[0]));
  RETURN_IF_ERROR(ExpectSpec(qzeros, specs[1]));
  RETURN_IF_ERROR(ExpectSpec(scales, specs[2]));
  const int64_t words = specs[0].shape[1], groups = q.num_groups();
  q.codes.resize(static_cast<size_t>(q.rows * q.cols));
  q.scales.resize(static_cast<size_t>(q.rows * groups));
  q.zeros.resize(q.scales.size());
  std::vector<uint32_t> row(static_cast<size_t>(words));
  for (int64_t c = 0; c < q.cols; ++c) {
    std::memcpy(row.data(), qweight.bytes.data() + c * words * 4, static_cast<size_t>(words) * 4);
    for (int64_t r = 0; r < q.rows; ++r) q.codes[r * q.cols + c] = static_cast<uint8_t>(UnpackAt(row.data(), r));
  }
  for (int64_t g = 0; g < groups; ++g) {
    std::memcpy(row.data(), qzeros.bytes.data() + g * words * 4, static_cast<size_t>(words) * 4);
    for (int64_t r = 0; r < q.rows; ++r) {
      q.zeros[r * groups + g] = UnpackAt(row.data(), r);
      uint16_t h;
      std::memcpy(&h, scales.bytes.data() + (g * q.rows + r) * 2, 2);
      q.scales[r * groups + g] = F16ToF32(h);
    }
  }
  return q;
}

nlohmann::json AwqQuantizeConfig(int64_t group_size, bool zero_point, const std::vector<std::string>& not_converted) {
  nlohmann::json c = {{"quant_method", "awq"}, {"bits", 4}, {"w_bit", 4}, {"group_size", group_size},
                      {"q_group_size", group_size}, {"zero_point", zero_point}, {"version", "gemm"}};
  if (!not_converted.empty()) c["modules_to_not_convert"] = not_converted;
  return c;
}

}  // namespace lowbit

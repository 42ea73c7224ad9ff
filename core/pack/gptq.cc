#include "core/pack/gptq.h"

#include <algorithm>
#include <cstring>

#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/util/status_macros.h"
#include "core/tensor/dtype.h"

namespace lowbit {
namespace {

int64_t RoundUp32(int64_t n) { return (n + 31) / 32 * 32; }

// Writes `value` (bits wide) at bit position `pos` of a little-endian stream of 32-bit words that are
// `stride` words apart in memory (a column of a row-major matrix).
inline void PutBits(uint32_t* words, int64_t stride, int64_t pos, uint32_t value, int bits) {
  const int64_t word = pos >> 5;
  const int shift = static_cast<int>(pos & 31);
  words[word * stride] |= value << shift;
  if (shift + bits > 32) words[(word + 1) * stride] |= value >> (32 - shift);
}

inline uint32_t GetBits(const uint32_t* words, int64_t stride, int64_t pos, int bits) {
  const int64_t word = pos >> 5;
  const int shift = static_cast<int>(pos & 31);
  uint64_t v = words[word * stride] >> shift;
  if (shift + bits > 32) v |= static_cast<uint64_t>(words[(word + 1) * stride]) << (32 - shift);
  return static_cast<uint32_t>(v) & ((1u << bits) - 1u);
}

// Packs `n` (<= 32) codes of one output row into `bits` words of the stream. Widths dividing 32 take
// the direct path (whole codes per word, unrolled per width); 3-bit codes go through PutBits.
template <int kBits>
void PackAligned(const uint8_t* codes, int64_t n, uint32_t* words) {
  constexpr int kPerWord = 32 / kBits;
  for (int w = 0; w < kBits; ++w) {
    uint32_t word = 0;
    for (int k = 0; k < kPerWord; ++k) {
      const int64_t i = w * kPerWord + k;
      if (i < n) word |= static_cast<uint32_t>(codes[i]) << (k * kBits);
    }
    words[w] = word;
  }
}

void PackCodes(const uint8_t* codes, int64_t n, int bits, uint32_t* words) {
  switch (bits) {
    case 2: return PackAligned<2>(codes, n, words);
    case 4: return PackAligned<4>(codes, n, words);
    case 8: return PackAligned<8>(codes, n, words);
    default:
      std::fill(words, words + bits, 0u);
      for (int64_t i = 0; i < n; ++i) PutBits(words, 1, i * bits, codes[i], bits);
  }
}

Tensor MakeTensor(const TensorSpec& spec) {
  Tensor t{spec.name, spec.dtype, spec.shape, {}};
  t.bytes.assign(static_cast<size_t>(NumElements(spec.shape)) * DTypeSize(spec.dtype), '\0');
  return t;
}

template <typename T>
T* As(Tensor& t) { return reinterpret_cast<T*>(t.bytes.data()); }
template <typename T>
const T* As(const Tensor& t) { return reinterpret_cast<const T*>(t.bytes.data()); }


}  // namespace

bool GptqSupportsBits(int bits) { return bits == 2 || bits == 3 || bits == 4 || bits == 8; }

GptqZeros GptqZerosFor(bool symmetric) { return symmetric ? GptqZeros::kV1 : GptqZeros::kV2; }

const char* GptqCheckpointFormat(GptqZeros zeros) { return zeros == GptqZeros::kV1 ? "gptq" : "gptq_v2"; }

GptqZeros GptqZerosOf(const nlohmann::json& qc) {
  for (const char* key : {"checkpoint_format", "format"}) {
    if (qc.is_object() && qc.contains(key) && qc[key].is_string()) {
      return qc[key].get<std::string>() == "gptq_v2" ? GptqZeros::kV2 : GptqZeros::kV1;
    }
  }
  return GptqZeros::kV1;
}

std::string GptqShapeProblem(int64_t rows, int64_t cols, int64_t group_size) {
  if (cols % 32 != 0) return absl::StrCat("its input size ", cols, " is not a multiple of 32");
  if (rows % 32 != 0) return absl::StrCat("its output size ", rows, " is not a multiple of 32");
  if (group_size > 0 && cols % group_size != 0) {
    return absl::StrCat("its input size ", cols, " is not a multiple of the group size ", group_size);
  }
  return "";
}

std::vector<TensorSpec> GptqTensorSpecs(const std::string& prefix, int64_t rows, int64_t cols, int bits,
                                        int64_t group_size) {
  const int64_t g = group_size == -1 || group_size > cols ? cols : group_size;
  const int64_t groups = (cols + g - 1) / g;
  return {
      {prefix + ".qweight", DType::kI32, {RoundUp32(cols) * bits / 32, rows}},
      {prefix + ".qzeros", DType::kI32, {groups, RoundUp32(rows) * bits / 32}},
      {prefix + ".scales", DType::kF16, {groups, rows}},
      {prefix + ".g_idx", DType::kI32, {cols}},
  };
}

absl::StatusOr<std::vector<Tensor>> PackGptq(const std::string& prefix, const QuantizedTensor& q, GptqZeros zeros) {
  if (!GptqSupportsBits(q.bits)) {
    return absl::InvalidArgumentError(absl::StrCat("the GPTQ layout has no ", q.bits, "-bit packing (2, 3, 4, 8)"));
  }
  const std::vector<TensorSpec> specs = GptqTensorSpecs(prefix, q.rows, q.cols, q.bits, q.group_size);
  Tensor qweight = MakeTensor(specs[0]), qzeros = MakeTensor(specs[1]), scales = MakeTensor(specs[2]),
         g_idx = MakeTensor(specs[3]);
  const int64_t out = q.rows, groups = q.num_groups();

  // qweight: column j is output feature j's bit stream over the input dim. Walk 32 inputs at a time so
  // each output row's codes are read contiguously.
  uint32_t* qw = As<uint32_t>(qweight);
  for (int64_t i0 = 0; i0 < q.cols; i0 += 32) {
    const int64_t n = std::min<int64_t>(32, q.cols - i0);
    uint32_t* block = qw + (i0 / 32) * q.bits * out;
    for (int64_t j = 0; j < out; ++j) {
      const uint8_t* codes = q.codes.data() + j * q.cols + i0;
      uint32_t words[8];
      PackCodes(codes, n, q.bits, words);
      for (int w = 0; w < q.bits; ++w) block[w * out + j] = words[w];
    }
  }
  uint32_t* qz = As<uint32_t>(qzeros);
  const int64_t qz_cols = specs[1].shape[1];
  uint16_t* sc = As<uint16_t>(scales);
  const uint32_t mask = (1u << q.bits) - 1u;
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t j = 0; j < out; ++j) {
      const int32_t stored = q.zeros[j * groups + g] - (zeros == GptqZeros::kV1 ? 1 : 0);
      if (stored < 0) {
        return absl::InvalidArgumentError("a zero point of 0 has no form in the v1 GPTQ format (zero - 1 would wrap); write gptq_v2");
      }
      PutBits(qz + g * qz_cols, 1, j * q.bits, static_cast<uint32_t>(stored) & mask, q.bits);
      sc[g * out + j] = F32ToF16(q.scales[j * groups + g]);
    }
  }
  int32_t* gi = As<int32_t>(g_idx);
  for (int64_t i = 0; i < q.cols; ++i) gi[i] = static_cast<int32_t>(q.group_of(i));

  std::vector<Tensor> tensors;
  tensors.push_back(std::move(qweight));
  tensors.push_back(std::move(qzeros));
  tensors.push_back(std::move(scales));
  tensors.push_back(std::move(g_idx));
  return tensors;
}

absl::StatusOr<QuantizedTensor> UnpackGptq(const Tensor& qweight, const Tensor& qzeros, const Tensor& scales,
                                           const Tensor& g_idx, int bits, int64_t rows, int64_t cols, GptqZeros zeros) {
  if (!GptqSupportsBits(bits)) return absl::InvalidArgumentError(absl::StrCat("unsupported GPTQ bits ", bits));
  if (g_idx.dtype != DType::kI32 || g_idx.shape != std::vector<int64_t>{cols}) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", g_idx.name, " must be I32 [", cols, "]"));
  }
  // The group count is the scales' first dimension. Every group but the last is full, so the group size
  // is the number of columns in group 0. g_idx may be sequential (col / group_size) or, after act-order,
  // any assignment.
  const int32_t* gi = As<int32_t>(g_idx);
  if (scales.shape.size() != 2 || scales.shape[0] <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", scales.name, " must be [groups, out]"));
  }
  const int64_t groups_stored = scales.shape[0];
  int64_t group_size = 0;
  for (int64_t i = 0; i < cols; ++i) group_size += gi[i] == 0 ? 1 : 0;
  if (groups_stored == 1 || group_size == 0) group_size = cols;
  bool sequential = true;
  for (int64_t i = 0; i < cols; ++i) {
    if (gi[i] < 0 || gi[i] >= groups_stored) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", g_idx.name, " names group ", gi[i], " of ", groups_stored));
    }
    sequential = sequential && gi[i] == i / group_size;
  }
  const std::vector<TensorSpec> specs = GptqTensorSpecs("", rows, cols, bits, group_size);
  RETURN_IF_ERROR(ExpectSpec(qweight, specs[0]));
  RETURN_IF_ERROR(ExpectSpec(qzeros, specs[1]));
  RETURN_IF_ERROR(ExpectSpec(scales, specs[2]));

  QuantizedTensor q;
  q.rows = rows;
  q.cols = cols;
  q.bits = bits;
  q.group_size = group_size;
  if (!sequential) q.g_idx.assign(gi, gi + cols);
  const int64_t groups = q.num_groups();
  q.codes.resize(static_cast<size_t>(rows * cols));
  q.scales.resize(static_cast<size_t>(rows * groups));
  q.zeros.resize(static_cast<size_t>(rows * groups));
  const uint32_t* qw = As<uint32_t>(qweight);
  for (int64_t j = 0; j < rows; ++j) {
    for (int64_t i = 0; i < cols; ++i) q.codes[j * cols + i] = static_cast<uint8_t>(GetBits(qw + j, rows, i * bits, bits));
  }
  const uint32_t* qz = As<uint32_t>(qzeros);
  const uint16_t* sc = As<uint16_t>(scales);
  const int64_t qz_cols = specs[1].shape[1];
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t j = 0; j < rows; ++j) {
      q.zeros[j * groups + g] = static_cast<int32_t>(GetBits(qz + g * qz_cols, 1, j * bits, bits)) + (zeros == GptqZeros::kV1 ? 1 : 0);
      q.scales[j * groups + g] = F16ToF32(sc[g * rows + j]);
    }
  }
  q.symmetric = true;
  for (int32_t z : q.zeros) q.symmetric = q.symmetric && z == (1 << (bits - 1));
  return q;
}

int GptqCodeBits(int64_t qweight_rows, int64_t cols) { return static_cast<int>(qweight_rows * 32 / RoundUp32(cols)); }

nlohmann::json GptqQuantizeConfig(const GptqConfigFields& f) {
  const char* format = GptqCheckpointFormat(GptqZerosFor(f.symmetric));
  nlohmann::json c = {
      {"quant_method", "gptq"},
      {"bits", f.bits},
      {"group_size", f.group_size},
      {"desc_act", f.desc_act},
      {"sym", f.symmetric},
      {"lm_head", f.lm_head},
      {"true_sequential", true},
      {"static_groups", f.static_groups},
      {"damp_percent", f.damp_percent},
      // transformers/optimum and vLLM read checkpoint_format; GPTQModel reads format (and checkpoint_format
      // as its deprecated alias).
      {"checkpoint_format", format},
      {"format", format},
      {"pack_dtype", "int32"},
      // GPTQModel's META_FIELD: the tool that quantized, and how.
      {"meta", {{"quantizer", {"lowbit:" LOWBIT_VERSION}},
                {"damp_percent", f.damp_percent},
                {"static_groups", f.static_groups},
                {"true_sequential", true}}},
  };
  if (!f.dynamic.is_null() && !f.dynamic.empty()) c["dynamic"] = f.dynamic;
  if (!f.modules_in_block.is_null()) c["modules_in_block_to_quantize"] = f.modules_in_block;
  return c;
}

}  // namespace lowbit

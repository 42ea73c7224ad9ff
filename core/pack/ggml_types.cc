#include "core/pack/ggml_types.h"

#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/tensor/dtype.h"

namespace lowbit {
namespace {

constexpr int64_t QK = 32;  // values per block of the legacy types (ggml-common.h QK4_0 ... QK8_0)

// ggml-common.h's blocks.
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[QK / 2];  // element j in the low nibble of qs[j], element j + 16 in the high one
};
struct BlockQ4_1 {
  uint16_t d, m;
  uint8_t qs[QK / 2];
};
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];       // bit j: the fifth bit of element j
  uint8_t qs[QK / 2];
};
struct BlockQ5_1 {
  uint16_t d, m;
  uint8_t qh[4];
  uint8_t qs[QK / 2];
};
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[QK];
};
static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20 && sizeof(BlockQ5_0) == 22 && sizeof(BlockQ5_1) == 24 &&
              sizeof(BlockQ8_0) == 34, "ggml-common.h block sizes");

// A 16-bit value as bytes of its own: a union with the blocks would pad them.
void PutU16(uint16_t v, uint8_t* out) { std::memcpy(out, &v, 2); }

uint16_t BF16Of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return static_cast<uint16_t>((u + 0x7FFF + ((u >> 16) & 1)) >> 16);  // round to nearest even
}

}  // namespace

const std::vector<GgmlTypeTraits>& GgmlTypes() {
  static const std::vector<GgmlTypeTraits> types = {
      {GgmlType::kF32, "F32", 1, 4, 0, false},
      {GgmlType::kF16, "F16", 1, 2, 0, false},
      {GgmlType::kBF16, "BF16", 1, 2, 0, false},
      {GgmlType::kQ8_0, "Q8_0", QK, sizeof(BlockQ8_0), 8, true},
      {GgmlType::kQ4_0, "Q4_0", QK, sizeof(BlockQ4_0), 4, true},
      {GgmlType::kQ4_1, "Q4_1", QK, sizeof(BlockQ4_1), 4, false},
      {GgmlType::kQ5_0, "Q5_0", QK, sizeof(BlockQ5_0), 5, true},
      {GgmlType::kQ5_1, "Q5_1", QK, sizeof(BlockQ5_1), 5, false},
  };
  return types;
}

const GgmlTypeTraits* FindGgmlType(absl::string_view name) {
  for (const GgmlTypeTraits& t : GgmlTypes()) {
    if (absl::EqualsIgnoreCase(t.name, name)) return &t;
  }
  return nullptr;
}

const GgmlTypeTraits& TraitsOf(GgmlType type) {
  for (const GgmlTypeTraits& t : GgmlTypes()) {
    if (t.type == type) return t;
  }
  return GgmlTypes().front();
}

absl::StatusOr<std::string> PackGgmlRows(const QuantizedTensor& q, const GgmlTypeTraits& t,
                                         const std::vector<int64_t>& row_order) {
  if (!t.quantized() || q.bits != t.bits || q.group_size != t.block_size || q.cols % t.block_size != 0 || !q.g_idx.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(t.name, " holds ", t.bits, "-bit codes in groups of ", t.block_size,
                                                   " sequential columns; got ", q.bits, "-bit, groups of ", q.group_size,
                                                   " over ", q.cols, q.g_idx.empty() ? "" : ", act-order"));
  }
  const int32_t mid = 1 << (t.bits - 1);
  const int64_t blocks = q.cols / QK, groups = q.num_groups();
  std::string out(static_cast<size_t>(q.rows) * t.RowBytes(q.cols), '\0');
  uint8_t* p = reinterpret_cast<uint8_t*>(out.data());
  for (int64_t i = 0; i < q.rows; ++i) {
    const int64_t r = row_order.empty() ? i : row_order[static_cast<size_t>(i)];
    for (int64_t b = 0; b < blocks; ++b, p += t.block_bytes) {
      const uint8_t* codes = q.codes.data() + r * q.cols + b * QK;
      const float scale = q.scales[static_cast<size_t>(r * groups + b)];
      const int32_t zero = q.zeros[static_cast<size_t>(r * groups + b)];
      if (t.symmetric && zero != mid) {
        return absl::InvalidArgumentError(absl::StrCat(t.name, " is a symmetric grid (zero ", mid, "); a group has zero ", zero));
      }
      const uint16_t d = F32ToF16(scale), m = F32ToF16(-scale * static_cast<float>(zero));
      switch (t.type) {
        case GgmlType::kQ8_0: {
          PutU16(d, p);
          for (int j = 0; j < QK; ++j) p[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(codes[j] - mid));
          break;
        }
        case GgmlType::kQ4_0:
        case GgmlType::kQ4_1: {
          const size_t head = t.type == GgmlType::kQ4_0 ? 2 : 4;
          PutU16(d, p);
          if (head == 4) PutU16(m, p + 2);
          for (int j = 0; j < QK / 2; ++j) p[head + j] = static_cast<uint8_t>((codes[j] & 15) | ((codes[j + 16] & 15) << 4));
          break;
        }
        case GgmlType::kQ5_0:
        case GgmlType::kQ5_1: {
          const size_t head = t.type == GgmlType::kQ5_0 ? 2 : 4;
          PutU16(d, p);
          if (head == 4) PutU16(m, p + 2);
          uint32_t qh = 0;
          for (int j = 0; j < QK; ++j) qh |= static_cast<uint32_t>((codes[j] >> 4) & 1) << j;
          std::memcpy(p + head, &qh, 4);
          for (int j = 0; j < QK / 2; ++j) p[head + 4 + j] = static_cast<uint8_t>((codes[j] & 15) | ((codes[j + 16] & 15) << 4));
          break;
        }
        default:
          return absl::InternalError("not a quantized ggml type");
      }
    }
  }
  return out;
}

std::string EncodeFloatRows(const float* values, int64_t rows, int64_t cols, GgmlType type,
                            const std::vector<int64_t>& row_order) {
  const GgmlTypeTraits& t = TraitsOf(type);
  std::string out(static_cast<size_t>(rows * cols) * t.block_bytes, '\0');
  char* p = out.data();
  for (int64_t i = 0; i < rows; ++i) {
    const float* row = values + (row_order.empty() ? i : row_order[static_cast<size_t>(i)]) * cols;
    for (int64_t c = 0; c < cols; ++c, p += t.block_bytes) {
      if (type == GgmlType::kF32) {
        std::memcpy(p, &row[c], 4);
      } else {
        const uint16_t h = type == GgmlType::kF16 ? F32ToF16(row[c]) : BF16Of(row[c]);
        std::memcpy(p, &h, 2);
      }
    }
  }
  return out;
}

void DequantizeGgmlRow(GgmlType type, const char* data, int64_t n, float* out) {
  const GgmlTypeTraits& t = TraitsOf(type);
  const uint8_t* p = reinterpret_cast<const uint8_t*>(data);
  auto f16 = [](const uint8_t* at) {
    uint16_t h;
    std::memcpy(&h, at, 2);
    return F16ToF32(h);
  };
  if (!t.quantized()) {
    for (int64_t i = 0; i < n; ++i) {
      if (type == GgmlType::kF32) {
        std::memcpy(&out[i], p + 4 * i, 4);
      } else if (type == GgmlType::kF16) {
        out[i] = f16(p + 2 * i);
      } else {
        uint32_t u = static_cast<uint32_t>(p[2 * i] | (p[2 * i + 1] << 8)) << 16;
        std::memcpy(&out[i], &u, 4);
      }
    }
    return;
  }
  for (int64_t b = 0; b < n / QK; ++b, p += t.block_bytes) {
    float* x = out + b * QK;
    const float d = f16(p);
    switch (type) {
      case GgmlType::kQ8_0:
        for (int j = 0; j < QK; ++j) x[j] = d * static_cast<float>(static_cast<int8_t>(p[2 + j]));
        break;
      case GgmlType::kQ4_0:
        for (int j = 0; j < QK / 2; ++j) {
          x[j] = d * static_cast<float>((p[2 + j] & 15) - 8);
          x[j + 16] = d * static_cast<float>((p[2 + j] >> 4) - 8);
        }
        break;
      case GgmlType::kQ4_1: {
        const float m = f16(p + 2);
        for (int j = 0; j < QK / 2; ++j) {
          x[j] = d * static_cast<float>(p[4 + j] & 15) + m;
          x[j + 16] = d * static_cast<float>(p[4 + j] >> 4) + m;
        }
        break;
      }
      case GgmlType::kQ5_0:
      case GgmlType::kQ5_1: {
        const bool with_min = type == GgmlType::kQ5_1;
        const size_t head = with_min ? 4 : 2;
        const float m = with_min ? f16(p + 2) : 0.0f;
        uint32_t qh;
        std::memcpy(&qh, p + head, 4);
        for (int j = 0; j < QK / 2; ++j) {
          const int lo = (p[head + 4 + j] & 15) | (((qh >> j) << 4) & 0x10);
          const int hi = (p[head + 4 + j] >> 4) | ((qh >> (j + 12)) & 0x10);
          x[j] = with_min ? d * static_cast<float>(lo) + m : d * static_cast<float>(lo - 16);
          x[j + 16] = with_min ? d * static_cast<float>(hi) + m : d * static_cast<float>(hi - 16);
        }
        break;
      }
      default:
        break;
    }
  }
}

}  // namespace lowbit

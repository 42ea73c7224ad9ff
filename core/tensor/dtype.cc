#include "core/tensor/dtype.h"

namespace lowbit {

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
      return 2;
    case DType::kI8:
    case DType::kU8:
      return 1;
  }
  return 0;
}

absl::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
    case DType::kI32: return "I32";
    case DType::kI8: return "I8";
    case DType::kU8: return "U8";
  }
  return "?";
}

std::optional<DType> ParseDType(absl::string_view name) {
  for (DType d : {DType::kF32, DType::kF16, DType::kBF16, DType::kI32, DType::kI8, DType::kU8}) {
    if (DTypeName(d) == name) return d;
  }
  return std::nullopt;
}

bool IsFloatDType(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kF16 || dtype == DType::kBF16;
}

void ConvertToF32(DType src, const void* data, size_t n, float* out) {
  switch (src) {
    case DType::kF32:
      std::memcpy(out, data, n * sizeof(float));
      return;
    case DType::kBF16: {
      // Unaligned-safe: checkpoint offsets are only guaranteed to be byte-aligned.
      const auto* bytes = static_cast<const uint8_t*>(data);
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, bytes + 2 * i, 2);
        out[i] = Bf16ToF32(h);
      }
      return;
    }
    case DType::kF16: {
      const auto* bytes = static_cast<const uint8_t*>(data);
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, bytes + 2 * i, 2);
        out[i] = F16ToF32(h);
      }
      return;
    }
    default:
      for (size_t i = 0; i < n; ++i) out[i] = 0.0f;  // callers check IsFloatDType first
      return;
  }
}

void ConvertFromF32(DType dst, const float* data, size_t n, void* out) {
  auto* bytes = static_cast<uint8_t*>(out);
  switch (dst) {
    case DType::kF32:
      std::memcpy(out, data, n * sizeof(float));
      return;
    case DType::kBF16:
      for (size_t i = 0; i < n; ++i) {
        const uint16_t h = F32ToBf16(data[i]);
        std::memcpy(bytes + 2 * i, &h, 2);
      }
      return;
    case DType::kF16:
      for (size_t i = 0; i < n; ++i) {
        const uint16_t h = F32ToF16(data[i]);
        std::memcpy(bytes + 2 * i, &h, 2);
      }
      return;
    default:
      return;
  }
}

}  // namespace lowbit

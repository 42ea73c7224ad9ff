// Element types of checkpoint tensors and exact conversions between the float formats.
//
// All float narrowing rounds to nearest, ties to even (the IEEE 754 default and what PyTorch does).
// NaN stays NaN (quiet, sign kept), infinities stay infinite, and values past the largest finite
// FP16 become infinity exactly as a hardware conversion would. Functions are pure and thread-safe.
#ifndef LOWBIT_CORE_TENSOR_DTYPE_H_
#define LOWBIT_CORE_TENSOR_DTYPE_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include "absl/strings/string_view.h"

namespace lowbit {

enum class DType { kF32, kF16, kBF16, kI32, kI8, kU8 };

// Bytes per element.
size_t DTypeSize(DType dtype);
// The safetensors spelling ("F32", "BF16", ...).
absl::string_view DTypeName(DType dtype);
// Parses a safetensors dtype string; nullopt for types lowbit does not read.
std::optional<DType> ParseDType(absl::string_view name);
// True for F32, F16 and BF16, the types a weight matrix may have.
bool IsFloatDType(DType dtype);

inline uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
inline float BitsToFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// BF16 is the top half of an F32, so widening is a shift.
inline float Bf16ToF32(uint16_t h) { return BitsToFloat(static_cast<uint32_t>(h) << 16); }

inline uint16_t F32ToBf16(float f) {
  uint32_t u = FloatBits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);  // quiet NaN
  // Adding 0x7fff plus the lowest kept bit rounds half to even; a carry into the exponent is exact.
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

inline float F16ToF32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return BitsToFloat(sign | 0x7f800000u | (mant << 13));  // Inf or NaN, payload kept
  if (exp != 0) return BitsToFloat(sign | ((exp + 112u) << 23) | (mant << 13));
  if (mant == 0) return BitsToFloat(sign);
  // Subnormal: renormalise so the leading one becomes implicit.
  int e = 113;
  while ((mant & 0x400u) == 0) {
    mant <<= 1;
    --e;
  }
  return BitsToFloat(sign | (static_cast<uint32_t>(e) << 23) | ((mant & 0x3ffu) << 13));
}

inline uint16_t F32ToF16(float f) {
  const uint32_t u = FloatBits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // Inf or NaN
    if (abs == 0x7f800000u) return sign | 0x7c00u;
    return sign | 0x7e00u | static_cast<uint16_t>((abs >> 13) & 0x3ffu);
  }
  if (abs >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 rounds to infinity
  if (abs < 0x38800000u) {
    // Result is subnormal (or zero): shift the mantissa with its implicit bit into place, then round.
    if (abs < 0x33000000u) return sign;  // below half the smallest subnormal: rounds to zero
    const uint32_t exp = abs >> 23;
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - exp;  // 14..24
    const uint32_t kept = mant >> shift;
    const uint32_t rest = mant & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1u);
    const uint32_t rounded = kept + ((rest > half || (rest == half && (kept & 1u))) ? 1u : 0u);
    return sign | static_cast<uint16_t>(rounded);
  }
  // Normal: rebias the exponent and round the 13 dropped bits half to even.
  uint32_t v = abs - 0x38000000u;
  v += 0x0fffu + ((v >> 13) & 1u);
  return sign | static_cast<uint16_t>(v >> 13);
}

// Rounds an F32 to the nearest F16 value and returns it as F32 (scales are stored in F16).
inline float RoundToF16(float f) { return F16ToF32(F32ToF16(f)); }

// Bulk conversions of `n` elements from raw little-endian storage into F32.
void ConvertToF32(DType src, const void* data, size_t n, float* out);
// Bulk narrowing from F32 into `dst` storage (F32, F16 or BF16).
void ConvertFromF32(DType dst, const float* data, size_t n, void* out);

}  // namespace lowbit

#endif  // LOWBIT_CORE_TENSOR_DTYPE_H_

#include "core/tensor/dtype.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

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

namespace {

#if defined(__x86_64__)
// F16C converts 8 values per instruction, rounding to nearest even like the scalar code. Compiled for
// F16C alone and chosen at run time, so the binary still runs on CPUs without it.
__attribute__((target("avx,f16c"))) void F16ToF32F16c(const uint8_t* in, size_t n, float* out) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 2 * i))));
  }
  for (; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, in + 2 * i, 2);
    out[i] = F16ToF32(h);
  }
}

__attribute__((target("avx,f16c"))) void F32ToF16F16c(const float* in, size_t n, uint8_t* out) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 2 * i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  for (; i < n; ++i) {
    const uint16_t h = F32ToF16(in[i]);
    std::memcpy(out + 2 * i, &h, 2);
  }
}

bool HasF16c() {
  // CPUID leaf 1, ECX: bit 28 AVX, bit 29 F16C (asked directly: clang 14 has no "f16c" cpu-supports name).
  static const bool has = [] {
    unsigned eax, ebx, ecx, edx;
    return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & (1u << 28)) && (ecx & (1u << 29));
  }();
  return has;
}
#else
bool HasF16c() { return false; }
#endif

}  // namespace

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
#if defined(__x86_64__)
      if (HasF16c()) return F16ToF32F16c(bytes, n, out);
#endif
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
#if defined(__x86_64__)
      if (HasF16c()) return F32ToF16F16c(data, n, bytes);
#endif
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

// Round-to-nearest (RTN) quantization on group-wise uniform grids, and the classic INT8 baselines.
//
// Grids follow GPTQ's conventions so the results pack losslessly into the GPTQ layout:
//   asymmetric: the group range [min(x, 0), max(x, 0)] spans codes 0..2^b−1, zero = round(−min/scale);
//   symmetric:  scale = 2·max|x| / (2^b − 1), zero = 2^(b−1).
// INT8 absmax uses the restricted symmetric grid of LLM.int8: scale = max|x| / 127, codes −127..127.
// Scales are rounded UP to FP16, so the stored grid still covers the group's range.
#ifndef LOWBIT_CORE_QUANT_RTN_H_
#define LOWBIT_CORE_QUANT_RTN_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "core/quant/quantized_tensor.h"
#include "core/tensor/tensor.h"

namespace lowbit {

enum class GridKind {
  kAsymmetric,           ///< zero-point grid
  kSymmetric,            ///< GPTQ's symmetric grid, zero = 2^(bits-1)
  kRestrictedSymmetric,  ///< absmax / (2^(bits-1) - 1), codes symmetric around the zero
};

struct RtnOptions {
  int bits = 4;              ///< 2..8
  int64_t group_size = 128;  ///< input columns per group; -1 = one group per output channel
  GridKind grid = GridKind::kAsymmetric;
  bool mse_clip = false;     ///< search a shrink factor of the range (GPTQ's `mse` option, norm 2.4)
};

// The smallest FP16 value >= v (v >= 0), so a stored scale still covers its range; the smallest subnormal
// for 0. INVALID_ARGUMENT if it overflows FP16.
absl::StatusOr<float> RoundUpToF16(float v);

// One group's grid: x ≈ scale * (code − zero).
struct GroupGrid {
  float scale = 1.0f;
  int32_t zero = 0;
};

// The grid for `n` values at `x` (with the range shrunk by `shrink`, 1 = none). INVALID_ARGUMENT if the
// scale overflows FP16.
absl::StatusOr<GroupGrid> FindGrid(const float* x, int64_t n, int bits, GridKind grid, float shrink = 1.0f);
// Rounds half to even. Adding and removing 1.5·2^23 leaves no fraction bits, so the FPU's default
// rounding does the work; unlike nearbyint this vectorizes on baseline x86-64. Valid for |v| < 2^22.
inline float RoundHalfEven(float v) {
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  v = v < -4194304.0f ? -4194304.0f : (v > 4194304.0f ? 4194304.0f : v);
  return (v + kMagic) - kMagic;
}

// Round-to-nearest-even code of one value on a grid, clamped to [0, maxq].
inline uint8_t QuantizeValue(float x, const GroupGrid& g, int maxq) {
  float q = RoundHalfEven(x / g.scale) + static_cast<float>(g.zero);
  q = q < 0.0f ? 0.0f : (q > static_cast<float>(maxq) ? static_cast<float>(maxq) : q);
  return static_cast<uint8_t>(q);
}

// Quantizes every group of `w` with RTN. INVALID_ARGUMENT on bad options or non-finite weights.
absl::StatusOr<QuantizedTensor> QuantizeRtn(const Matrix& w, const RtnOptions& options);

}  // namespace lowbit

#endif  // LOWBIT_CORE_QUANT_RTN_H_

#include "core/quant/rtn.h"

#include <algorithm>
#include <cmath>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "absl/strings/str_cat.h"
#include "core/tensor/dtype.h"
#include "core/util/status_macros.h"

namespace lowbit {
namespace {

// The smallest FP16 value >= v (v > 0), so a stored scale never shrinks the grid below the range.

// Sum of |x − x̂|^2.4 over a group: the objective of GPTQ's clip search.
float ClipError(const float* x, int64_t n, const GroupGrid& g, int maxq) {
  float err = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    const float d = std::fabs(g.scale * (static_cast<float>(QuantizeValue(x[i], g, maxq)) - g.zero) - x[i]);
    err += std::pow(d, 2.4f);
  }
  return err;
}

absl::StatusOr<GroupGrid> SearchClippedGrid(const float* x, int64_t n, int bits, GridKind grid) {
  constexpr int kGrid = 100;
  constexpr float kMaxShrink = 0.8f;
  const int maxq = (1 << bits) - 1;
  ASSIGN_OR_RETURN(GroupGrid best, FindGrid(x, n, bits, grid));
  float best_err = ClipError(x, n, best, maxq);
  for (int i = 1; i < static_cast<int>(kMaxShrink * kGrid); ++i) {
    ASSIGN_OR_RETURN(GroupGrid candidate, FindGrid(x, n, bits, grid, 1.0f - static_cast<float>(i) / kGrid));
    const float err = ClipError(x, n, candidate, maxq);
    if (err < best_err) {
      best_err = err;
      best = candidate;
    }
  }
  return best;
}

// Range of a group: min(x, 0) and max(x, 0).
void GroupRange(const float* x, int64_t n, float* lo, float* hi) {
  int64_t i = 0;
  float l = 0.0f, h = 0.0f;
#if defined(__SSE2__)
  __m128 vl = _mm_setzero_ps(), vh = _mm_setzero_ps();
  for (; i + 4 <= n; i += 4) {
    const __m128 v = _mm_loadu_ps(x + i);
    vl = _mm_min_ps(vl, v);
    vh = _mm_max_ps(vh, v);
  }
  alignas(16) float ls[4], hs[4];
  _mm_store_ps(ls, vl);
  _mm_store_ps(hs, vh);
  for (int k = 0; k < 4; ++k) l = std::min(l, ls[k]), h = std::max(h, hs[k]);
#endif
  for (; i < n; ++i) l = std::min(l, x[i]), h = std::max(h, x[i]);
  *lo = l;
  *hi = h;
}

// Codes of a group: clamp(round_half_even(x / scale) + zero, 0, maxq). The SSE2 path must match the
// scalar one exactly: cvtps2dq rounds half to even under the default MXCSR, as RoundHalfEven does.
void QuantizeGroup(const float* x, int64_t n, const GroupGrid& g, int maxq, uint8_t* codes) {
  int64_t i = 0;
#if defined(__SSE2__)
  const __m128 scale = _mm_set1_ps(g.scale);
  const __m128i zero = _mm_set1_epi16(static_cast<int16_t>(g.zero));
  const __m128i top = _mm_set1_epi16(static_cast<int16_t>(maxq));
  const __m128i bottom = _mm_setzero_si128();
  const __m128 limit = _mm_set1_ps(4194304.0f);  // keep conversions far from int32 overflow
  for (; i + 8 <= n; i += 8) {
    const __m128 a = _mm_max_ps(_mm_min_ps(_mm_div_ps(_mm_loadu_ps(x + i), scale), limit), _mm_sub_ps(_mm_setzero_ps(), limit));
    const __m128 b = _mm_max_ps(_mm_min_ps(_mm_div_ps(_mm_loadu_ps(x + i + 4), scale), limit), _mm_sub_ps(_mm_setzero_ps(), limit));
    __m128i q = _mm_packs_epi32(_mm_cvtps_epi32(a), _mm_cvtps_epi32(b));  // saturates to int16
    q = _mm_min_epi16(_mm_max_epi16(_mm_adds_epi16(q, zero), bottom), top);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(codes + i), _mm_packus_epi16(q, q));
  }
#endif
  for (; i < n; ++i) codes[i] = QuantizeValue(x[i], g, maxq);
}

}  // namespace

absl::StatusOr<float> RoundUpToF16(float v) {
  uint16_t h = F32ToF16(v);
  if (F16ToF32(h) < v) ++h;  // next representable magnitude: positive FP16 bit patterns are ordered
  const float up = F16ToF32(h);
  if (!std::isfinite(up)) {
    return absl::InvalidArgumentError(absl::StrCat("quantization scale ", v, " overflows FP16"));
  }
  return up == 0.0f ? F16ToF32(1) : up;  // all-tiny groups get the smallest subnormal scale
}

absl::StatusOr<GroupGrid> FindGrid(const float* x, int64_t n, int bits, GridKind grid, float shrink) {
  const int maxq = (1 << bits) - 1;
  float lo, hi;  // the range always includes 0, as GPTQ's does
  GroupRange(x, n, &lo, &hi);
  lo *= shrink;
  hi *= shrink;
  GroupGrid g;
  switch (grid) {
    case GridKind::kSymmetric: {
      const float absmax = std::max(-lo, hi);
      ASSIGN_OR_RETURN(g.scale, RoundUpToF16(absmax > 0.0f ? 2.0f * absmax / maxq : 1.0f));
      g.zero = (maxq + 1) / 2;
      return g;
    }
    case GridKind::kRestrictedSymmetric: {
      const float absmax = std::max(-lo, hi);
      const int half = (1 << (bits - 1)) - 1;
      ASSIGN_OR_RETURN(g.scale, RoundUpToF16(absmax > 0.0f ? absmax / half : 1.0f));
      g.zero = half + 1;
      return g;
    }
    case GridKind::kAsymmetric: {
      if (hi == lo) hi = 1.0f;  // all-zero group: any grid reproduces it
      ASSIGN_OR_RETURN(g.scale, RoundUpToF16((hi - lo) / maxq));
      g.zero = static_cast<int32_t>(RoundHalfEven(-lo / g.scale));
      if (g.zero < 1) {
        // A group with no negative values would get zero 0, which GPTQ's v1 format (it stores zero − 1)
        // cannot hold. Move the zero to code 1 and stretch the scale so max(x) still fits.
        ASSIGN_OR_RETURN(g.scale, RoundUpToF16(hi / (maxq - 1)));
        g.zero = 1;
      }
      g.zero = std::min(g.zero, maxq);
      return g;
    }
  }
  return g;
}

absl::StatusOr<QuantizedTensor> QuantizeRtn(const Matrix& w, const RtnOptions& options) {
  if (options.bits < 2 || options.bits > 8) {
    return absl::InvalidArgumentError(absl::StrCat("bits must be in 2..8, got ", options.bits));
  }
  if (options.group_size == 0 || options.group_size < -1) {
    return absl::InvalidArgumentError(absl::StrCat("group_size must be -1 or positive, got ", options.group_size));
  }
  RETURN_IF_ERROR(CheckFinite(w.data.data(), static_cast<int64_t>(w.data.size()), "weight matrix"));
  QuantizedTensor q;
  q.rows = w.rows;
  q.cols = w.cols;
  q.bits = options.bits;
  q.group_size = options.group_size == -1 || options.group_size > w.cols ? w.cols : options.group_size;
  q.symmetric = options.grid != GridKind::kAsymmetric;
  const int64_t groups = q.num_groups();
  const int maxq = (1 << options.bits) - 1;
  q.codes.resize(static_cast<size_t>(w.rows * w.cols));
  q.scales.resize(static_cast<size_t>(w.rows * groups));
  q.zeros.resize(static_cast<size_t>(w.rows * groups));
  for (int64_t r = 0; r < w.rows; ++r) {
    const float* row = w.row(r);
    uint8_t* codes = q.codes.data() + r * w.cols;
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t begin = g * q.group_size;
      const int64_t n = std::min(q.group_size, w.cols - begin);
      absl::StatusOr<GroupGrid> grid = options.mse_clip ? SearchClippedGrid(row + begin, n, options.bits, options.grid)
                                                        : FindGrid(row + begin, n, options.bits, options.grid);
      if (!grid.ok()) return absl::InvalidArgumentError(absl::StrCat("row ", r, ", group ", g, ": ", grid.status().message()));
      q.scales[r * groups + g] = grid->scale;
      q.zeros[r * groups + g] = grid->zero;
      QuantizeGroup(row + begin, n, *grid, maxq, codes + begin);
    }
  }
  return q;
}

}  // namespace lowbit

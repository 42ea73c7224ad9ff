// RTN and INT8 against a straightforward per-element reference written from the grid definitions in
// rtn.h, plus the analytic properties every uniform grid must have.
#include "core/quant/rtn.h"

#include <cmath>
#include <random>

#include "gtest/gtest.h"
#include "core/quant/error_metrics.h"
#include "core/quant/quantizer.h"

namespace lowbit {
namespace {

// Smallest binary16 value >= v, by walking the compiler's _Float16 upwards.
float ReferenceRoundUpF16(float v) {
  _Float16 h = static_cast<_Float16>(v);
  while (static_cast<float>(h) < v) {
    uint16_t bits;
    std::memcpy(&bits, &h, 2);
    ++bits;
    std::memcpy(&h, &bits, 2);
  }
  return static_cast<float>(h) == 0.0f ? std::ldexp(1.0f, -24) : static_cast<float>(h);
}

struct RefGroup {
  float scale;
  int zero;
  std::vector<int> codes;
};

// The definitions, one element at a time.
RefGroup ReferenceQuantizeGroup(const std::vector<float>& x, int bits, GridKind kind) {
  const int maxq = (1 << bits) - 1;
  float lo = 0, hi = 0;
  for (float v : x) lo = std::min(lo, v), hi = std::max(hi, v);
  RefGroup g;
  if (kind == GridKind::kAsymmetric) {
    if (lo == hi) hi = 1;
    g.scale = ReferenceRoundUpF16((hi - lo) / maxq);
    g.zero = static_cast<int>(std::nearbyint(-lo / g.scale));
    if (g.zero < 1) {
      g.scale = ReferenceRoundUpF16(hi / (maxq - 1));
      g.zero = 1;
    }
  } else {
    const float absmax = std::max(-lo, hi);
    const int levels = kind == GridKind::kSymmetric ? maxq : (1 << (bits - 1)) - 1;
    const float range = kind == GridKind::kSymmetric ? 2 * absmax : absmax;
    g.scale = ReferenceRoundUpF16(absmax > 0 ? range / levels : 1.0f);
    g.zero = kind == GridKind::kSymmetric ? (maxq + 1) / 2 : (1 << (bits - 1));
  }
  for (float v : x) {
    int q = static_cast<int>(std::nearbyint(v / g.scale)) + g.zero;
    g.codes.push_back(std::min(std::max(q, 0), maxq));
  }
  return g;
}

// Heavy-tailed rows with a few outlier columns, like real LLM weights.
Matrix RandomWeights(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::student_t_distribution<float> t(4.0f);
  Matrix w{rows, cols, std::vector<float>(rows * cols)};
  for (float& v : w.data) v = 0.02f * t(rng);
  for (int64_t r = 0; r < rows; ++r) w.row(r)[(r * 7) % cols] *= 20.0f;
  return w;
}

struct Case {
  int bits;
  int64_t group_size;
  GridKind grid;
};

class RtnReferenceTest : public ::testing::TestWithParam<Case> {};

TEST_P(RtnReferenceTest, MatchesReferenceAndKeepsErrorWithinHalfAStep) {
  const Case c = GetParam();
  const Matrix w = RandomWeights(24, 172, 42);  // 172: stories260K's ragged down_proj rows
  auto q = QuantizeRtn(w, {c.bits, c.group_size, c.grid, false});
  ASSERT_TRUE(q.ok()) << q.status();
  const int64_t g = c.group_size == -1 ? w.cols : c.group_size;
  ASSERT_EQ(q->num_groups(), (w.cols + g - 1) / g);
  const Matrix w_hat = q->Dequantize();
  for (int64_t r = 0; r < w.rows; ++r) {
    for (int64_t grp = 0; grp < q->num_groups(); ++grp) {
      const int64_t begin = grp * g, end = std::min(w.cols, begin + g);
      const RefGroup ref = ReferenceQuantizeGroup(std::vector<float>(w.row(r) + begin, w.row(r) + end), c.bits, c.grid);
      ASSERT_EQ(q->scales[r * q->num_groups() + grp], ref.scale) << "row " << r << " group " << grp;
      ASSERT_EQ(q->zeros[r * q->num_groups() + grp], ref.zero);
      for (int64_t i = begin; i < end; ++i) {
        ASSERT_EQ(q->codes[r * w.cols + i], ref.codes[i - begin]) << "row " << r << " col " << i;
        // Every value lies inside its grid's range, so rounding moves it by at most half a step.
        ASSERT_LE(std::fabs(w_hat.row(r)[i] - w.row(r)[i]), 0.5f * ref.scale * (1 + 1e-6f));
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllGrids, RtnReferenceTest,
    ::testing::Values(Case{4, 32, GridKind::kAsymmetric}, Case{4, 128, GridKind::kAsymmetric},
                      Case{3, 64, GridKind::kAsymmetric}, Case{2, 32, GridKind::kAsymmetric},
                      Case{8, -1, GridKind::kAsymmetric}, Case{5, 50, GridKind::kAsymmetric},
                      Case{4, 32, GridKind::kSymmetric}, Case{3, -1, GridKind::kSymmetric},
                      Case{8, 128, GridKind::kSymmetric}, Case{6, 17, GridKind::kSymmetric},
                      Case{8, -1, GridKind::kRestrictedSymmetric}));

TEST(RtnTest, OnGridTensorIsReproducedExactly) {
  // Each group holds codes 0 and maxq (so its range is exactly the grid's) and a power-of-two scale.
  std::mt19937 rng(1);
  for (int bits : {2, 3, 4, 8}) {
    const int maxq = (1 << bits) - 1;
    const int64_t rows = 8, cols = 100, gs = 32;
    Matrix w{rows, cols, std::vector<float>(rows * cols)};
    std::vector<int> codes(rows * cols);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t grp = 0; grp * gs < cols; ++grp) {
        const float scale = std::ldexp(1.0f, -static_cast<int>(rng() % 8) - 2);
        const int zero = 1 + static_cast<int>(rng() % (maxq - 1));
        for (int64_t i = grp * gs; i < std::min(cols, (grp + 1) * gs); ++i) {
          int c = static_cast<int>(rng() % (maxq + 1));
          if (i == grp * gs) c = 0;
          if (i == grp * gs + 1) c = maxq;
          codes[r * cols + i] = c;
          w.row(r)[i] = scale * static_cast<float>(c - zero);
        }
      }
    }
    auto q = QuantizeRtn(w, {bits, gs, GridKind::kAsymmetric, false});
    ASSERT_TRUE(q.ok());
    for (size_t i = 0; i < codes.size(); ++i) ASSERT_EQ(q->codes[i], codes[i]) << "bits " << bits << " index " << i;
    EXPECT_EQ(q->Dequantize().data, w.data) << "bits " << bits;
  }
}

// Quantization is a projection: dequantized values sit on their grid and quantize back to the same codes.
TEST(RtnTest, DequantizedValuesQuantizeBackToTheirCodesOnTheSameGrid) {
  for (GridKind grid : {GridKind::kAsymmetric, GridKind::kSymmetric, GridKind::kRestrictedSymmetric}) {
    for (int bits : {2, 3, 4, 8}) {
      const Matrix w = RandomWeights(32, 172, 9 + bits);
      auto q = QuantizeRtn(w, {bits, 32, grid, false});
      ASSERT_TRUE(q.ok());
      const Matrix w_hat = q->Dequantize();
      for (int64_t r = 0; r < w.rows; ++r) {
        for (int64_t c = 0; c < w.cols; ++c) {
          const int64_t g = r * q->num_groups() + q->group_of(c);
          const GroupGrid on_grid{q->scales[g], q->zeros[g]};
          ASSERT_EQ(QuantizeValue(w_hat.row(r)[c], on_grid, (1 << bits) - 1), q->codes[r * w.cols + c]);
        }
      }
    }
  }
}

// Re-quantizing the dequantized tensor from scratch finds the same grid and codes for every group whose
// codes reach both ends of the range. The one exception: rounding the scale UP to FP16 can leave both
// ends a hair under half a step inside, so the group spans maxq-1 steps and gets a finer grid (smaller
// error). That must stay rare.
TEST(RtnTest, RequantizingTheDequantizedTensorReproducesTheCodes) {
  for (GridKind grid : {GridKind::kAsymmetric, GridKind::kRestrictedSymmetric}) {
    for (int bits : {2, 3, 4, 8}) {
      if (grid == GridKind::kRestrictedSymmetric && bits != 8) continue;
      const int maxq = (1 << bits) - 1;
      const Matrix w = RandomWeights(32, 172, 9 + bits);
      auto q = QuantizeRtn(w, {bits, 32, grid, false});
      ASSERT_TRUE(q.ok());
      auto again = QuantizeRtn(q->Dequantize(), {bits, 32, grid, false});
      ASSERT_TRUE(again.ok());
      int64_t full_range = 0, groups = 0;
      for (int64_t r = 0; r < w.rows; ++r) {
        for (int64_t g = 0; g < q->num_groups(); ++g, ++groups) {
          int lo = maxq, hi = 0, absmax_code = 0;
          const int64_t begin = g * 32, end = std::min<int64_t>(w.cols, begin + 32);
          for (int64_t c = begin; c < end; ++c) {
            const int code = q->codes[r * w.cols + c];
            lo = std::min(lo, code), hi = std::max(hi, code);
            absmax_code = std::max(absmax_code, std::abs(code - q->zeros[r * q->num_groups() + g]));
          }
          const bool spans = grid == GridKind::kAsymmetric ? (lo == 0 && hi == maxq) : absmax_code == maxq / 2;
          if (!spans) continue;
          ++full_range;
          const int64_t i = r * q->num_groups() + g;
          ASSERT_EQ(again->scales[i], q->scales[i]) << "bits " << bits << " row " << r << " group " << g;
          ASSERT_EQ(again->zeros[i], q->zeros[i]);
          for (int64_t c = begin; c < end; ++c) ASSERT_EQ(again->codes[r * w.cols + c], q->codes[r * w.cols + c]);
        }
      }
      EXPECT_GE(full_range, groups * 90 / 100) << "bits " << bits;
    }
  }
}

TEST(RtnTest, ZerosStayInGptqV1Range) {
  // All-positive and all-zero groups would naturally get zero 0, which the v1 format cannot store.
  Matrix w{2, 64, std::vector<float>(128, 0.0f)};
  for (int64_t i = 0; i < 64; ++i) w.row(0)[i] = 0.1f + 0.01f * i;
  auto q = QuantizeRtn(w, {4, 32, GridKind::kAsymmetric, false});
  ASSERT_TRUE(q.ok());
  for (int32_t z : q->zeros) EXPECT_GE(z, 1);
  const Matrix w_hat = q->Dequantize();
  for (int64_t i = 0; i < 64; ++i) EXPECT_LE(std::fabs(w_hat.row(0)[i] - w.row(0)[i]), 0.5f * q->scales[i / 32] * 1.0001f);
  for (int64_t i = 0; i < 64; ++i) EXPECT_EQ(w_hat.row(1)[i], 0.0f);
}

TEST(RtnTest, Int8AbsmaxIsTheLlmInt8Grid) {
  const Matrix w = RandomWeights(16, 300, 3);
  auto quantizer = CreateQuantizer({Method::kInt8, 8, -1, /*symmetric=*/true, false});
  ASSERT_TRUE(quantizer.ok());
  auto layer = (*quantizer)->Quantize(w, nullptr);
  ASSERT_TRUE(layer.ok());
  const QuantizedTensor* q = std::get_if<QuantizedTensor>(&*layer);
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->num_groups(), 1);
  for (int64_t r = 0; r < w.rows; ++r) {
    float absmax = 0;
    for (int64_t i = 0; i < w.cols; ++i) absmax = std::max(absmax, std::fabs(w.row(r)[i]));
    EXPECT_EQ(q->scales[r], ReferenceRoundUpF16(absmax / 127));
    EXPECT_EQ(q->zeros[r], 128);
    for (int64_t i = 0; i < w.cols; ++i) ASSERT_GE(q->codes[r * w.cols + i], 1) << "codes are -127..127 around 128";
  }
  const Matrix w_hat = q->Dequantize();
  for (int64_t r = 0; r < w.rows; ++r) {
    for (int64_t i = 0; i < w.cols; ++i) {
      ASSERT_LE(std::fabs(w_hat.row(r)[i] - w.row(r)[i]), 0.5f * q->scales[r] * (1 + 1e-6f));
    }
  }
}

TEST(RtnTest, MseClipNeverWorsensTheClipObjectiveAndHelpsOnOutliers) {
  const Matrix w = RandomWeights(32, 256, 17);
  auto plain = QuantizeRtn(w, {3, 128, GridKind::kAsymmetric, false});
  auto clipped = QuantizeRtn(w, {3, 128, GridKind::kAsymmetric, true});
  ASSERT_TRUE(plain.ok() && clipped.ok());
  const Matrix a = plain->Dequantize(), b = clipped->Dequantize();
  int improved = 0;
  for (int64_t r = 0; r < w.rows; ++r) {
    for (int64_t grp = 0; grp < 2; ++grp) {
      double err_plain = 0, err_clip = 0;
      for (int64_t i = grp * 128; i < (grp + 1) * 128; ++i) {
        err_plain += std::pow(std::fabs(a.row(r)[i] - w.row(r)[i]), 2.4);
        err_clip += std::pow(std::fabs(b.row(r)[i] - w.row(r)[i]), 2.4);
      }
      ASSERT_LE(err_clip, err_plain * (1 + 1e-4)) << "row " << r;
      improved += err_clip < err_plain * 0.999;
    }
  }
  EXPECT_GT(improved, 0);
}

TEST(RtnTest, RejectsNonFiniteWeightsAndBadOptions) {
  Matrix w = RandomWeights(4, 64, 1);
  w.row(2)[5] = NAN;
  absl::Status s = QuantizeRtn(w, {4, 32, GridKind::kAsymmetric, false}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("non-finite"), std::string::npos);
  w.row(2)[5] = INFINITY;
  EXPECT_EQ(QuantizeRtn(w, {4, 32, GridKind::kAsymmetric, false}).status().code(), absl::StatusCode::kInvalidArgument);
  const Matrix ok = RandomWeights(4, 64, 1);
  EXPECT_EQ(QuantizeRtn(ok, {9, 32, GridKind::kAsymmetric, false}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(QuantizeRtn(ok, {1, 32, GridKind::kAsymmetric, false}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(QuantizeRtn(ok, {4, 0, GridKind::kAsymmetric, false}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateQuantConfig({Method::kInt8, 4, -1, true, false}).code(), absl::StatusCode::kInvalidArgument);
}

TEST(RtnTest, BitsPerWeightCountsScalesAndZeros) {
  const Matrix w = RandomWeights(64, 172, 2);
  auto q = QuantizeRtn(w, {4, 32, GridKind::kAsymmetric, false});
  ASSERT_TRUE(q.ok());
  // 6 groups per row of 172 (the last holds 12): 4 bits per code + (16 + 4) bits per group.
  EXPECT_DOUBLE_EQ(q->BitsPerWeight(), 4.0 + 6.0 * 20.0 / 172.0);
}

}  // namespace
}  // namespace lowbit

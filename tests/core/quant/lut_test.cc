// LUT palettization against references written here: uniform tables and nearest-entry codes by brute
// force, unique mode exact, k-means never worse than the uniform table, and sensitive k-means lowering the
// Hessian-weighted error it optimises.
#include "core/quant/lut.h"

#include <algorithm>
#include <cmath>

#include "gtest/gtest.h"
#include "core/tensor/dtype.h"
#include "tests/test_util/calibration_inputs.h"

namespace lowbit {
namespace {

double SquaredError(const Matrix& w, const CodebookTensor& t, const std::vector<float>* column_weight = nullptr) {
  std::vector<float> row(static_cast<size_t>(w.cols));
  double e = 0;
  for (int64_t r = 0; r < w.rows; ++r) {
    t.DequantizeRow(r, row.data());
    for (int64_t c = 0; c < w.cols; ++c) e += (column_weight ? (*column_weight)[c] : 1.0) * std::pow(w.row(r)[c] - row[c], 2);
  }
  return e;
}

TEST(LutTest, UniformModeIsTheEvenlySpacedTableWithNearestCodes) {
  const Matrix w = testing::RandomMatrix(24, 40, 1);
  LutOptions o;
  o.bits = 3;
  o.mode = LutMode::kUniform;
  auto t = QuantizeLut(w, o, nullptr);
  ASSERT_TRUE(t.ok()) << t.status();
  const auto [lo, hi] = std::minmax_element(w.data.begin(), w.data.end());
  std::vector<float> table(8);
  for (int i = 0; i < 8; ++i) table[i] = RoundToF16(*lo + (*hi - *lo) * i / 7.0f);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(t->codebooks[i], table[i]);
  for (int64_t i = 0; i < w.rows * w.cols; ++i) {
    int best = 0;
    for (int c = 1; c < 8; ++c) {
      if (std::abs(w.data[i] - table[c]) < std::abs(w.data[i] - table[best])) best = c;
    }
    ASSERT_EQ(table[t->codes[i]], table[best]) << i;
  }
  EXPECT_DOUBLE_EQ(t->BitsPerWeight(), 3.0 + 8 * 16.0 / (24 * 40));
}

TEST(LutTest, UniqueModeIsExactAndRefusesTooManyValues) {
  Matrix w = testing::RandomMatrix(16, 32, 2);
  const float values[] = {-0.5f, -0.25f, 0.0f, 0.125f, 0.75f};
  for (size_t i = 0; i < w.data.size(); ++i) w.data[i] = values[i % 5];
  LutOptions o;
  o.bits = 3;
  o.mode = LutMode::kUnique;
  auto t = QuantizeLut(w, o, nullptr);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(SquaredError(w, *t), 0.0);
  o.bits = 2;
  EXPECT_EQ(QuantizeLut(w, o, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(LutTest, KMeansBeatsTheUniformTableAndCodesAreNearestEntries) {
  const Matrix w = testing::RandomMatrix(64, 96, 3);
  for (int bits : {1, 2, 3, 4, 6, 8}) {
    for (LutGranularity g : {LutGranularity::kPerTensor, LutGranularity::kPerGroupedChannel}) {
      LutOptions o;
      o.bits = bits;
      o.granularity = g;
      o.group_size = 16;
      auto km = QuantizeLut(w, o, nullptr);
      ASSERT_TRUE(km.ok()) << km.status();
      EXPECT_EQ(km->tiles(), g == LutGranularity::kPerTensor ? 1 : 4);
      o.mode = LutMode::kUniform;
      auto uni = QuantizeLut(w, o, nullptr);
      ASSERT_TRUE(uni.ok());
      EXPECT_LE(SquaredError(w, *km), SquaredError(w, *uni)) << bits;
      for (int64_t r = 0; r < w.rows; r += 7) {
        for (int64_t c = 0; c < w.cols; c += 5) {
          const float* table = km->centroid(km->tile_of(r, c), 0);
          const float got = table[km->codes[r * w.cols + c]];
          for (int64_t e = 0; e < km->entries(); ++e) {
            ASSERT_LE(std::abs(w.row(r)[c] - got), std::abs(w.row(r)[c] - table[e]) * (1 + 1e-6f));
          }
          ASSERT_EQ(RoundToF16(got), got);
        }
      }
    }
  }
}

TEST(LutTest, PerChannelScaleAndVectorPalettization) {
  Matrix w = testing::RandomMatrix(32, 64, 4);
  for (int64_t c = 0; c < w.cols; ++c) w.data[5 * w.cols + c] *= 40.0f;  // one loud channel
  LutOptions o;
  o.bits = 4;
  o.per_channel_scale = true;
  auto scaled = QuantizeLut(w, o, nullptr);
  ASSERT_TRUE(scaled.ok());
  float amax = 0;
  for (int64_t c = 0; c < w.cols; ++c) amax = std::max(amax, std::abs(w.row(5)[c]));
  EXPECT_EQ(scaled->row_scales[5], RoundToF16(amax));
  o.per_channel_scale = false;
  auto plain = QuantizeLut(w, o, nullptr);
  ASSERT_TRUE(plain.ok());
  // The quiet channels keep their resolution when every channel is normalised first.
  Matrix quiet = w;
  for (int64_t c = 0; c < w.cols; ++c) quiet.data[5 * w.cols + c] = 0;
  auto quiet_error = [&](const CodebookTensor& t) {
    std::vector<float> row(static_cast<size_t>(w.cols));
    double e = 0;
    for (int64_t r = 0; r < w.rows; ++r) {
      if (r == 5) continue;
      t.DequantizeRow(r, row.data());
      for (int64_t c = 0; c < w.cols; ++c) e += std::pow(w.row(r)[c] - row[c], 2);
    }
    return e;
  };
  EXPECT_LT(quiet_error(*scaled), quiet_error(*plain));

  o.cluster_dim = 2;
  auto vec = QuantizeLut(w, o, nullptr);
  ASSERT_TRUE(vec.ok()) << vec.status();
  EXPECT_EQ(vec->codes.size(), static_cast<size_t>(w.rows * w.cols / 2));
  // coremltools' vector palettization: a vector is two consecutive output channels of one input column, and
  // its code names the nearest entry of the table (normalised by the row scales when per-channel scale is on).
  o.per_channel_scale = false;
  auto by_rows = QuantizeLut(w, o, nullptr);
  ASSERT_TRUE(by_rows.ok());
  EXPECT_TRUE(by_rows->along_rows);
  for (int64_t u = 0; u < w.rows / 2; u += 3) {
    for (int64_t c = 0; c < w.cols; c += 7) {
      const float x0 = w.row(2 * u)[c], x1 = w.row(2 * u + 1)[c];
      int64_t best = 0;
      double best_d = 1e300;
      for (int64_t e = 0; e < 16; ++e) {
        const float* v = by_rows->centroid(0, e);
        const double d = std::pow(x0 - v[0], 2) + std::pow(x1 - v[1], 2);
        if (d < best_d) best_d = d, best = e;
      }
      ASSERT_EQ(by_rows->codes[u * w.cols + c], best) << u << "," << c;
    }
  }
  std::vector<float> row0(static_cast<size_t>(w.cols)), row1(row0.size());
  by_rows->DequantizeRow(8, row0.data());
  by_rows->DequantizeRow(9, row1.data());
  for (int64_t c = 0; c < w.cols; ++c) {
    const float* v = by_rows->centroid(0, by_rows->codes[4 * w.cols + c]);
    ASSERT_EQ(row0[c], v[0]);
    ASSERT_EQ(row1[c], v[1]);
  }
  EXPECT_DOUBLE_EQ(vec->BitsPerWeight(), 2.0 + 16 * 2 * 16.0 / (32 * 64));
  o.cluster_dim = 3;
  EXPECT_EQ(QuantizeLut(w, o, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(LutTest, SensitiveKMeansLowersTheHessianWeightedError) {
  const Matrix w = testing::RandomMatrix(48, 64, 5);
  CalibrationStats stats;
  stats.cols = 64;
  stats.hessian.assign(64 * 64, 0.0f);
  std::vector<float> importance(64);
  for (int64_t c = 0; c < 64; ++c) stats.hessian[c * 64 + c] = importance[c] = c < 8 ? 50.0f : 0.5f;
  LutOptions o;
  o.bits = 2;
  auto sensitive = QuantizeLut(w, o, &stats);
  o.sensitive = false;
  auto plain = QuantizeLut(w, o, &stats);
  ASSERT_TRUE(sensitive.ok() && plain.ok());
  EXPECT_LT(SquaredError(w, *sensitive, &importance), SquaredError(w, *plain, &importance));
  EXPECT_GT(SquaredError(w, *sensitive), SquaredError(w, *plain)) << "it trades plain error for weighted error";
}

TEST(LutTest, RejectsBadOptionsAndNonFiniteWeights) {
  Matrix w = testing::RandomMatrix(8, 8, 6);
  LutOptions o;
  o.bits = 5;
  EXPECT_EQ(QuantizeLut(w, o, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
  o.bits = 4;
  w.data[3] = NAN;
  EXPECT_EQ(QuantizeLut(w, o, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace lowbit

// OneBit against its analytic properties: exact for W whose |W| is rank 1, the value vectors equal to a
// power iteration written here in double, 1.0078 bits/weight at 4096², and refinement lowering the output
// error measured directly on the inputs.
#include "core/quant/onebit.h"

#include <cmath>
#include <random>

#include "gtest/gtest.h"
#include "core/quant/error_metrics.h"
#include "core/tensor/dtype.h"
#include "tests/test_util/calibration_inputs.h"

namespace lowbit {
namespace {

TEST(OneBitTest, ExactForSignTimesRankOneMagnitudes) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(0.5f, 2.0f);
  const int64_t rows = 24, cols = 40;
  std::vector<float> a(rows), b(cols);
  for (float& v : a) v = RoundToF16(u(rng));
  for (float& v : b) v = RoundToF16(u(rng) * 0.01f);
  Matrix w{rows, cols, std::vector<float>(static_cast<size_t>(rows * cols))};
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) w.data[r * cols + c] = ((r * 7 + c * 3) % 5 < 2 ? -1.0f : 1.0f) * a[r] * b[c];
  for (OneBitDecomposition d : {OneBitDecomposition::kSvd, OneBitDecomposition::kNmf}) {
    auto t = QuantizeOneBit(w, {d, 200, 0}, nullptr);
    ASSERT_TRUE(t.ok()) << t.status();
    for (int64_t i = 0; i < rows * cols; ++i) EXPECT_EQ(t->signs[i] == 1, w.data[i] >= 0) << i;
    EXPECT_LT(RelativeFrobeniusError(w, QuantizedLayer(*t)), 2e-3) << "only FP16 rounding of a and b remains";
  }
}

TEST(OneBitTest, ValueVectorsAreTheTopSingularPairOfAbsW) {
  const Matrix w = testing::RandomMatrix(30, 50, 2);
  // Power iteration in double, written here.
  std::vector<double> v(50, 1.0), u(30);
  for (int it = 0; it < 500; ++it) {
    for (int r = 0; r < 30; ++r) {
      u[r] = 0;
      for (int c = 0; c < 50; ++c) u[r] += std::abs(w.row(r)[c]) * v[c];
    }
    double norm = 0;
    for (int c = 0; c < 50; ++c) {
      v[c] = 0;
      for (int r = 0; r < 30; ++r) v[c] += std::abs(w.row(r)[c]) * u[r];
      norm += v[c] * v[c];
    }
    for (double& x : v) x /= std::sqrt(norm);
  }
  double sigma = 0;
  for (int r = 0; r < 30; ++r) {
    u[r] = 0;
    for (int c = 0; c < 50; ++c) u[r] += std::abs(w.row(r)[c]) * v[c];
    sigma += u[r] * u[r];
  }
  sigma = std::sqrt(sigma);  // u = σ·û
  for (OneBitDecomposition d : {OneBitDecomposition::kSvd, OneBitDecomposition::kNmf}) {
    auto t = QuantizeOneBit(w, {d, 500, 0}, nullptr);
    ASSERT_TRUE(t.ok());
    for (int r = 0; r < 30; ++r)
      for (int c = 0; c < 50; ++c) EXPECT_NEAR(t->a[r] * t->b[c], u[r] * v[c], 3e-3 * u[r] * v[c] + 1e-7);
  }
}

TEST(OneBitTest, BitsPerWeightCountsTheValueVectors) {
  OneBitTensor t;
  t.rows = t.cols = 4096;
  EXPECT_DOUBLE_EQ(t.BitsPerWeight(), (4096.0 * 4096 + 2 * 4096 * 16) / (4096.0 * 4096));
  EXPECT_NEAR(t.BitsPerWeight(), 1.0078, 1e-4);
}

TEST(OneBitTest, RefinementLowersTheOutputError) {
  const Matrix w = testing::RandomMatrix(32, 48, 3);
  const testing::LayerInputs in = testing::CorrelatedInputs(48, 400, 4, {2, 9}, 6.0f);
  auto plain = QuantizeOneBit(w, {OneBitDecomposition::kNmf, 100, 0}, &in.stats);
  auto refined = QuantizeOneBit(w, {OneBitDecomposition::kNmf, 100, 4}, &in.stats);
  ASSERT_TRUE(plain.ok() && refined.ok()) << refined.status();
  EXPECT_EQ(plain->signs, refined->signs);
  const double before = testing::OutputError(w, Dequantize(*plain), in);
  const double after = testing::OutputError(w, Dequantize(*refined), in);
  EXPECT_LT(after, 0.9 * before);
  EXPECT_EQ(QuantizeOneBit(w, {OneBitDecomposition::kNmf, 100, 2}, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace lowbit

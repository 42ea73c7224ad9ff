// GPTQ against a straightforward implementation written from the paper (double precision, column by
// column, no blocking or lazy updates, its own Cholesky), and the property that GPTQ's output error is
// below RTN's on the same grid when inputs are correlated.
#include "core/quant/gptq.h"

#include <cmath>
#include <numeric>
#include <random>

#include "gtest/gtest.h"
#include "core/pack/gptq.h"
#include "core/quant/rtn.h"
#include "tests/test_util/reference_gptq.h"

namespace lowbit {
namespace {

using testing::CodeAgreement;
using testing::ReferenceGptq;

// Correlated calibration inputs with a few outlier channels: x = z·A, channels 3 and 17 scaled up.
CalibrationStats RealisticHessian(int64_t cols, int64_t n, uint32_t seed, std::vector<float>* x_out = nullptr) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> mix(static_cast<size_t>(cols * cols));
  for (float& v : mix) v = normal(rng) / std::sqrt(static_cast<float>(cols));
  for (int64_t i = 0; i < cols; ++i) mix[i * cols + i] += 1.0f;
  std::vector<float> x(static_cast<size_t>(n * cols), 0.0f);
  for (int64_t t = 0; t < n; ++t) {
    std::vector<float> z(static_cast<size_t>(cols));
    for (float& v : z) v = normal(rng);
    for (int64_t j = 0; j < cols; ++j) {
      float s = 0;
      for (int64_t k = 0; k < cols; ++k) s += z[k] * mix[k * cols + j];
      x[t * cols + j] = s * (j == 3 || j == 17 ? 8.0f : 1.0f);
    }
  }
  CalibrationStats stats;
  stats.cols = cols;
  // Accumulate in uneven chunks, as calibration batches arrive.
  for (int64_t begin = 0; begin < n;) {
    const int64_t len = std::min<int64_t>(n - begin, 37 + begin % 50);
    AccumulateHessian(x.data() + begin * cols, len, &stats);
    begin += len;
  }
  if (x_out) *x_out = std::move(x);
  return stats;
}

Matrix RandomWeights(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::student_t_distribution<float> t(5.0f);
  Matrix w{rows, cols, std::vector<float>(static_cast<size_t>(rows * cols))};
  for (float& v : w.data) v = 0.05f * t(rng);
  return w;
}

TEST(GptqTest, HessianAccumulationMatchesDirectSum) {
  std::vector<float> x;
  const CalibrationStats stats = RealisticHessian(20, 300, 4, &x);
  EXPECT_EQ(stats.samples, 300);
  for (int64_t i = 0; i < 20; ++i) {
    for (int64_t j = 0; j < 20; ++j) {
      double s = 0;
      for (int64_t t = 0; t < 300; ++t) s += static_cast<double>(x[t * 20 + i]) * x[t * 20 + j];
      EXPECT_NEAR(stats.hessian[i * 20 + j], 2 * s / 300, 1e-3 * (1 + std::fabs(2 * s / 300)));
    }
  }
}

struct Case {
  int bits;
  int64_t group_size;
  bool act_order;
};
class GptqReferenceTest : public ::testing::TestWithParam<Case> {};

TEST_P(GptqReferenceTest, MatchesTheColumnByColumnReference) {
  const Case c = GetParam();
  const int64_t cols = 300;  // 2.3 blocks of 128, ragged last group for g=32
  const CalibrationStats stats = RealisticHessian(cols, 1024, 11);
  const Matrix w = RandomWeights(40, cols, 12);
  auto ours = QuantizeGptq(w, stats, {c.bits, c.group_size, false, 0.01, c.act_order, false, 128});
  ASSERT_TRUE(ours.ok()) << ours.status();
  EXPECT_EQ(ours->cholesky_retries, 0);
  const int64_t g = c.group_size == -1 ? cols : c.group_size;
  const QuantizedTensor ref = ReferenceGptq(w, stats, c.bits, g, c.act_order);
  // Float32 BLAS versus float64 loops: a handful of values sitting on a rounding boundary may flip.
  EXPECT_GE(CodeAgreement(std::get<QuantizedTensor>(ours->layer), ref), 0.995);
  const double e_ours = RelativeOutputError(w, std::get<QuantizedTensor>(ours->layer).Dequantize(), stats);
  const double e_ref = RelativeOutputError(w, ref.Dequantize(), stats);
  EXPECT_NEAR(e_ours, e_ref, 0.02 * e_ref) << "output error, ours vs reference";
  EXPECT_EQ(std::get<QuantizedTensor>(ours->layer).g_idx.empty(), !c.act_order);
}

INSTANTIATE_TEST_SUITE_P(Configs, GptqReferenceTest,
                         ::testing::Values(Case{4, 32, false}, Case{4, 128, false}, Case{3, -1, false},
                                           Case{2, 32, false}, Case{4, 32, true}, Case{3, 64, true}));

TEST(GptqTest, OutputErrorIsBelowRtnOnCorrelatedInputs) {
  const CalibrationStats stats = RealisticHessian(256, 2048, 21);
  const Matrix w = RandomWeights(64, 256, 22);
  for (auto [bits, g] : {std::pair<int, int64_t>{4, 32}, {3, 128}, {3, -1}}) {
    auto gptq = QuantizeGptq(w, stats, {bits, g, false, 0.01, false, false, 128});
    auto rtn = QuantizeRtn(w, {bits, g, GridKind::kAsymmetric, false});
    ASSERT_TRUE(gptq.ok() && rtn.ok());
    const double e_gptq = RelativeOutputError(w, std::get<QuantizedTensor>(gptq->layer).Dequantize(), stats);
    const double e_rtn = RelativeOutputError(w, rtn->Dequantize(), stats);
    EXPECT_LT(e_gptq, 0.8 * e_rtn) << bits << "-bit g" << g << ": GPTQ " << e_gptq << " vs RTN " << e_rtn;
  }
}

TEST(GptqTest, ActOrderAndStaticGroupsPackAndUnpackThroughTheGptqLayout) {
  const CalibrationStats stats = RealisticHessian(128, 512, 31);
  const Matrix w = RandomWeights(32, 128, 32);
  for (bool static_groups : {false, true}) {
    auto r = QuantizeGptq(w, stats, {4, 32, true, 0.01, /*act_order=*/true, static_groups, 128});
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(std::get<QuantizedTensor>(r->layer).g_idx.empty(), static_groups) << "static groups keep sequential groups";
    auto packed = PackGptq("l", std::get<QuantizedTensor>(r->layer), GptqZerosFor(std::get<QuantizedTensor>(r->layer).symmetric));
    ASSERT_TRUE(packed.ok());
    auto back = UnpackGptq((*packed)[0], (*packed)[1], (*packed)[2], (*packed)[3], 4, 32, 128, GptqZerosFor(std::get<QuantizedTensor>(r->layer).symmetric));
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->Dequantize().data, std::get<QuantizedTensor>(r->layer).Dequantize().data);
  }
}

TEST(GptqTest, DeadColumnsAreZeroedAndIndefiniteHessiansRaiseTheDamping) {
  CalibrationStats stats = RealisticHessian(64, 256, 41);
  for (int64_t j = 0; j < 64; ++j) stats.hessian[5 * 64 + j] = stats.hessian[j * 64 + 5] = 0.0f;  // input 5 never fires
  const Matrix w = RandomWeights(16, 64, 42);
  auto r = QuantizeGptq(w, stats, {4, 32, false, 0.01, false, false, 128});
  ASSERT_TRUE(r.ok()) << r.status();
  const Matrix w_hat = std::get<QuantizedTensor>(r->layer).Dequantize();
  for (int64_t row = 0; row < 16; ++row) EXPECT_EQ(w_hat.row(row)[5], 0.0f);

  CalibrationStats indefinite = RealisticHessian(64, 256, 43);
  double mean = 0;
  for (int64_t i = 0; i < 64; ++i) mean += indefinite.hessian[i * 64 + i] / 64;
  for (int64_t i = 0; i < 64; ++i) indefinite.hessian[i * 64 + i] -= static_cast<float>(0.05 * mean);
  // Make it clearly indefinite: one direction with negative curvature.
  indefinite.hessian[0] = static_cast<float>(-0.03 * mean);
  auto retried = QuantizeGptq(w, indefinite, {4, 32, false, 0.01, false, false, 128});
  ASSERT_TRUE(retried.ok()) << retried.status();
  EXPECT_GT(retried->cholesky_retries, 0);
  EXPECT_GT(retried->damp_percent_used, 0.01);
  for (float v : std::get<QuantizedTensor>(retried->layer).Dequantize().data) ASSERT_TRUE(std::isfinite(v));
}

TEST(GptqTest, RejectsMismatchedHessianAndNonFiniteWeights) {
  const CalibrationStats stats = RealisticHessian(32, 64, 51);
  EXPECT_EQ(QuantizeGptq(RandomWeights(4, 48, 1), stats, {}).status().code(), absl::StatusCode::kInvalidArgument);
  Matrix w = RandomWeights(4, 32, 2);
  w.data[7] = NAN;
  EXPECT_EQ(QuantizeGptq(w, stats, {}).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace lowbit

// VQ (GPTVQ) against references written here: with d = 1, a uniform codebook and no cross-column
// feedback (H diagonal) it is RTN onto that grid; GPTQ-style feedback beats nearest-centroid assignment
// with the same codebooks on correlated inputs; the codebook update lowers the output error; bits/weight
// include the codebooks.
#include "core/quant/vq.h"

#include <cmath>
#include <limits>

#include "gtest/gtest.h"
#include "core/quant/kmeans.h"
#include "core/quant/rtn.h"
#include "tests/test_util/calibration_inputs.h"

namespace lowbit {
namespace {

TEST(VqTest, DimensionOneWithAUniformCodebookIsRtnOntoThatGrid) {
  const Matrix w = testing::RandomMatrix(16, 64, 1);
  CalibrationStats identity;
  identity.cols = 64;
  identity.hessian.assign(64 * 64, 0.0f);
  for (int c = 0; c < 64; ++c) identity.hessian[c * 64 + c] = 1.0f;
  VqOptions o;
  o.dim = 1;
  o.bits = 3;
  o.group_cols = 32;
  o.group_rows = -1;
  o.update_iterations = 0;
  o.init = VqInit::kUniform;
  auto t = QuantizeVq(w, identity, o);
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->tiles(), 2);
  for (int64_t tile = 0; tile < 2; ++tile) {
    float lo = INFINITY, hi = -INFINITY;
    for (int64_t r = 0; r < 16; ++r)
      for (int64_t c = tile * 32; c < (tile + 1) * 32; ++c) lo = std::min(lo, w.row(r)[c]), hi = std::max(hi, w.row(r)[c]);
    // The grid lo + i·(hi − lo)/7, stored as int8 times an FP16 scale.
    const float scale = *RoundUpToF16(std::max(-lo, hi) / 127.0f);
    std::vector<float> grid(8);
    for (int i = 0; i < 8; ++i) grid[i] = std::nearbyint((lo + (hi - lo) * i / 7.0f) / scale) * scale;
    for (int64_t r = 0; r < 16; ++r) {
      for (int64_t c = tile * 32; c < (tile + 1) * 32; ++c) {
        int nearest = 0;
        for (int i = 1; i < 8; ++i) {
          if (std::abs(w.row(r)[c] - grid[i]) < std::abs(w.row(r)[c] - grid[nearest])) nearest = i;
        }
        ASSERT_EQ(t->codes[r * 64 + c], nearest) << r << "," << c;
        ASSERT_EQ(*t->centroid(tile, nearest), grid[nearest]);
      }
    }
  }
}

// Each vector of the original weights assigned to its nearest centroid in the same codebooks (brute force).
CodebookTensor NearestAssignment(const Matrix& w, const CodebookTensor& t) {
  CodebookTensor nearest = t;
  const int64_t vectors = w.cols / t.dim;
  for (int64_t r = 0; r < w.rows; ++r) {
    for (int64_t v = 0; v < vectors; ++v) {
      double best = std::numeric_limits<double>::infinity();
      for (int64_t e = 0; e < t.entries(); ++e) {
        const float* c = t.centroid(t.tile_of(r, v * t.dim), e);
        double d = 0;
        for (int j = 0; j < t.dim; ++j) d += std::pow(w.row(r)[v * t.dim + j] - c[j], 2);
        if (d < best) best = d, nearest.codes[r * vectors + v] = static_cast<uint16_t>(e);
      }
    }
  }
  return nearest;
}

// A layer and calibration inputs with correlated channels, two of them outliers.
const Matrix kLayer = testing::RandomMatrix(48, 64, 2);
const testing::LayerInputs& CorrelatedInputs() {
  static const testing::LayerInputs inputs = testing::CorrelatedInputs(64, 600, 3, {5, 40}, 5.0f);
  return inputs;
}

TEST(VqTest, ErrorFeedbackBeatsNearestCentroidAssignment) {
  // d = 1, where the importance weighting cannot change which centroid is nearest: only feedback differs.
  const Matrix& w = kLayer;
  const testing::LayerInputs& in = CorrelatedInputs();
  VqOptions o;
  o.dim = 1;
  o.bits = 2;
  o.group_cols = 32;
  o.update_iterations = 0;
  auto t = QuantizeVq(w, in.stats, o);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_LT(testing::OutputError(w, Dequantize(*t), in), 0.9 * testing::OutputError(w, Dequantize(NearestAssignment(w, *t)), in));
}

TEST(VqTest, CodebookUpdateLowersTheOutputError) {
  const Matrix& w = kLayer;
  const testing::LayerInputs& in = CorrelatedInputs();
  VqOptions o;
  o.dim = 2;
  o.bits = 2;
  o.group_cols = 32;
  o.group_rows = 24;
  o.update_iterations = 0;
  auto t = QuantizeVq(w, in.stats, o);
  ASSERT_TRUE(t.ok()) << t.status();
  const double before = testing::OutputError(w, Dequantize(*t), in);
  EXPECT_LT(before, testing::OutputError(w, Dequantize(NearestAssignment(w, *t)), in));
  o.update_iterations = 10;
  auto updated = QuantizeVq(w, in.stats, o);
  ASSERT_TRUE(updated.ok());
  EXPECT_EQ(updated->codes, t->codes) << "the update moves centroids, not codes";
  EXPECT_LT(testing::OutputError(w, Dequantize(*updated), in), 0.95 * before);
  // 2 bits per dimension, plus 4 tiles of 16 two-dimensional int8 centroids and their FP16 scales.
  EXPECT_DOUBLE_EQ(updated->BitsPerWeight(), 2.0 + 4 * (16 * 2 * 8.0 + 16) / (48 * 64));
}

TEST(VqTest, RejectsBadShapesAndOptions) {
  const Matrix w = testing::RandomMatrix(8, 30, 4);
  const testing::LayerInputs in = testing::CorrelatedInputs(30, 50, 5);
  VqOptions o;
  o.dim = 4;  // does not divide 30
  EXPECT_EQ(QuantizeVq(w, in.stats, o).status().code(), absl::StatusCode::kInvalidArgument);
  o.dim = 2;
  o.bits = 7;  // 2·7 > 12
  EXPECT_EQ(QuantizeVq(w, in.stats, o).status().code(), absl::StatusCode::kInvalidArgument);
  o.bits = 2;
  CalibrationStats wrong = in.stats;
  wrong.cols = 31;
  EXPECT_EQ(QuantizeVq(w, wrong, o).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace lowbit

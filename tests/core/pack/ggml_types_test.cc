// ggml's block layouts against known answers (ggml-common.h) and round trips through ggml-quants.c's
// dequantization: lowbit's grid codes land in the blocks exactly (symmetric types) or within the FP16
// rounding of the stored minimum (Q4_1, Q5_1). llama.cpp itself reads the files in tests/e2e/gguf_llamacpp_test.mjs.
#include "core/pack/ggml_types.h"

#include <cmath>
#include <cstring>

#include "gtest/gtest.h"
#include "core/quant/rtn.h"
#include "tests/test_util/calibration_inputs.h"

namespace lowbit {
namespace {

TEST(GgmlTypesTest, TableMatchesGgmlCommon) {
  EXPECT_EQ(FindGgmlType("q4_0")->block_bytes, 18u);
  EXPECT_EQ(FindGgmlType("Q4_1")->block_bytes, 20u);
  EXPECT_EQ(FindGgmlType("Q5_0")->block_bytes, 22u);
  EXPECT_EQ(FindGgmlType("Q5_1")->block_bytes, 24u);
  EXPECT_EQ(FindGgmlType("Q8_0")->block_bytes, 34u);
  EXPECT_DOUBLE_EQ(FindGgmlType("Q4_0")->bits_per_weight(), 4.5);
  EXPECT_EQ(static_cast<uint32_t>(FindGgmlType("Q8_0")->type), 8u);
  EXPECT_EQ(FindGgmlType("Q2_K"), nullptr) << "not in the table yet";
}

// Q4_0: element j in the low nibble of qs[j], element j + 16 in the high nibble.
TEST(GgmlTypesTest, Q4_0NibblesAsGgmlLaysThemOut) {
  QuantizedTensor q;
  q.rows = 1, q.cols = 32, q.bits = 4, q.group_size = 32, q.symmetric = true;
  for (int j = 0; j < 32; ++j) q.codes.push_back(static_cast<uint8_t>(j % 16));
  q.scales = {0.5f};
  q.zeros = {8};
  auto bytes = PackGgmlRows(q, *FindGgmlType("Q4_0"), {});
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  ASSERT_EQ(bytes->size(), 18u);
  EXPECT_EQ(static_cast<uint8_t>((*bytes)[2]), 0x00) << "codes 0 and 0 (element 16 = 16 % 16)";
  EXPECT_EQ(static_cast<uint8_t>((*bytes)[3]), 0x11);
  q.zeros = {7};
  EXPECT_FALSE(PackGgmlRows(q, *FindGgmlType("Q4_0"), {}).ok()) << "Q4_0 is the symmetric grid";
}

class GgmlRoundTripTest : public ::testing::TestWithParam<const char*> {};

TEST_P(GgmlRoundTripTest, DequantizedBlocksEqualTheGrid) {
  const GgmlTypeTraits& t = *FindGgmlType(GetParam());
  const Matrix w = testing::RandomMatrix(6, 96, 3);
  auto q = QuantizeRtn(w, {t.bits, 32, t.symmetric ? GridKind::kSymmetric : GridKind::kAsymmetric, false});
  ASSERT_TRUE(q.ok());
  const std::vector<int64_t> order = {5, 4, 3, 2, 1, 0};
  auto bytes = PackGgmlRows(*q, t, order);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  ASSERT_EQ(bytes->size(), 6 * t.RowBytes(96));
  const Matrix want = q->Dequantize();
  std::vector<float> row(96);
  for (int64_t i = 0; i < 6; ++i) {
    DequantizeGgmlRow(t.type, bytes->data() + i * t.RowBytes(96), 96, row.data());
    const int64_t r = order[static_cast<size_t>(i)];
    for (int64_t c = 0; c < 96; ++c) {
      const float expected = want.data[static_cast<size_t>(r * 96 + c)];
      // The stored minimum m = -d·zero is FP16: exact for the symmetric types, within its rounding otherwise.
      const float tolerance = t.symmetric ? 0.0f : 1e-3f * std::abs(q->scales[static_cast<size_t>(r * 3 + c / 32)] * 16);
      EXPECT_NEAR(row[static_cast<size_t>(c)], expected, tolerance) << t.name << " row " << r << " col " << c;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Legacy, GgmlRoundTripTest, ::testing::Values("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"));

TEST(GgmlTypesTest, FloatRowsInEveryFloatType) {
  const float values[4] = {1.0f, -2.5f, 0.333f, 65504.0f};
  for (GgmlType type : {GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16}) {
    const std::string bytes = EncodeFloatRows(values, 2, 2, type, {1, 0});
    float back[4];
    DequantizeGgmlRow(type, bytes.data(), 4, back);
    EXPECT_NEAR(back[0], 0.333f, 2e-3f) << "rows in the given order";
    EXPECT_EQ(back[2], 1.0f);
    EXPECT_EQ(back[3], -2.5f);
  }
}

}  // namespace
}  // namespace lowbit

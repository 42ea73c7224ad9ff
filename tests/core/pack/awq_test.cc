// The AWQ GEMM layout against AutoAWQ's unpacking, restated here: nibble AWQ_REVERSE_ORDER[c % 8] of
// word c / 8 holds output column c; zeros stored as they are; and a round trip through UnpackAwq.
#include "core/pack/awq.h"

#include <cstring>

#include "gtest/gtest.h"
#include "core/quant/rtn.h"
#include "core/tensor/dtype.h"
#include "tests/test_util/calibration_inputs.h"

namespace lowbit {
namespace {

constexpr int kReverseOrder[8] = {0, 4, 1, 5, 2, 6, 3, 7};  // AutoAWQ's AWQ_REVERSE_ORDER

int32_t Word(const Tensor& t, int64_t row, int64_t col) {
  int32_t v;
  std::memcpy(&v, t.bytes.data() + (row * t.shape[1] + col) * 4, 4);
  return v;
}

TEST(AwqLayoutTest, MatchesAutoAwqUnpackingAndRoundTrips) {
  for (int64_t rows : {64, 44}) {  // 44: a ragged output width, padded to 48
    const Matrix w = testing::RandomMatrix(rows, 96, 1);
    auto q = QuantizeRtn(w, {4, 32, GridKind::kAsymmetric, false});
    ASSERT_TRUE(q.ok());
    auto packed = PackAwq("layer", *q);
    ASSERT_TRUE(packed.ok()) << packed.status();
    const Tensor& qweight = (*packed)[0];
    const Tensor& qzeros = (*packed)[1];
    ASSERT_EQ(qweight.shape, (std::vector<int64_t>{96, (rows + 7) / 8}));
    for (int64_t i = 0; i < 96; ++i) {
      for (int64_t c = 0; c < rows; ++c) {
        const int32_t code = (Word(qweight, i, c / 8) >> (4 * kReverseOrder[c % 8])) & 15;
        ASSERT_EQ(code, q->codes[c * 96 + i]) << i << "," << c;
      }
    }
    for (int64_t g = 0; g < 3; ++g) {
      for (int64_t c = 0; c < rows; ++c) {
        ASSERT_EQ((Word(qzeros, g, c / 8) >> (4 * kReverseOrder[c % 8])) & 15, q->zeros[c * 3 + g]);
      }
    }
    auto back = UnpackAwq(qweight, qzeros, (*packed)[2], 32);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->codes, q->codes);
    EXPECT_EQ(back->zeros, q->zeros);
    EXPECT_EQ(back->scales, q->scales);
  }
}

TEST(AwqLayoutTest, RefusesWhatTheLayoutCannotHold) {
  const Matrix w = testing::RandomMatrix(16, 64, 2);
  EXPECT_EQ(PackAwq("l", *QuantizeRtn(w, {3, 32, GridKind::kAsymmetric, false})).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto q = *QuantizeRtn(w, {4, 32, GridKind::kAsymmetric, false});
  auto packed = *PackAwq("l", q);
  packed[2].shape = {1, 16};
  EXPECT_EQ(UnpackAwq(packed[0], packed[1], packed[2], 32).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace lowbit

// ggml's block layouts against ggml-common.h's sizes and bit positions written out by hand from
// ggml-quants.c's dequantize_row_* loops, and the codes lowbit chooses on them (ggml_grid.h): the search
// never loses to plain rounding on the same grid, follows its importances, and the errors fall with the
// bits. llama.cpp itself reads the blocks in tests/e2e/gguf_llamacpp_test.mjs.
#include "core/quant/ggml_types.h"

#include <cmath>
#include <cstring>
#include <map>
#include <random>

#include "gtest/gtest.h"
#include "core/quant/ggml_grid.h"
#include "core/quant/gptq.h"
#include "core/quant/rtn.h"
#include "core/tensor/dtype.h"
#include "tests/test_util/calibration_inputs.h"

namespace lowbit {
namespace {

TEST(GgmlTypesTest, TableMatchesGgmlCommon) {
  const std::vector<std::pair<const char*, size_t>> bytes = {{"Q4_0", 18}, {"Q4_1", 20}, {"Q5_0", 22}, {"Q5_1", 24},
                                                             {"Q8_0", 34}, {"Q2_K", 84}, {"Q3_K", 110}, {"Q4_K", 144},
                                                             {"Q5_K", 176}, {"Q6_K", 210}, {"IQ4_NL", 18}, {"IQ4_XS", 136}};
  for (const auto& [name, size] : bytes) {
    ASSERT_NE(FindGgmlType(name), nullptr) << name;
    EXPECT_EQ(FindGgmlType(name)->block_bytes, size) << name;
  }
  EXPECT_DOUBLE_EQ(FindGgmlType("q4_k")->bits_per_weight(), 4.5);
  EXPECT_DOUBLE_EQ(FindGgmlType("Q6_K")->bits_per_weight(), 6.5625);
  EXPECT_DOUBLE_EQ(FindGgmlType("Q2_K")->bits_per_weight(), 2.625);
  EXPECT_DOUBLE_EQ(FindGgmlType("IQ4_XS")->bits_per_weight(), 4.25);
  EXPECT_EQ(static_cast<uint32_t>(FindGgmlType("Q8_0")->type), 8u);
  EXPECT_EQ(static_cast<uint32_t>(FindGgmlType("IQ4_XS")->type), 23u);
  EXPECT_EQ(FindGgmlType("IQ2_XXS"), nullptr) << "not in the table";
}

std::vector<uint8_t> Bytes(const GgmlTypeTraits& t, const GgmlBlock& b) {
  std::vector<uint8_t> out(t.block_bytes);
  PackGgmlBlock(t, b, out.data());
  return out;
}

// Bit positions from ggml-quants.c's loops, element by element.
TEST(GgmlTypesTest, CodesSitWhereGgmlReadsThem) {
  {  // Q4_0: element j in the low nibble of qs[j], j + 16 in the high one.
    GgmlBlock b;
    b.d = 0.5f, b.scale[0] = 1, b.q[3] = 9, b.q[19] = 4;
    const std::vector<uint8_t> x = Bytes(*FindGgmlType("Q4_0"), b);
    EXPECT_EQ(x[2 + 3], 0x49);
  }
  {  // Q4_K: element 100 = chunk 1 (q += 32), second half (high nibble) of byte 32 + 4.
    GgmlBlock b;
    b.q[100] = 11;
    EXPECT_EQ(Bytes(*FindGgmlType("Q4_K"), b)[16 + 32 + 4], 11 << 4);
  }
  {  // Q5_K: element 100's fifth bit is qh[4] bit 3 (u1/u2 shift by 2 per 64 values).
    GgmlBlock b;
    b.q[100] = 16;
    const std::vector<uint8_t> x = Bytes(*FindGgmlType("Q5_K"), b);
    EXPECT_EQ(x[16 + 4], 1 << 3);
  }
  {  // Q6_K: element 200 = 128 + 2·32 + 8: ql[64 + 8] high nibble, qh[32 + 8] bits 4-5, scale 12.
    GgmlBlock b;
    b.q[200] = 0x2B, b.scale[12] = -7;
    const std::vector<uint8_t> x = Bytes(*FindGgmlType("Q6_K"), b);
    EXPECT_EQ(x[72], 0xB0);
    EXPECT_EQ(x[128 + 40], 0x2 << 4);
    EXPECT_EQ(static_cast<int8_t>(x[192 + 12]), -7);
  }
  {  // Q3_K: element 200: low bits qs[32 + 8] bits 4-5, high bit hmask[8] bit 4 + 2; scale 9 + 32 = 41:
     // low nibble in scales[1] high half, top bits in scales[8 + 1] bits 4-5.
    GgmlBlock b;
    b.q[200] = 6, b.scale[9] = 9;
    const std::vector<uint8_t> x = Bytes(*FindGgmlType("Q3_K"), b);
    EXPECT_EQ(x[32 + 32 + 8], 2 << 4);
    EXPECT_EQ(x[8], 1 << 6);
    EXPECT_EQ(x[96 + 1], (41 & 15) << 4);
    EXPECT_EQ(x[96 + 9] & 0x30, (41 >> 4) << 4);
  }
  {  // Q2_K: element 200 in qs[32 + 8] bits 4-5; sub-block 12's scale and min in scales[12]'s nibbles.
    GgmlBlock b;
    b.q[200] = 3, b.scale[12] = 5, b.min[12] = 9;
    const std::vector<uint8_t> x = Bytes(*FindGgmlType("Q2_K"), b);
    EXPECT_EQ(x[16 + 40], 3 << 4);
    EXPECT_EQ(x[12], 0x95);
  }
  {  // IQ4_XS: sub-block 5's 6-bit scale (−3 + 32 = 29) in scales_l[2] high nibble and scales_h bits 10-11.
    GgmlBlock b;
    b.scale[5] = -3;
    for (int s = 0; s < 8; ++s) if (s != 5) b.scale[s] = -32;  // stored as 0
    const std::vector<uint8_t> x = Bytes(*FindGgmlType("IQ4_XS"), b);
    uint16_t h;
    std::memcpy(&h, x.data() + 2, 2);
    EXPECT_EQ(x[4 + 2], (29 & 15) << 4);
    EXPECT_EQ(h, (29 >> 4) << 10);
  }
}

// Every field in range comes back as packed, and the values are ggml's formula on them.
TEST(GgmlTypesTest, BlocksRoundTripAndDecodeByTheFormula) {
  std::mt19937 rng(7);
  for (const GgmlTypeTraits& t : GgmlTypes()) {
    if (!t.quantized()) continue;
    const GgmlGrid& g = t.grid;
    GgmlBlock b;
    b.d = RoundToF16(0.01f), b.dmin = g.has_min() ? RoundToF16(g.free_min ? -0.03f : 0.002f) : 0.0f;
    for (int s = 0; s < t.block_size / g.sub_block; ++s) {
      b.scale[s] = static_cast<int16_t>(std::uniform_int_distribution<int>(g.scale_min, g.scale_max)(rng));
      b.min[s] = static_cast<int16_t>(g.has_min() ? std::uniform_int_distribution<int>(g.free_min ? 1 : 0, g.min_max)(rng) : 0);
    }
    for (int j = 0; j < t.block_size; ++j) b.q[j] = static_cast<uint8_t>(std::uniform_int_distribution<int>(0, g.levels - 1)(rng));
    const std::vector<uint8_t> x = Bytes(t, b);
    GgmlBlock back;
    UnpackGgmlBlock(t, x.data(), &back);
    std::vector<float> values(static_cast<size_t>(t.block_size));
    DequantizeGgmlRow(t.type, reinterpret_cast<const char*>(x.data()), t.block_size, values.data());
    for (int j = 0; j < t.block_size; ++j) {
      ASSERT_EQ(back.q[j], b.q[j]) << t.name << " element " << j;
      const int s = j / g.sub_block;
      const float level = g.table ? g.table[b.q[j]] : static_cast<float>(b.q[j] - g.zero);
      ASSERT_EQ(values[j], b.d * b.scale[s] * level - b.dmin * b.min[s]) << t.name << " element " << j;
    }
    for (int s = 0; s < t.block_size / g.sub_block; ++s) {
      EXPECT_EQ(back.scale[s], b.scale[s]) << t.name << " sub-block " << s;
      EXPECT_EQ(back.min[s], b.min[s]) << t.name << " sub-block " << s;
    }
    EXPECT_EQ(back.d, b.d) << t.name;
    EXPECT_EQ(back.dmin, b.dmin) << t.name;
  }
}

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

double RelativeError(const Matrix& w, const GgmlTensor& q) {
  const Matrix w_hat = Dequantize(QuantizedLayer(q));
  double num = 0, den = 0;
  for (size_t i = 0; i < w.data.size(); ++i) {
    num += std::pow(w.data[i] - w_hat.data[i], 2);
    den += std::pow(w.data[i], 2);
  }
  return std::sqrt(num / den);
}

// Plain rounding on the same grid: the extreme value on the end level (symmetric) or the range on all
// levels (with a minimum), scales straight to FP16 — what the search must beat.
double PlainRoundingError(const GgmlTypeTraits& t, const float* x) {
  const GgmlGrid& g = t.grid;
  double err = 0;
  for (int s = 0; s < t.block_size / g.sub_block; ++s) {
    const float* v = x + s * g.sub_block;
    float lo = v[0], hi = v[0], extreme = v[0];
    for (int j = 0; j < g.sub_block; ++j) {
      lo = std::min(lo, v[j]), hi = std::max(hi, v[j]);
      if (std::abs(v[j]) > std::abs(extreme)) extreme = v[j];
    }
    GgmlBlock b;
    b.scale[s] = 1, b.min[s] = 1;
    if (g.has_min()) {
      if (!g.free_min) lo = std::min(lo, 0.0f);
      b.d = RoundToF16((hi - lo) / static_cast<float>(g.levels - 1)), b.dmin = RoundToF16(-lo);
    } else {
      b.d = RoundToF16(extreme / g.level(extreme > 0 ? g.levels - 1 : 0)), b.min[s] = 0;
    }
    for (int j = 0; j < g.sub_block; ++j) {
      float value;
      NearestGgmlCode(g, b, s, v[j], &value);
      err += std::pow(v[j] - value, 2);
    }
  }
  return err;
}

TEST(GgmlGridTest, TheSearchBeatsPlainRoundingAndErrorsFallWithTheBits) {
  const Matrix w = testing::RandomMatrix(16, 512, 11);
  std::map<std::string, double> errors;
  for (const GgmlTypeTraits& t : GgmlTypes()) {
    if (!t.quantized()) continue;
    auto q = QuantizeGgmlRtn(w, t, nullptr);
    ASSERT_TRUE(q.ok()) << q.status();
    ASSERT_EQ(q->blocks.size(), 16 * t.RowBytes(512));
    errors[t.name] = RelativeError(w, *q);
    if (t.grid.two_level()) continue;  // sub-block scales on a shared d: no one-scale baseline
    double plain = 0, searched = 0;
    GgmlBlock block;
    for (int64_t r = 0; r < w.rows; ++r) {
      for (int64_t c = 0; c < w.cols; c += t.block_size) {
        plain += PlainRoundingError(t, w.row(r) + c);
        FitGgmlBlock(t, w.row(r) + c, nullptr, &block);
        searched += GgmlBlockError(t, block, w.row(r) + c, nullptr);
      }
    }
    EXPECT_LT(searched, t.grid.levels >= 64 ? plain * 1.0001 : 0.95 * plain) << t.name;
  }
  // Gaussian weights: roughly halving per bit.
  for (const auto& [lower, higher] : std::vector<std::pair<const char*, const char*>>{
           {"Q2_K", "Q3_K"}, {"Q3_K", "Q4_K"}, {"Q4_K", "Q5_K"}, {"Q5_K", "Q6_K"}, {"Q6_K", "Q8_0"},
           {"Q4_0", "Q5_0"}, {"Q4_1", "Q5_1"}, {"IQ4_XS", "Q5_K"}}) {
    EXPECT_LT(errors[higher], 0.75 * errors[lower]) << higher << " vs " << lower;
  }
  // At the same bits, a minimum or IQ4's levels (fitted to a bell curve) help.
  EXPECT_LT(errors["Q4_1"], errors["Q4_0"]);
  EXPECT_LT(errors["IQ4_NL"], errors["Q4_0"]);

  EXPECT_LT(errors["Q4_K"], 0.12);
  EXPECT_LT(errors["Q8_0"], 0.006);
}

TEST(GgmlGridTest, ImportancesPullTheErrorOntoTheOtherValues) {
  const GgmlTypeTraits& t = *FindGgmlType("Q4_K");
  const Matrix w = testing::RandomMatrix(64, 256, 12);
  std::vector<float> importance(256, 1.0f);
  for (int c = 0; c < 256; c += 7) importance[c] = 100.0f;
  auto weighted = QuantizeGgmlRtn(w, t, importance.data());
  auto plain = QuantizeGgmlRtn(w, t, nullptr);
  ASSERT_TRUE(weighted.ok() && plain.ok());
  double err_weighted = 0, err_plain = 0;
  std::vector<float> a(256), b(256);
  for (int64_t r = 0; r < 64; ++r) {
    weighted->DequantizeRow(r, a.data());
    plain->DequantizeRow(r, b.data());
    for (int c = 0; c < 256; ++c) {
      err_weighted += importance[c] * std::pow(w.row(r)[c] - a[c], 2);
      err_plain += importance[c] * std::pow(w.row(r)[c] - b[c], 2);
    }
  }
  EXPECT_LT(err_weighted, 0.8 * err_plain);
}

TEST(GgmlGridTest, RefusesRowsItsBlocksDoNotDivideAndNonFiniteWeights) {
  EXPECT_EQ(QuantizeGgmlRtn(testing::RandomMatrix(2, 96, 1), *FindGgmlType("Q4_K"), nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  Matrix w = testing::RandomMatrix(2, 32, 1);
  w.data[3] = NAN;
  EXPECT_EQ(QuantizeGgmlRtn(w, *FindGgmlType("Q4_0"), nullptr).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(QuantizeGgmlRtn(w, *FindGgmlType("F16"), nullptr).status().code(), absl::StatusCode::kInvalidArgument);
  Matrix zero{1, 256, std::vector<float>(256, 0.0f)};
  for (const char* name : {"Q4_K", "Q6_K", "Q4_1", "IQ4_XS", "Q2_K"}) {
    auto q = QuantizeGgmlRtn(zero, *FindGgmlType(name), nullptr);
    ASSERT_TRUE(q.ok()) << name;
    std::vector<float> back(256, 1.0f);
    q->DequantizeRow(0, back.data());
    for (float v : back) ASSERT_EQ(v, 0.0f) << name << ": zeros stay zeros";
  }
}

// GPTQ on ggml's blocks: the output error on correlated inputs falls well below rounding on the same type.
TEST(GgmlGridTest, GptqOnGgmlBlocksBeatsRoundingOnTheSameBlocks) {
  const testing::LayerInputs in = testing::CorrelatedInputs(256, 2048, 21);
  const Matrix w = testing::RandomMatrix(64, 256, 22);
  for (const char* name : {"Q4_K", "Q3_K", "Q4_0", "IQ4_NL", "Q5_K", "Q6_K"}) {
    const GgmlTypeTraits& t = *FindGgmlType(name);
    GptqOptions o;
    o.ggml = &t;
    auto gptq = QuantizeGptq(w, in.stats, o);
    ASSERT_TRUE(gptq.ok()) << name << ": " << gptq.status();
    ASSERT_TRUE(std::holds_alternative<GgmlTensor>(gptq->layer));
    auto rtn = QuantizeGgmlRtn(w, t, nullptr);
    ASSERT_TRUE(rtn.ok());
    const double e_gptq = testing::OutputError(w, Dequantize(gptq->layer), in);
    const double e_rtn = testing::OutputError(w, Dequantize(QuantizedLayer(*rtn)), in);
    EXPECT_LT(e_gptq, 0.8 * e_rtn) << name << ": GPTQ " << e_gptq << " vs rounding " << e_rtn;
  }
}

}  // namespace
}  // namespace lowbit

// GPTQ packing against a bit-by-bit reference of the layout and known answers, and round trips.
#include "core/pack/gptq.h"

#include <random>

#include "gtest/gtest.h"
#include "core/quant/rtn.h"

namespace lowbit {
namespace {

// The layout as a specification: per output column, the codes of inputs 0, 1, 2, ... laid end to end
// as a little-endian bit stream, cut into 32-bit words.
std::vector<uint32_t> ReferenceQweight(const QuantizedTensor& q) {
  const int64_t padded = (q.cols + 31) / 32 * 32;
  const int64_t words_per_col = padded * q.bits / 32;
  std::vector<uint32_t> out(words_per_col * q.rows, 0);
  for (int64_t j = 0; j < q.rows; ++j) {
    std::vector<bool> stream(padded * q.bits, false);
    for (int64_t i = 0; i < q.cols; ++i)
      for (int b = 0; b < q.bits; ++b) stream[i * q.bits + b] = (q.codes[j * q.cols + i] >> b) & 1;
    for (int64_t w = 0; w < words_per_col; ++w)
      for (int b = 0; b < 32; ++b)
        if (stream[w * 32 + b]) out[w * q.rows + j] |= 1u << b;
  }
  return out;
}

QuantizedTensor RandomQuantized(int64_t rows, int64_t cols, int bits, int64_t group_size, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  Matrix w{rows, cols, std::vector<float>(rows * cols)};
  for (float& v : w.data) v = normal(rng);
  return *QuantizeRtn(w, {bits, group_size, GridKind::kAsymmetric, false});
}

template <typename T>
std::vector<T> Values(const Tensor& t) {
  std::vector<T> v(t.bytes.size() / sizeof(T));
  std::memcpy(v.data(), t.bytes.data(), t.bytes.size());
  return v;
}

TEST(GptqPackTest, FourBitKnownAnswer) {
  QuantizedTensor q;
  q.rows = 1, q.cols = 32, q.bits = 4, q.group_size = 32;
  q.codes.resize(32);
  for (int i = 0; i < 32; ++i) q.codes[i] = static_cast<uint8_t>(i % 16);
  q.scales = {0.5f};
  q.zeros = {8};
  auto packed = PackGptq("l", q, GptqZeros::kV1);
  ASSERT_TRUE(packed.ok());
  const auto qweight = Values<uint32_t>((*packed)[0]);
  ASSERT_EQ(qweight.size(), 4u);
  EXPECT_EQ(qweight[0], 0x76543210u);
  EXPECT_EQ(qweight[1], 0xfedcba98u);
  EXPECT_EQ(Values<uint32_t>((*packed)[1])[0], 7u) << "v1 stores zero - 1";
  EXPECT_EQ(Values<uint32_t>((*PackGptq("l", q, GptqZeros::kV2))[1])[0], 8u) << "v2 stores the zero";
}

// GPTQModel's FORMAT.GPTQ_V2 exists because an asymmetric zero of 0 has no v1 form: refused, never wrapped.
TEST(GptqPackTest, ZeroPointZeroNeedsV2) {
  QuantizedTensor q;
  q.rows = 1, q.cols = 32, q.bits = 4, q.group_size = 32;
  q.codes.assign(32, 3);
  q.scales = {0.5f};
  q.zeros = {0};
  EXPECT_EQ(PackGptq("l", q, GptqZeros::kV1).status().code(), absl::StatusCode::kInvalidArgument);
  auto v2 = PackGptq("l", q, GptqZeros::kV2);
  ASSERT_TRUE(v2.ok());
  auto back = UnpackGptq((*v2)[0], (*v2)[1], (*v2)[2], (*v2)[3], 4, 1, 32, GptqZeros::kV2);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->zeros, q.zeros);
}

TEST(GptqPackTest, ThreeBitCodesStraddleWords) {
  QuantizedTensor q;
  q.rows = 1, q.cols = 32, q.bits = 3, q.group_size = 32;
  q.codes.assign(32, 0);
  q.codes[10] = 0b101;  // bits 30..32 of the stream: two in word 0, one in word 1
  q.codes[21] = 0b110;  // bits 63..65: one in word 1, two in word 2
  q.scales = {1.0f};
  q.zeros = {4};
  auto packed = PackGptq("l", q, GptqZeros::kV1);
  ASSERT_TRUE(packed.ok());
  const auto qweight = Values<uint32_t>((*packed)[0]);
  ASSERT_EQ(qweight.size(), 3u);
  EXPECT_EQ(qweight[0], 0x40000000u);
  EXPECT_EQ(qweight[1], 0x00000001u);
  EXPECT_EQ(qweight[2], 0x00000003u);
}

class GptqRoundTripTest : public ::testing::TestWithParam<std::tuple<int, int64_t, int64_t, int64_t>> {};

TEST_P(GptqRoundTripTest, MatchesReferenceLayoutAndUnpacksExactly) {
  const auto [bits, rows, cols, group_size] = GetParam();
  const QuantizedTensor q = RandomQuantized(rows, cols, bits, group_size, static_cast<uint32_t>(bits * 1000 + cols));
  auto packed = PackGptq("model.layers.0.mlp.down_proj", q, GptqZeros::kV2);  // asymmetric codes
  ASSERT_TRUE(packed.ok()) << packed.status();
  const std::vector<TensorSpec> specs = GptqTensorSpecs("model.layers.0.mlp.down_proj", rows, cols, bits, group_size);
  for (size_t i = 0; i < specs.size(); ++i) {
    EXPECT_EQ((*packed)[i].name, specs[i].name);
    EXPECT_EQ((*packed)[i].shape, specs[i].shape);
  }
  EXPECT_EQ(Values<uint32_t>((*packed)[0]), ReferenceQweight(q));
  auto unpacked = UnpackGptq((*packed)[0], (*packed)[1], (*packed)[2], (*packed)[3], bits, rows, cols, GptqZeros::kV2);
  ASSERT_TRUE(unpacked.ok()) << unpacked.status();
  EXPECT_EQ(unpacked->codes, q.codes);
  EXPECT_EQ(unpacked->zeros, q.zeros);
  EXPECT_EQ(unpacked->scales, q.scales) << "scales are FP16-exact, so FP16 storage is lossless";
  EXPECT_EQ(unpacked->group_size, q.group_size);
  EXPECT_EQ(unpacked->Dequantize().data, q.Dequantize().data);
}

INSTANTIATE_TEST_SUITE_P(AllBits, GptqRoundTripTest,
                         ::testing::Values(std::make_tuple(2, 64, 128, 32), std::make_tuple(3, 64, 128, 32),
                                           std::make_tuple(4, 64, 128, 128), std::make_tuple(8, 64, 128, -1),
                                           std::make_tuple(3, 40, 172, 32), std::make_tuple(4, 64, 172, 32),
                                           std::make_tuple(2, 33, 97, 50), std::make_tuple(8, 7, 172, 64)));

TEST(GptqPackTest, RejectsBitWidthsTheLayoutLacks) {
  const QuantizedTensor q = RandomQuantized(4, 32, 5, 32, 1);
  EXPECT_EQ(PackGptq("l", q, GptqZeros::kV2).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GptqPackTest, QuantizeConfigNamesTheFormat) {
  GptqConfigFields f;
  const nlohmann::json c = GptqQuantizeConfig(f);
  EXPECT_EQ(c["quant_method"], "gptq");
  EXPECT_EQ(c["bits"], 4);
  EXPECT_EQ(c["group_size"], 128);
  EXPECT_EQ(c["sym"], true);
  EXPECT_EQ(c["desc_act"], false);
  EXPECT_EQ(c["checkpoint_format"], "gptq");
  f.symmetric = false;
  EXPECT_EQ(GptqQuantizeConfig(f)["checkpoint_format"], "gptq_v2");
  EXPECT_EQ(GptqZerosOf(GptqQuantizeConfig(f)), GptqZeros::kV2);
  EXPECT_EQ(GptqZerosOf(nlohmann::json::object()), GptqZeros::kV1) << "configs without a format are v1";
}

TEST(GptqPackTest, ShapesEnginesRefuse) {
  EXPECT_EQ(GptqShapeProblem(4096, 4096, 128), "");
  EXPECT_EQ(GptqShapeProblem(4096, 11008, -1), "");
  EXPECT_NE(GptqShapeProblem(172, 64, 32), "") << "stories260K's MLP: output 172";
  EXPECT_NE(GptqShapeProblem(64, 172, 32), "");
  EXPECT_NE(GptqShapeProblem(4096, 4096 + 64, 128), "") << "input not divisible by the group";
}

}  // namespace
}  // namespace lowbit

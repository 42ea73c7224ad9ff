// The native layout: codes decoded here from the bit stream as the spec states it, round trips of LUT
// (FP16 codebooks, row scales), VQ (int8 codebooks) and OneBit layers, and malformed inputs refused.
#include "core/pack/native.h"

#include "gtest/gtest.h"
#include "core/quant/lut.h"
#include "core/quant/onebit.h"
#include "core/quant/vq.h"
#include "tests/test_util/calibration_inputs.h"

namespace lowbit {
namespace {

std::map<std::string, Tensor> ByName(const std::vector<Tensor>& tensors) {
  std::map<std::string, Tensor> m;
  for (const Tensor& t : tensors) m[t.name] = t;
  return m;
}

// Packs, checks the tensors against the specs, unpacks, and compares the dequantized weights bit for bit.
void ExpectRoundTrip(const QuantizedLayer& layer, const NativeLayout& layout) {
  auto packed = PackNative("p", layer);
  ASSERT_TRUE(packed.ok()) << packed.status();
  const std::vector<TensorSpec> specs = NativeTensorSpecs("p", layout);
  ASSERT_EQ(packed->size(), specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    EXPECT_EQ((*packed)[i].name, specs[i].name);
    EXPECT_EQ((*packed)[i].shape, specs[i].shape);
  }
  auto json = NativeLayout::FromJson(layout.ToJson().dump());
  ASSERT_TRUE(json.ok()) << json.status();
  auto back = UnpackNative("p", *json, ByName(*packed));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(Dequantize(*back).data, Dequantize(layer).data);
}

TEST(NativeLayoutTest, LutCodesAreALittleEndianBitStreamPerRow) {
  const Matrix w = testing::RandomMatrix(10, 36, 1);
  QuantConfig config;
  config.method = Method::kLut;
  config.lut.bits = 3;
  config.lut.granularity = LutGranularity::kPerGroupedChannel;
  config.lut.group_size = 4;
  config.lut.per_channel_scale = true;
  auto t = QuantizeLut(w, config.lut, nullptr);
  ASSERT_TRUE(t.ok());
  const NativeLayout layout = NativeLayoutFor(10, 36, config);
  ExpectRoundTrip(*t, layout);
  auto packed = *PackNative("p", *t);
  const Tensor& codes = packed[0];
  ASSERT_EQ(codes.shape, (std::vector<int64_t>{10, (36 * 3 + 7) / 8}));
  for (int64_t r = 0; r < 10; ++r) {
    for (int64_t c = 0; c < 36; ++c) {
      uint32_t code = 0;
      for (int b = 0; b < 3; ++b) {
        const int64_t bit = c * 3 + b;
        code |= ((static_cast<uint8_t>(codes.bytes[r * codes.shape[1] + bit / 8]) >> (bit % 8)) & 1u) << b;
      }
      ASSERT_EQ(code, t->codes[r * 36 + c]);
    }
  }
}

TEST(NativeLayoutTest, VectorPalettizationAlongOutputChannelsRoundTrips) {
  const Matrix w = testing::RandomMatrix(16, 20, 5);
  QuantConfig config;
  config.method = Method::kLut;
  config.lut.bits = 4;
  config.lut.cluster_dim = 4;
  config.lut.granularity = LutGranularity::kPerGroupedChannel;
  config.lut.group_size = 8;
  auto t = QuantizeLut(w, config.lut, nullptr);
  ASSERT_TRUE(t.ok()) << t.status();
  const NativeLayout layout = NativeLayoutFor(16, 20, config);
  EXPECT_EQ(layout.ToJson()["vector_axis"], "output");
  EXPECT_EQ(NativeTensorSpecs("p", layout)[0].shape, (std::vector<int64_t>{4, 20 * 4 / 8}));
  ExpectRoundTrip(*t, layout);
}

TEST(NativeLayoutTest, VqAndOneBitRoundTrip) {
  const Matrix w = testing::RandomMatrix(20, 48, 2);
  const testing::LayerInputs in = testing::CorrelatedInputs(48, 200, 3);
  QuantConfig vq;
  vq.method = Method::kVq;
  vq.vq.dim = 2;
  vq.vq.bits = 3;
  vq.vq.group_cols = 16;
  vq.vq.group_rows = 8;
  auto v = QuantizeVq(w, in.stats, vq.vq);
  ASSERT_TRUE(v.ok()) << v.status();
  ExpectRoundTrip(*v, NativeLayoutFor(20, 48, vq));
  QuantConfig onebit;
  onebit.method = Method::kOneBit;
  auto o = QuantizeOneBit(w, onebit.onebit, nullptr);
  ASSERT_TRUE(o.ok());
  ExpectRoundTrip(*o, NativeLayoutFor(20, 48, onebit));
}

TEST(NativeLayoutTest, RefusesMissingPartsBadShapesAndBadLayouts) {
  const Matrix w = testing::RandomMatrix(8, 16, 4);
  QuantConfig config;
  config.method = Method::kOneBit;
  auto packed = *PackNative("p", *QuantizeOneBit(w, config.onebit, nullptr));
  const NativeLayout layout = NativeLayoutFor(8, 16, config);
  auto parts = ByName(packed);
  parts.erase("p.b");
  EXPECT_EQ(UnpackNative("p", layout, parts).status().code(), absl::StatusCode::kInvalidArgument);
  parts = ByName(packed);
  parts["p.a"].shape = {4};
  EXPECT_EQ(UnpackNative("p", layout, parts).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(NativeLayout::FromJson("{\"scheme\": \"codebook\", \"rows\": 4}").ok());
  EXPECT_FALSE(NativeLayout::FromJson("not json").ok());
  EXPECT_FALSE(NativeLayout::FromJson(R"({"scheme":"codebook","rows":4,"cols":6,"dim":4,"index_bits":2,)"
                                      R"("group_rows":4,"group_cols":4,"codebook_dtype":"int8"})").ok());
}

}  // namespace
}  // namespace lowbit

// F16/BF16 conversions checked exhaustively over all 65,536 bit patterns against references that share
// no code with the implementation: the compiler's _Float16 (IEEE binary16 in libgcc) and value-level
// arithmetic in double.
#include "core/tensor/dtype.h"

#include <cmath>
#include <random>

#include "gtest/gtest.h"

namespace lowbit {
namespace {

// Value of a binary16 pattern from its definition.
double ReferenceF16Value(uint16_t h) {
  const int sign = (h >> 15) ? -1 : 1;
  const int exp = (h >> 10) & 0x1f;
  const int mant = h & 0x3ff;
  if (exp == 0) return sign * std::ldexp(mant, -24);
  if (exp == 31) return mant ? NAN : sign * INFINITY;
  return sign * std::ldexp(1024 + mant, exp - 25);
}

double ReferenceBf16Value(uint16_t h) {
  const int sign = (h >> 15) ? -1 : 1;
  const int exp = (h >> 7) & 0xff;
  const int mant = h & 0x7f;
  if (exp == 0) return sign * std::ldexp(mant, -133);
  if (exp == 255) return mant ? NAN : sign * INFINITY;
  return sign * std::ldexp(128 + mant, exp - 134);
}

// Nearest BF16 to a finite float by comparing the two neighbouring candidates, ties to the even mantissa.
uint16_t ReferenceF32ToBf16(float f) {
  const uint32_t bits = FloatBits(f);
  const uint16_t down = static_cast<uint16_t>(bits >> 16);  // truncation toward zero
  const uint16_t up = static_cast<uint16_t>(down + 1);      // next magnitude away from zero
  const double x = std::fabs(static_cast<double>(f));
  const double d_down = x - std::fabs(ReferenceBf16Value(down));
  const double d_up = std::fabs(ReferenceBf16Value(up)) - x;
  if (d_down < d_up) return down;
  if (d_up < d_down) return up;
  return (down & 1) ? up : down;
}

TEST(DTypeTest, F16ToF32MatchesDefinitionAndCompilerForAllPatterns) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float ours = F16ToF32(static_cast<uint16_t>(h));
    const double ref = ReferenceF16Value(static_cast<uint16_t>(h));
    _Float16 compiler;
    const uint16_t h16 = static_cast<uint16_t>(h);
    std::memcpy(&compiler, &h16, 2);
    if (std::isnan(ref)) {
      EXPECT_TRUE(std::isnan(ours)) << h;
      continue;
    }
    ASSERT_EQ(static_cast<double>(ours), ref) << "pattern " << h;
    ASSERT_EQ(FloatBits(ours), FloatBits(static_cast<float>(compiler))) << "pattern " << h;
  }
}

TEST(DTypeTest, F16RoundTripIsIdentityForAllPatterns) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint16_t back = F32ToF16(F16ToF32(static_cast<uint16_t>(h)));
    if (std::isnan(ReferenceF16Value(static_cast<uint16_t>(h)))) {
      EXPECT_TRUE(std::isnan(F16ToF32(back))) << h;
      EXPECT_EQ(back & 0x8000, h & 0x8000) << "NaN keeps its sign";
    } else {
      ASSERT_EQ(back, h);
    }
  }
}

TEST(DTypeTest, F32ToF16RoundsHalfToEvenLikeTheCompiler) {
  // Every midpoint between neighbouring F16 values, the values a hair either side, and random floats.
  std::vector<float> inputs;
  for (uint32_t h = 0; h < 0x7c00; ++h) {
    const double lo = ReferenceF16Value(static_cast<uint16_t>(h));
    const double hi = h + 1 < 0x7c00 ? ReferenceF16Value(static_cast<uint16_t>(h + 1)) : 65536.0;
    const float mid = static_cast<float>((lo + hi) / 2);
    inputs.insert(inputs.end(), {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, INFINITY), static_cast<float>(lo)});
  }
  std::mt19937 rng(7);
  for (int i = 0; i < 200000; ++i) inputs.push_back(BitsToFloat(rng()));
  inputs.insert(inputs.end(), {65504.0f, 65519.99f, 65520.0f, 1e9f, INFINITY, 0.0f, 1e-9f, 2.98023224e-8f});
  for (float f : inputs) {
    for (float v : {f, -f}) {
      if (std::isnan(v)) continue;
      const _Float16 compiler = static_cast<_Float16>(v);
      uint16_t expected;
      std::memcpy(&expected, &compiler, 2);
      ASSERT_EQ(F32ToF16(v), expected) << "value " << v;
    }
  }
}

TEST(DTypeTest, NonFiniteValuesConvertExplicitly) {
  EXPECT_EQ(F32ToF16(INFINITY), 0x7c00);
  EXPECT_EQ(F32ToF16(-INFINITY), 0xfc00);
  EXPECT_EQ(F32ToF16(70000.0f), 0x7c00) << "overflow saturates to infinity, as IEEE narrowing does";
  EXPECT_TRUE(std::isnan(F16ToF32(F32ToF16(NAN))));
  EXPECT_EQ(F32ToBf16(INFINITY), 0x7f80);
  EXPECT_EQ(F32ToBf16(-INFINITY), 0xff80);
  EXPECT_TRUE(std::isnan(Bf16ToF32(F32ToBf16(NAN))));
  // A NaN whose payload lives only in the low 16 bits must not truncate to infinity.
  EXPECT_TRUE(std::isnan(Bf16ToF32(F32ToBf16(BitsToFloat(0x7f800001u)))));
  // The largest finite float rounds up to infinity in BF16, as it does in PyTorch.
  EXPECT_EQ(F32ToBf16(BitsToFloat(0x7f7fffffu)), 0x7f80);
}

TEST(DTypeTest, Bf16ToF32MatchesDefinitionForAllPatterns) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const double ref = ReferenceBf16Value(static_cast<uint16_t>(h));
    const float ours = Bf16ToF32(static_cast<uint16_t>(h));
    if (std::isnan(ref)) {
      EXPECT_TRUE(std::isnan(ours));
    } else {
      ASSERT_EQ(static_cast<double>(ours), ref) << h;
    }
    if (!std::isnan(ref)) {
      ASSERT_EQ(F32ToBf16(ours), h) << "round trip of pattern " << h;
    }
  }
}

TEST(DTypeTest, F32ToBf16MatchesNearestEvenReference) {
  std::vector<float> inputs;
  for (uint32_t h = 0; h < 0x7f7f; ++h) {  // midpoints of every finite positive BF16 pair, and neighbours
    const uint32_t mid = (h << 16) | 0x8000u;
    inputs.insert(inputs.end(), {BitsToFloat(mid), BitsToFloat(mid - 1), BitsToFloat(mid + 1)});
  }
  std::mt19937 rng(11);
  for (int i = 0; i < 200000; ++i) inputs.push_back(BitsToFloat(rng()));
  for (float f : inputs) {
    if (!std::isfinite(f) || std::fabs(f) >= 3.38e38f) continue;  // the reference has no overflow case
    ASSERT_EQ(F32ToBf16(f), ReferenceF32ToBf16(f)) << "bits " << std::hex << FloatBits(f);
  }
}

TEST(DTypeTest, BulkConversionsMatchScalar) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> values(1001);
  for (float& v : values) v = normal(rng);
  for (DType dtype : {DType::kF16, DType::kBF16, DType::kF32}) {
    std::vector<uint8_t> raw(values.size() * DTypeSize(dtype) + 1);
    // Odd offset: checkpoint tensors are only byte-aligned.
    ConvertFromF32(dtype, values.data(), values.size(), raw.data() + 1);
    std::vector<float> back(values.size());
    ConvertToF32(dtype, raw.data() + 1, values.size(), back.data());
    for (size_t i = 0; i < values.size(); ++i) {
      const float expected = dtype == DType::kF16 ? F16ToF32(F32ToF16(values[i]))
                             : dtype == DType::kBF16 ? Bf16ToF32(F32ToBf16(values[i]))
                                                     : values[i];
      ASSERT_EQ(back[i], expected);
    }
  }
}

// The bulk paths (F16C where the CPU has it) agree with the scalar reference on every F16 pattern and on
// every rounding midpoint, at odd lengths so the scalar tails run too.
TEST(DTypeTest, BulkF16MatchesScalarOnAllPatternsAndMidpoints) {
  std::vector<uint16_t> all(65536 + 3);
  for (size_t h = 0; h < all.size(); ++h) all[h] = static_cast<uint16_t>(h);
  std::vector<float> wide(all.size());
  ConvertToF32(DType::kF16, all.data(), all.size(), wide.data());
  for (size_t h = 0; h < all.size(); ++h) {
    const float scalar = F16ToF32(all[h]);
    if (std::isnan(scalar)) {
      ASSERT_TRUE(std::isnan(wide[h])) << h;
    } else {
      ASSERT_EQ(FloatBits(wide[h]), FloatBits(scalar)) << "pattern " << h;
    }
  }
  std::vector<float> narrowable;
  for (uint32_t h = 0; h < 0x7c00; ++h) {
    const float lo = F16ToF32(static_cast<uint16_t>(h));
    const float hi = h + 1 < 0x7c00 ? F16ToF32(static_cast<uint16_t>(h + 1)) : 65536.0f;
    const float mid = static_cast<float>((static_cast<double>(lo) + hi) / 2);
    for (float v : {lo, mid, std::nextafter(mid, 0.0f), std::nextafter(mid, INFINITY)}) {
      narrowable.push_back(v);
      narrowable.push_back(-v);
    }
  }
  narrowable.insert(narrowable.end(), {INFINITY, -INFINITY, 1e9f, -1e9f, 0.0f});
  std::vector<uint16_t> narrow(narrowable.size());
  ConvertFromF32(DType::kF16, narrowable.data(), narrowable.size(), narrow.data());
  for (size_t i = 0; i < narrowable.size(); ++i) ASSERT_EQ(narrow[i], F32ToF16(narrowable[i])) << narrowable[i];
}

TEST(DTypeTest, ParsesSafetensorsNames) {
  EXPECT_EQ(ParseDType("BF16"), DType::kBF16);
  EXPECT_EQ(ParseDType("F16"), DType::kF16);
  EXPECT_EQ(ParseDType("F64"), std::nullopt);
  EXPECT_EQ(DTypeName(DType::kI32), "I32");
}

}  // namespace
}  // namespace lowbit

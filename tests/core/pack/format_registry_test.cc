// The format table, iterated: names round-trip, every format takes exactly the methods it says (through
// the job's validation), and every safetensors format packs a layer into exactly the tensors it declares.
#include "core/pack/format_registry.h"

#include "gtest/gtest.h"
#include "absl/strings/match.h"
#include "core/job/quantize_job.h"
#include "core/quant/rtn.h"
#include "tests/test_util/calibration_inputs.h"

namespace lowbit {
namespace {

TEST(FormatRegistryTest, NamesRoundTrip) {
  for (const OutputFormatTraits& t : OutputFormats()) EXPECT_EQ(ParseFormat(t.name), t.format) << t.name;
  EXPECT_EQ(ParseFormat("auto"), OutputFormat::kAuto);
  EXPECT_EQ(ParseFormat("exl2"), std::nullopt);
  EXPECT_EQ(ResolveFormat(OutputFormat::kAuto, Method::kGptq), OutputFormat::kGptq);
  EXPECT_EQ(ResolveFormat(OutputFormat::kAuto, Method::kVq), OutputFormat::kNative);
}

TEST(FormatRegistryTest, EveryFormatTakesTheMethodsItSays) {
  for (const OutputFormatTraits& t : OutputFormats()) {
    for (Method m : {Method::kRtn, Method::kInt8, Method::kGptq, Method::kAwq, Method::kLut, Method::kVq, Method::kOneBit}) {
      QuantizeJobSpec spec;
      spec.source_uri = "file:///m", spec.destination_uri = "file:///o";
      spec.format = t.format;
      spec.quant.method = m;
      if (m == Method::kInt8) spec.quant.bits = 8, spec.quant.group_size = -1;
      spec.calibration.text_uri = "file:///calib.ids.json";
      const absl::Status s = ValidateJobSpec(spec);
      // Taken, unless the layout cannot hold this config (AWQ's 4 bits against int8's 8).
      const bool holds = t.check == nullptr || t.check(spec.quant).ok();
      EXPECT_EQ(s.ok(), t.accepts(m) && holds) << t.name << " x " << MethodName(m) << ": " << s;
      if (!t.accepts(m)) {
        EXPECT_TRUE(absl::StrContains(s.message(), t.methods)) << s;
      }
    }
  }
}

TEST(FormatRegistryTest, SafetensorsFormatsPackExactlyTheTensorsTheyDeclare) {
  const Matrix w = testing::RandomMatrix(64, 128, 5);
  QuantConfig quant;
  quant.bits = 4, quant.group_size = 32;
  auto q = QuantizeRtn(w, {4, 32, GridKind::kAsymmetric, false});
  ASSERT_TRUE(q.ok());
  int formats = 0;
  for (const OutputFormatTraits& t : OutputFormats()) {
    if (t.tensor_specs == nullptr) {
      EXPECT_EQ(t.format, OutputFormat::kGguf) << "only GGUF brings its own container";
      continue;
    }
    std::map<std::string, std::string> metadata;
    const std::vector<TensorSpec> specs = t.tensor_specs("layer", 64, 128, quant, &metadata);
    auto packed = t.pack("layer", QuantizedLayer(*q));
    ASSERT_TRUE(packed.ok()) << t.name << ": " << packed.status();
    ASSERT_EQ(packed->size(), specs.size()) << t.name;
    for (size_t i = 0; i < specs.size(); ++i) {
      EXPECT_EQ((*packed)[i].name, specs[i].name) << t.name;
      EXPECT_EQ((*packed)[i].shape, specs[i].shape) << t.name << " " << specs[i].name;
      EXPECT_EQ((*packed)[i].dtype, specs[i].dtype) << t.name << " " << specs[i].name;
    }
    ++formats;
  }
  EXPECT_EQ(formats, 3);
}

}  // namespace
}  // namespace lowbit

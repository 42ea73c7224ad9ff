// AWQ against its claims, measured directly on the inputs: with outlier input channels its scale search
// and clip search lower the output error below RTN's on the same grid; and on the real model, folding the
// scales into the RMSNorms and the preceding layers leaves every block's function unchanged.
#include "core/quant/awq.h"

#include <cmath>

#include "gtest/gtest.h"
#include "core/checkpoint/checkpoint_reader.h"
#include "core/quant/rtn.h"
#include "core/runtime/block_calibrator.h"
#include "core/storage/local_object_store.h"
#include "tests/test_util/calibration_inputs.h"
#include "tests/test_util/temp_dir.h"

namespace lowbit {
namespace {

TEST(AwqTest, ScalesAndClippingBeatRtnOnOutlierChannels) {
  const Matrix w = testing::RandomMatrix(64, 128, 1);
  const testing::LayerInputs in = testing::CorrelatedInputs(128, 800, 2, {3, 50, 77, 100}, 25.0f);
  const AwqOptions o{4, 32, true, 20, true};
  auto found = SearchAwqScales({&w}, in.stats, o);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_GT(found->alpha, 0.0);
  // Ŵ = Q(W·diag(s))·diag(s)⁻¹, measured on the inputs themselves.
  Matrix scaled = w;
  for (int64_t r = 0; r < w.rows; ++r)
    for (int64_t c = 0; c < w.cols; ++c) scaled.data[r * w.cols + c] *= found->scales[c];
  auto unscale = [&](Matrix m) {
    for (int64_t r = 0; r < m.rows; ++r)
      for (int64_t c = 0; c < m.cols; ++c) m.data[r * m.cols + c] /= found->scales[c];
    return m;
  };
  const double rtn = testing::OutputError(w, QuantizeRtn(w, {4, 32, GridKind::kAsymmetric, false})->Dequantize(), in);
  const double scaled_only =
      testing::OutputError(w, unscale(QuantizeRtn(scaled, {4, 32, GridKind::kAsymmetric, false})->Dequantize()), in);
  auto clipped = QuantizeAwqLayer(scaled, ScaleStats(in.stats, found->scales), true, o);
  ASSERT_TRUE(clipped.ok());
  const double awq = testing::OutputError(w, unscale(clipped->Dequantize()), in);
  EXPECT_LT(scaled_only, 0.9 * rtn);
  EXPECT_LE(awq, scaled_only * (1 + 1e-6));
  EXPECT_NEAR(found->error / found->error_unscaled, scaled_only / rtn, 0.02) << "H-based search agrees with the inputs";
}

// Nothing included: every layer comes back scaled but in float, so each block must compute what it did.
TEST(AwqTest, FoldedScalesLeaveEveryBlockUnchanged) {
  auto store = *LocalObjectStore::Create({"/"});
  auto reader = OpenCheckpoint(store.get(), testing::SharedData("models/stories260K/stories260K.bin"));
  ASSERT_TRUE(reader.ok());
  const std::vector<std::vector<int>> windows = {{1, 40, 200, 7, 99, 310, 45, 12}, {1, 5, 6, 7, 300, 2, 11, 90}};
  BlockCalibratorOptions o;
  o.mode = BlockCalibratorOptions::Mode::kAwq;
  o.awq = {4, 32, true, 20, true};
  o.include = [](const std::string&) { return false; };
  auto calibrator = BlockCalibrator::Create(**reader, windows, o);
  ASSERT_TRUE(calibrator.ok()) << calibrator.status();
  const Architecture& arch = *FindArchitecture("LlamaForCausalLM");
  const BlockGeometry g = *BlockGeometry::Of((*reader)->descriptor());
  for (int b = 0; b < (*calibrator)->num_blocks(); ++b) {
    const Matrix x = (*calibrator)->hidden_states();
    auto block = (*calibrator)->Next();
    ASSERT_TRUE(block.ok()) << block.status();
    EXPECT_TRUE(block->layers.empty());
    BlockWeights original = *ReadBlock(**reader, arch, g, b), folded = original;
    int changed = 0;
    for (const auto& [name, values] : block->replaced) {
      const std::string local = name.substr(arch.BlockPrefix(b).size());
      std::vector<float>* target = folded.Linear(local) ? &folded.Linear(local)->data : folded.Norm(local);
      ASSERT_NE(target, nullptr) << name;
      ASSERT_EQ(target->size(), values.size());
      changed += *target != values;
      *target = values;
    }
    EXPECT_GE(changed, 5) << "norms and layers were rescaled";
    const Matrix expected = BlockForward(g, original, x, {8, 8});
    const Matrix got = BlockForward(g, folded, x, {8, 8});
    for (size_t i = 0; i < expected.data.size(); ++i) {
      ASSERT_NEAR(got.data[i], expected.data[i], 2e-3f * (1 + std::abs(expected.data[i]))) << b << ":" << i;
    }
  }
}

}  // namespace
}  // namespace lowbit

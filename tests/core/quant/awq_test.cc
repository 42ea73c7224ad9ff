// AWQ against its claims, measured directly on the inputs: with outlier input channels its scale search
// and clip search lower the output error below RTN's on the same grid; and on the real model, folding the
// scales into the RMSNorms and the preceding layers leaves every block's function unchanged.
#include "core/quant/awq.h"

#include <cmath>
#include <set>

#include "gtest/gtest.h"
#include "core/checkpoint/checkpoint_reader.h"
#include "core/quant/rtn.h"
#include "core/runtime/block_calibrator.h"
#include "core/storage/local_object_store.h"
#include "tests/test_util/calibration_inputs.h"
#include "tests/test_util/reference_checkpoints.h"
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
  const double awq = testing::OutputError(w, unscale(Dequantize(*clipped)), in);
  EXPECT_LT(scaled_only, 0.9 * rtn);
  EXPECT_LE(awq, scaled_only * (1 + 1e-6));
  EXPECT_NEAR(found->error / found->error_unscaled, scaled_only / rtn, 0.02) << "H-based search agrees with the inputs";
}

// Nothing included: every layer comes back scaled but in float, so each block must compute what it did.
// Returns the names of the tensors whose values the folds changed.
std::set<std::string> ExpectFoldedScalesLeaveEveryBlockUnchanged(const CheckpointReader& reader,
                                                                 const std::vector<std::vector<int>>& windows) {
  std::set<std::string> changed;
  BlockCalibratorOptions o;
  o.mode = BlockCalibratorOptions::Mode::kAwq;
  o.awq = {4, 32, true, 20, true};
  o.include = [](const std::string&) { return false; };
  auto calibrator = BlockCalibrator::Create(reader, windows, o);
  EXPECT_TRUE(calibrator.ok()) << calibrator.status();
  if (!calibrator.ok()) return changed;
  const Architecture& arch = **ArchitectureOf(reader.descriptor());
  const BlockGeometry g = *BlockGeometry::Of(reader.descriptor());
  std::vector<int64_t> lengths;
  for (const auto& w : windows) lengths.push_back(static_cast<int64_t>(w.size()));
  for (int b = 0; b < (*calibrator)->num_blocks(); ++b) {
    const Matrix x = (*calibrator)->hidden_states();
    auto block = (*calibrator)->Next();
    EXPECT_TRUE(block.ok()) << block.status();
    if (!block.ok()) return changed;
    EXPECT_TRUE(block->layers.empty());
    BlockWeights original = *ReadBlock(reader, arch, g, b), folded = original;
    for (const auto& [name, values] : block->replaced) {
      const std::string local = name.substr(arch.BlockPrefix(b).size());
      std::vector<float>* target = folded.Linear(local) ? &folded.Linear(local)->data
                                   : folded.Bias(local) ? folded.Bias(local)
                                                        : folded.Norm(local);
      EXPECT_TRUE(target != nullptr && target->size() == values.size()) << name;
      if (target == nullptr || target->size() != values.size()) return changed;
      if (*target != values) changed.insert(local);
      *target = values;
    }
    const Matrix expected = BlockForward(g, original, x, lengths);
    const Matrix got = BlockForward(g, folded, x, lengths);
    for (size_t i = 0; i < expected.data.size(); ++i) {
      EXPECT_NEAR(got.data[i], expected.data[i], 2e-3f * (1 + std::abs(expected.data[i]))) << b << ":" << i;
      if (std::abs(got.data[i] - expected.data[i]) > 2e-3f * (1 + std::abs(expected.data[i]))) return changed;
    }
  }
  return changed;
}

TEST(AwqTest, FoldedScalesLeaveEveryBlockUnchanged) {
  auto store = *LocalObjectStore::Create({"/"});
  auto reader = OpenCheckpoint(store.get(), testing::SharedData("models/stories260K/stories260K.bin"));
  ASSERT_TRUE(reader.ok());
  const std::set<std::string> changed =
      ExpectFoldedScalesLeaveEveryBlockUnchanged(**reader, {{1, 40, 200, 7, 99, 310, 45, 12}, {1, 5, 6, 7, 300, 2, 11, 90}});
  EXPECT_GE(changed.size(), 5u) << "norms and layers were rescaled";
}

// v's and up's biases are divided with their rows (by o's and down's scales).
TEST(AwqTest, FoldedScalesRescaleBiasesWithTheirLayers) {
  ASSERT_FALSE(testing::ReferenceCheckpointDir().empty());
  auto store = *LocalObjectStore::Create({"/"});
  auto reader = OpenCheckpoint(store.get(), testing::ReferenceCheckpointDir() + "/llama_mha_biases");
  ASSERT_TRUE(reader.ok()) << reader.status();
  const std::set<std::string> changed =
      ExpectFoldedScalesLeaveEveryBlockUnchanged(**reader, {{1, 40, 20, 7, 9, 31, 45, 12}, {1, 5, 6, 7, 30, 2, 11, 90}});
  EXPECT_TRUE(changed.count("self_attn.v_proj.bias") || changed.count("mlp.up_proj.bias"))
      << "some bias was rescaled, so the check above covered it";
}

}  // namespace
}  // namespace lowbit

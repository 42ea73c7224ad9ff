// AWQ against its claims, measured directly on the inputs: with outlier input channels its scale search
// and clip search lower the output error below RTN's on the same grid; and on the real model, folding the
// scales into the RMSNorms and the preceding layers leaves the model's function unchanged.
#include "core/quant/awq.h"

#include <cmath>

#include "gtest/gtest.h"
#include "core/checkpoint/checkpoint_reader.h"
#include "core/quant/rtn.h"
#include "core/runtime/calibration.h"
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

TEST(AwqTest, FoldedScalesLeaveTheModelUnchanged) {
  auto store = *LocalObjectStore::Create({"/"});
  auto reader = OpenCheckpoint(store.get(), testing::SharedData("models/stories260K/stories260K.bin"));
  ASSERT_TRUE(reader.ok());
  auto model = LlamaModel::Load(**reader);
  ASSERT_TRUE(model.ok());
  const std::vector<std::vector<int>> windows = {{1, 40, 200, 7, 99, 310, 45, 12}, {1, 5, 6, 7, 300, 2, 11, 90}};
  // Nothing included: every layer comes back scaled but in float, so the model must compute the same.
  auto awq = RunAwq(*model, windows, {4, 32, true, 20, true}, [](const std::string&) { return false; });
  ASSERT_TRUE(awq.ok()) << awq.status();
  EXPECT_TRUE(awq->layers.empty());
  LlamaModel folded = *model;
  int changed = 0;
  for (const auto& [name, values] : awq->replaced) {
    std::vector<float>* target = folded.MutableLinear(name) ? &folded.MutableLinear(name)->data : folded.MutableNorm(name);
    ASSERT_NE(target, nullptr) << name;
    ASSERT_EQ(target->size(), values.size());
    changed += *target != values;
    *target = values;
  }
  EXPECT_GE(changed, 5 * 2) << "norms and layers were rescaled";
  for (int token : {1, 17, 250, 3}) {
    const std::vector<float> expected = model->Forward(token);
    const std::vector<float>& got = folded.Forward(token);
    for (size_t i = 0; i < expected.size(); ++i) ASSERT_NEAR(got[i], expected[i], 2e-3f * (1 + std::abs(expected[i]))) << i;
  }
}

}  // namespace
}  // namespace lowbit

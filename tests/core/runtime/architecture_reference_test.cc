// Every architecture of the table against an independent reference: tests/reference/hf_reference.py
// writes tiny random checkpoints (one per architecture and config variant: rope scalings, both config
// layouts, tied/untied embeddings, GQA ratios, biases, q/k norms, head_dim, sliding windows) and their
// logits from a float64 NumPy forward pass written from transformers' modeling code. lowbit's batched block
// pass (calibration, evaluation) and its token step (generation) must match them within 1e-4 relative.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "core/checkpoint/checkpoint_reader.h"
#include "core/runtime/decoder_block.h"
#include "core/runtime/llama_model.h"
#include "core/storage/local_object_store.h"
#include "gtest/gtest.h"
#include "tests/test_util/reference_checkpoints.h"
#include "tests/test_util/temp_dir.h"

namespace lowbit {
namespace {

// max |got - want| / max |want| over all logits of one window.
double RelativeDifference(const float* got, const float* want, size_t n) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < n; ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(got[i]) - want[i]));
    scale = std::max(scale, std::abs(static_cast<double>(want[i])));
  }
  return diff / scale;
}

class ArchitectureReferenceTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ArchitectureReferenceTest, LogitsMatchTheReference) {
  ASSERT_FALSE(testing::ReferenceCheckpointDir().empty()) << "tests/reference/hf_reference.py failed";
  const std::string folder = testing::ReferenceCheckpointDir() + "/" + GetParam();
  auto store = *LocalObjectStore::Create({"/"});
  auto reader = OpenCheckpoint(store.get(), folder);
  ASSERT_TRUE(reader.ok()) << reader.status();
  auto arch = ArchitectureOf((*reader)->descriptor());
  ASSERT_TRUE(arch.ok()) << arch.status();
  auto g = BlockGeometry::Of((*reader)->descriptor());
  ASSERT_TRUE(g.ok()) << g.status();
  const auto windows = nlohmann::json::parse(testing::ReadFile(folder + "/windows.json")).get<std::vector<std::vector<int>>>();
  const std::string reference_bytes = testing::ReadFile(folder + "/logits.f32");
  const float* reference = reinterpret_cast<const float*>(reference_bytes.data());

  // Batched: every window at once through each block, as calibration and evaluation run it.
  std::vector<int> tokens;
  std::vector<int64_t> lengths;
  for (const auto& w : windows) {
    tokens.insert(tokens.end(), w.begin(), w.end());
    lengths.push_back(static_cast<int64_t>(w.size()));
  }
  ASSERT_EQ(reference_bytes.size(), tokens.size() * static_cast<size_t>(g->vocab) * sizeof(float));
  Matrix x = *Embed(**reader, **arch, *g, tokens);
  for (int b = 0; b < g->layers; ++b) {
    auto w = ReadBlock(**reader, **arch, *g, b);
    ASSERT_TRUE(w.ok()) << w.status();
    x = BlockForward(*g, *w, x, lengths);
  }
  auto head = ReadOutputHead(**reader, **arch, *g);
  ASSERT_TRUE(head.ok()) << head.status();
  const Matrix logits = TimesTransposed(RmsNormRows(x, head->norm, g->eps), head->lm_head);
  const double batched = RelativeDifference(logits.data.data(), reference, logits.data.size());
  EXPECT_LE(batched, 1e-4);

  // Token by token with the KV cache, as generation runs it. Dynamic NTK rescales the rotary base with the
  // sequence length beyond max_position_embeddings, so a window longer than that is compared batched only
  // (a growing sequence rotates its early keys with the frequencies of its shorter past, as transformers'
  // generation does).
  auto model = LlamaModel::Load(**reader);
  ASSERT_TRUE(model.ok()) << model.status();
  double stepped = 0;
  size_t offset = 0;
  for (const auto& w : windows) {
    const bool comparable = g->rope.type != RopeParameters::Type::kDynamic || static_cast<int64_t>(w.size()) <= g->max_positions;
    model->Reset();
    for (size_t t = 0; t < w.size(); ++t) {
      const std::vector<float>& out = model->Forward(w[t]);
      if (comparable) stepped = std::max(stepped, RelativeDifference(out.data(), reference + offset, out.size()));
      offset += static_cast<size_t>(g->vocab);
    }
  }
  EXPECT_LE(stepped, 1e-4);
  std::printf("[ reference ] %-26s %-18s batched %.2e  token step %.2e\n", GetParam().c_str(), (*arch)->name.c_str(),
              batched, stepped);
}

const std::vector<std::string> kVariants = {"llama3_rope",         "llama_dynamic_rope",      "llama_gqa",
                                             "llama_k_blocks",      "llama_linear_rope",       "llama_mha_biases",
                                             "llama_mha_tied",      "llama_mqa_biases",        "llama_rope_parameters",
                                             "llama_yarn_rope",     "mistral_head_dim_window", "qwen2_biases_tied",
                                             "qwen3_qk_norm",       "qwen3_yarn"};

INSTANTIATE_TEST_SUITE_P(Variants, ArchitectureReferenceTest, ::testing::ValuesIn(kVariants),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

// The list above is the script's: a variant added there and not here would go untested.
TEST_F(ArchitectureReferenceTest, EveryVariantOfTheScriptIsTested) {
  const auto variants =
      nlohmann::json::parse(testing::ReadFile(testing::ReferenceCheckpointDir() + "/variants.json")).get<std::vector<std::string>>();
  EXPECT_EQ(variants, kVariants);
}

}  // namespace
}  // namespace lowbit

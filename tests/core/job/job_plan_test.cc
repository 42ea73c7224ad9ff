// The resource plan from headers alone: the GPTQ papers' default calibration on a Llama-2-7B checkpoint
// fits a 24 GB machine, the estimate grows with what the job holds (calibration tokens, evaluation) and
// not with the number of decoder blocks, and architectures outside the table are refused.
#include "core/job/job_plan.h"

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace lowbit {
namespace {

// Header-only tensors of a Llama checkpoint in BF16 with `layers` blocks.
std::vector<TensorInfo> LlamaTensors(int layers, int64_t dim, int64_t hidden, int64_t kv, int64_t vocab) {
  std::vector<TensorInfo> t;
  auto add = [&](const std::string& name, std::vector<int64_t> shape) {
    uint64_t n = 1;
    for (int64_t d : shape) n *= static_cast<uint64_t>(d);
    t.push_back({name, DType::kBF16, shape, "model.safetensors", 0, 2 * n});
  };
  add("model.embed_tokens.weight", {vocab, dim});
  for (int l = 0; l < layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    add(p + "input_layernorm.weight", {dim});
    add(p + "post_attention_layernorm.weight", {dim});
    add(p + "self_attn.q_proj.weight", {dim, dim});
    add(p + "self_attn.k_proj.weight", {kv, dim});
    add(p + "self_attn.v_proj.weight", {kv, dim});
    add(p + "self_attn.o_proj.weight", {dim, dim});
    add(p + "mlp.gate_proj.weight", {hidden, dim});
    add(p + "mlp.up_proj.weight", {hidden, dim});
    add(p + "mlp.down_proj.weight", {dim, hidden});
  }
  add("model.norm.weight", {dim});
  add("lm_head.weight", {vocab, dim});
  return t;
}

ModelDescriptor Llama2_7b(int layers) {
  ModelDescriptor d = *ModelDescriptor::FromConfigJson(absl::StrCat(
      R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
          "num_hidden_layers": )", layers, R"(, "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
          "max_position_embeddings": 4096})"));
  return d;
}

QuantizeJobSpec Gptq(int samples, int seqlen) {
  QuantizeJobSpec spec;
  spec.quant.method = Method::kGptq;
  spec.calibration = {"c4.ids.json", samples, seqlen, 0};
  return spec;
}

TEST(JobPlanTest, GptqWithThePapersCalibrationOnA7bModelPlansUnder24GB) {
  auto e = EstimateResources(Llama2_7b(32), LlamaTensors(32, 4096, 11008, 4096, 32000), Gptq(128, 2048), JobOptions{});
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_LT(e->total, 24'000'000'000ull) << e->Summary();
  EXPECT_EQ(e->calibration_rows, 128 * 2048);
  // Two hidden-state matrices of 262144 tokens x 4096 floats are the bulk.
  EXPECT_GE(e->activations, 2ull * 128 * 2048 * 4096 * 4);
  EXPECT_GE(e->block_weights, 202'383'360ull * (4 + 2 * 2)) << "one block in float32, two as stored (BF16)";
}

TEST(JobPlanTest, EstimateDoesNotGrowWithBlocksAndDoesGrowWithTokens) {
  const auto two = *EstimateResources(Llama2_7b(2), LlamaTensors(2, 4096, 11008, 4096, 32000), Gptq(32, 256), {});
  const auto eighty = *EstimateResources(Llama2_7b(80), LlamaTensors(80, 4096, 11008, 4096, 32000), Gptq(32, 256), {});
  EXPECT_EQ(two.total, eighty.total);
  const auto more = *EstimateResources(Llama2_7b(2), LlamaTensors(2, 4096, 11008, 4096, 32000), Gptq(64, 256), {});
  EXPECT_GT(more.total, two.total);
  QuantizeJobSpec rtn;
  const auto data_free = *EstimateResources(Llama2_7b(2), LlamaTensors(2, 4096, 11008, 4096, 32000), rtn, {});
  EXPECT_EQ(data_free.activations, 0u);
  EXPECT_LT(data_free.total, two.total);
  rtn.evaluation.text_uri = "wiki.ids.json";
  EXPECT_GT(EstimateResources(Llama2_7b(2), LlamaTensors(2, 4096, 11008, 4096, 32000), rtn, {})->evaluation, 0u);
}

TEST(JobPlanTest, LimitRefusalStatesBothNumbers) {
  const auto e = *EstimateResources(Llama2_7b(2), LlamaTensors(2, 4096, 11008, 4096, 32000), Gptq(32, 256), {});
  const absl::Status s = CheckMemoryLimit(e, 1ull << 30);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find(FormatBytes(e.total)), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("1.00 GiB"), std::string::npos) << s.message();
  EXPECT_TRUE(CheckMemoryLimit(e, 0).ok()) << "0 is no limit";
  EXPECT_TRUE(CheckMemoryLimit(e, e.total).ok());
}

// A config naming another architecture is refused whatever the method; a bare file with no config is
// quantized data-free by its tensor names, and refused only when a forward pass is needed.
TEST(JobPlanTest, ArchitecturesOutsideTheTableAreRefused) {
  ModelDescriptor d = Llama2_7b(2);
  d.architecture = "GPTNeoXForCausalLM";
  const auto tensors = LlamaTensors(2, 4096, 11008, 4096, 32000);
  for (const QuantizeJobSpec& spec : {Gptq(32, 256), QuantizeJobSpec{}}) {
    const absl::Status s = EstimateResources(d, tensors, spec, {}).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
    EXPECT_NE(s.message().find("GPTNeoXForCausalLM"), std::string::npos) << s;
  }
  ModelDescriptor bare = ModelDescriptor::Unknown();
  EXPECT_TRUE(EstimateResources(bare, tensors, QuantizeJobSpec{}, {}).ok()) << "RTN streams tensors, no forward pass";
  EXPECT_EQ(EstimateResources(bare, tensors, Gptq(32, 256), {}).status().code(), absl::StatusCode::kUnimplemented);
}

TEST(JobPlanTest, ByteSizesParseAsKubernetesWritesThem) {
  EXPECT_EQ(*ParseByteSize("24Gi"), 24ull << 30);
  EXPECT_EQ(*ParseByteSize("24GiB"), 24ull << 30);
  EXPECT_EQ(*ParseByteSize("20G"), 20'000'000'000ull);
  EXPECT_EQ(*ParseByteSize("512Mi"), 512ull << 20);
  EXPECT_EQ(*ParseByteSize("12345"), 12345ull);
  EXPECT_EQ(*ParseByteSize("0"), 0ull);
  EXPECT_FALSE(ParseByteSize("lots").ok());
  EXPECT_FALSE(ParseByteSize("-1G").ok());
}

}  // namespace
}  // namespace lowbit

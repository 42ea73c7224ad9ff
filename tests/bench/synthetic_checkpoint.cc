// lowbit_synth: writes a synthetic Hugging Face checkpoint with the tensor shapes of a real model, for
// speed, memory and load work (no real checkpoint that size can reach these machines). Weights are
// heavy-tailed (Student-t, 4 degrees of freedom) with a few outlier input channels, as real LLM
// weights are; deterministic for a seed.
//
//   lowbit_synth --shape smollm2-135m|llama2-7b [--layers N] [--vocab N] [--dtype bf16|f16|f32] --output DIR
#include <cstdio>
#include <filesystem>
#include <random>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "core/checkpoint/safetensors.h"
#include "core/storage/local_object_store.h"

ABSL_FLAG(std::string, shape, "smollm2-135m", "model shape: smollm2-135m or llama2-7b");
ABSL_FLAG(int, layers, 0, "decoder blocks (0 = the model's own count)");
ABSL_FLAG(int, vocab, 0, "vocabulary size (0 = the model's own): smaller embeddings for tests that move many outputs");
ABSL_FLAG(std::string, dtype, "bf16", "bf16, f16 or f32");
ABSL_FLAG(std::string, output, "", "output directory");
ABSL_FLAG(int, seed, 1, "random seed");

namespace lowbit {
namespace {

struct Shape {
  int64_t hidden, intermediate, layers, heads, kv_heads, vocab;
};

int Main() {
  const std::string name = absl::GetFlag(FLAGS_shape);
  Shape s;
  if (name == "smollm2-135m") {
    s = {576, 1536, 30, 9, 3, 49152};
  } else if (name == "llama2-7b") {
    s = {4096, 11008, 32, 32, 32, 32000};
  } else {
    std::fprintf(stderr, "unknown --shape %s\n", name.c_str());
    return 2;
  }
  if (absl::GetFlag(FLAGS_layers) > 0) s.layers = absl::GetFlag(FLAGS_layers);
  if (absl::GetFlag(FLAGS_vocab) > 0) s.vocab = absl::GetFlag(FLAGS_vocab);
  const std::string d = absl::GetFlag(FLAGS_dtype);
  const DType dtype = d == "f32" ? DType::kF32 : d == "f16" ? DType::kF16 : DType::kBF16;
  const int64_t head_dim = s.hidden / s.heads, kv = s.kv_heads * head_dim;

  std::vector<TensorSpec> specs = {{"model.embed_tokens.weight", dtype, {s.vocab, s.hidden}}};
  for (int64_t l = 0; l < s.layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    for (TensorSpec t : std::vector<TensorSpec>{{"input_layernorm.weight", dtype, {s.hidden}},
                                                {"mlp.down_proj.weight", dtype, {s.hidden, s.intermediate}},
                                                {"mlp.gate_proj.weight", dtype, {s.intermediate, s.hidden}},
                                                {"mlp.up_proj.weight", dtype, {s.intermediate, s.hidden}},
                                                {"post_attention_layernorm.weight", dtype, {s.hidden}},
                                                {"self_attn.k_proj.weight", dtype, {kv, s.hidden}},
                                                {"self_attn.o_proj.weight", dtype, {s.hidden, s.hidden}},
                                                {"self_attn.q_proj.weight", dtype, {s.hidden, s.hidden}},
                                                {"self_attn.v_proj.weight", dtype, {kv, s.hidden}}}) {
      t.name = p + t.name;
      specs.push_back(t);
    }
  }
  specs.push_back({"model.norm.weight", dtype, {s.hidden}});
  specs.push_back({"lm_head.weight", dtype, {s.vocab, s.hidden}});

  auto store = LocalObjectStore::Create({"/"});
  // The store is rooted at "/", so relative paths are made absolute against the working directory.
  const std::string dir = std::filesystem::absolute(absl::GetFlag(FLAGS_output)).string();
  if (!store.ok() || absl::GetFlag(FLAGS_output).empty()) {
    std::fprintf(stderr, "need --output\n");
    return 2;
  }
  auto out = (*store)->NewWriter(JoinUri(dir, "model.safetensors"));
  auto writer = SafetensorsWriter::Create(out->get(), specs);
  std::mt19937 rng(absl::GetFlag(FLAGS_seed));
  std::student_t_distribution<float> heavy(4.0f);
  uint64_t total = 0;
  for (const TensorSpec& t : specs) {
    const int64_t n = NumElements(t.shape);
    const int64_t cols = t.shape.back();
    std::vector<float> values(static_cast<size_t>(n));
    const bool norm = t.shape.size() == 1;
    for (int64_t i = 0; i < n; ++i) values[i] = norm ? 1.0f + 0.05f * heavy(rng) : 0.02f * heavy(rng);
    if (!norm) {
      // A few outlier input channels, 10-30x the typical magnitude.
      for (int64_t c = 0; c < cols; c += std::max<int64_t>(1, cols / 4) + 17) {
        for (int64_t r = 0; r < t.shape[0]; ++r) values[r * cols + c] *= 10.0f + static_cast<float>(c % 20);
      }
    }
    std::string bytes(static_cast<size_t>(n) * DTypeSize(dtype), '\0');
    ConvertFromF32(dtype, values.data(), values.size(), bytes.data());
    if (!(*writer)->Append(t.name, bytes).ok()) return 1;
    total += bytes.size();
  }
  if (!(*writer)->Finish().ok() || !(*out)->Commit().ok()) return 1;
  const std::string config = absl::StrCat(
      R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": )", s.hidden,
      R"(, "intermediate_size": )", s.intermediate, R"(, "num_hidden_layers": )", s.layers,
      R"(, "num_attention_heads": )", s.heads, R"(, "num_key_value_heads": )", s.kv_heads, R"(, "vocab_size": )", s.vocab,
      R"(, "tie_word_embeddings": false, "torch_dtype": "bfloat16"})");
  if (!(*store)->WriteAll(JoinUri(dir, "config.json"), config).ok()) return 1;
  std::printf("wrote %s: %s shapes, %lld layers, %.1f MB of tensors\n", dir.c_str(), name.c_str(),
              static_cast<long long>(s.layers), total / 1e6);
  return 0;
}

}  // namespace
}  // namespace lowbit

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return lowbit::Main();
}

#include "core/checkpoint/model_descriptor.h"

#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace lowbit {

absl::StatusOr<ModelDescriptor> ModelDescriptor::FromConfigJson(absl::string_view text) {
  nlohmann::json config = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!config.is_object()) return absl::InvalidArgumentError("config.json is not a JSON object");
  ModelDescriptor d;
  auto get_int = [&](const char* key, int64_t fallback) {
    auto it = config.find(key);
    return it != config.end() && it->is_number_integer() ? it->get<int64_t>() : fallback;
  };
  if (auto it = config.find("architectures"); it != config.end() && it->is_array() && !it->empty() &&
                                              (*it)[0].is_string()) {
    d.architecture = (*it)[0].get<std::string>();
  }
  if (auto it = config.find("model_type"); it != config.end() && it->is_string()) {
    d.model_type = it->get<std::string>();
  }
  d.hidden_size = get_int("hidden_size", 0);
  d.intermediate_size = get_int("intermediate_size", 0);
  d.num_layers = get_int("num_hidden_layers", 0);
  d.num_heads = get_int("num_attention_heads", 0);
  d.num_kv_heads = get_int("num_key_value_heads", d.num_heads);
  d.vocab_size = get_int("vocab_size", 0);
  if (auto it = config.find("tie_word_embeddings"); it != config.end() && it->is_boolean()) {
    d.tie_word_embeddings = it->get<bool>();
  }
  d.config = std::move(config);
  return d;
}

ModelDescriptor ModelDescriptor::Unknown() { return ModelDescriptor(); }

int LayerIndexOf(absl::string_view name) {
  for (absl::string_view prefix : {"model.layers.", "transformer.h.", "model.decoder.layers."}) {
    if (!absl::ConsumePrefix(&name, prefix)) continue;
    const size_t dot = name.find('.');
    int index;
    if (dot != absl::string_view::npos && absl::SimpleAtoi(name.substr(0, dot), &index)) return index;
    return -1;
  }
  return -1;
}

bool IsRouter(absl::string_view name) {
  // Mixture-of-experts routers pick the experts of every token; a small error there changes which experts
  // run. Mixtral's block_sparse_moe.gate, Qwen2/3-MoE's mlp.gate and mlp.shared_expert_gate, "router"s.
  for (absl::string_view module : {".gate.weight", ".shared_expert_gate.weight", ".router.weight", ".router.proj.weight"}) {
    if (absl::EndsWith(name, module)) return true;
  }
  return false;
}

TensorRole RoleOf(absl::string_view name, size_t rank) {
  if (absl::StrContains(name, "embed_tokens") || absl::StrContains(name, "wte")) return TensorRole::kEmbedding;
  if (absl::StartsWith(name, "lm_head.")) return TensorRole::kLmHead;
  if (absl::StrContains(name, "norm") || absl::StrContains(name, "ln_")) return TensorRole::kNorm;
  if (IsRouter(name)) return TensorRole::kOther;
  if (rank == 2 && LayerIndexOf(name) >= 0 && absl::EndsWith(name, ".weight")) return TensorRole::kLinear;
  return TensorRole::kOther;
}

}  // namespace lowbit

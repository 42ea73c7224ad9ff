#include "core/checkpoint/architecture.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"

namespace lowbit {
namespace {

// Llama's block (transformers' modeling_llama.py; AutoAWQ's awq/models/llama.py for the folds: q/k/v into
// input_layernorm, o into v_proj, gate/up into post_attention_layernorm, down into up_proj).
Architecture LlamaLike(const char* name) {
  return Architecture{
      name,
      "model.layers.",
      "input_layernorm.weight",
      "post_attention_layernorm.weight",
      {
          {LinearInput::kQkv, {"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"},
           "input_layernorm.weight"},
          {LinearInput::kO, {"self_attn.o_proj.weight"}, "self_attn.v_proj.weight"},
          {LinearInput::kGateUp, {"mlp.gate_proj.weight", "mlp.up_proj.weight"}, "post_attention_layernorm.weight"},
          {LinearInput::kDown, {"mlp.down_proj.weight"}, "mlp.up_proj.weight"},
      },
      "",
      "",
      {},
      "model.embed_tokens.weight",
      "model.norm.weight",
      "lm_head.weight",
      "llama",
      true,
  };
}

// modeling_qwen2.py: Llama's block with biases on q/k/v (attention_bias is not a Qwen2 option).
Architecture Qwen2() {
  Architecture a = LlamaLike("Qwen2ForCausalLM");
  a.gguf_arch = "qwen2";
  a.gguf_permute_qk = false;  // llama.cpp runs qwen2 with NEOX rope, HF's rotate-half layout
  a.required_extras = {"self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"};
  return a;
}

// modeling_qwen3.py: Llama's block with an RMSNorm over each head of q and k before the rotary embedding
// (head_dim explicit in the config, often not hidden_size / heads).
Architecture Qwen3() {
  Architecture a = LlamaLike("Qwen3ForCausalLM");
  a.gguf_arch = "qwen3";
  a.gguf_permute_qk = false;
  a.q_norm = "self_attn.q_norm.weight";
  a.k_norm = "self_attn.k_norm.weight";
  a.required_extras = {a.q_norm, a.k_norm};
  return a;
}

const std::vector<Architecture>& Table() {
  // Mistral's block is Llama's (modeling_mistral.py); its sliding window and head_dim are read by the block
  // geometry.
  static const std::vector<Architecture> table = {LlamaLike("LlamaForCausalLM"), LlamaLike("MistralForCausalLM"),
                                                  Qwen2(), Qwen3()};
  return table;
}

}  // namespace

std::string Architecture::BlockPrefix(int block) const { return absl::StrCat(block_prefix, block, "."); }

// A block's tensors: HF's names inside the block and gguf-py's tensor_mapping.py names.
constexpr std::pair<const char*, const char*> kBlockNames[] = {
    {"input_layernorm", "attn_norm"},     {"post_attention_layernorm", "ffn_norm"}, {"self_attn.q_proj", "attn_q"},
    {"self_attn.k_proj", "attn_k"},       {"self_attn.v_proj", "attn_v"},           {"self_attn.o_proj", "attn_output"},
    {"self_attn.q_norm", "attn_q_norm"},  {"self_attn.k_norm", "attn_k_norm"},      {"mlp.gate_proj", "ffn_gate"},
    {"mlp.up_proj", "ffn_up"},            {"mlp.down_proj", "ffn_down"}};

std::string GgufTensorName(const Architecture& arch, absl::string_view hf) {
  if (hf == arch.embed) return "token_embd.weight";
  if (hf == arch.final_norm) return "output_norm.weight";
  if (hf == arch.lm_head) return "output.weight";
  if (!absl::ConsumePrefix(&hf, arch.block_prefix)) return "";
  const size_t dot = hf.find('.');
  if (dot == absl::string_view::npos) return "";
  const absl::string_view block = hf.substr(0, dot), local = hf.substr(dot + 1);
  for (const auto& [from, to] : kBlockNames) {
    for (const char* suffix : {".weight", ".bias"}) {
      if (local == absl::StrCat(from, suffix)) return absl::StrCat("blk.", block, ".", to, suffix);
    }
  }
  return "";
}

std::string HfTensorName(const Architecture& arch, absl::string_view gguf) {
  if (gguf == "token_embd.weight") return arch.embed;
  if (gguf == "output_norm.weight") return arch.final_norm;
  if (gguf == "output.weight") return arch.lm_head;
  if (!absl::ConsumePrefix(&gguf, "blk.")) return "";
  const size_t dot = gguf.find('.');
  if (dot == absl::string_view::npos) return "";
  const absl::string_view block = gguf.substr(0, dot), local = gguf.substr(dot + 1);
  for (const auto& [to, from] : kBlockNames) {
    for (const char* suffix : {".weight", ".bias"}) {
      if (local == absl::StrCat(from, suffix)) return absl::StrCat(arch.block_prefix, block, ".", to, suffix);
    }
  }
  return "";
}

std::vector<int64_t> GgufRowOrder(const Architecture& arch, int64_t heads, int64_t kv_heads, int64_t head_dim,
                                  absl::string_view hf_name) {
  if (!arch.gguf_permute_qk) return {};
  int64_t n = 0;
  if (absl::EndsWith(hf_name, "self_attn.q_proj.weight") || absl::EndsWith(hf_name, "self_attn.q_proj.bias")) n = heads;
  if (absl::EndsWith(hf_name, "self_attn.k_proj.weight") || absl::EndsWith(hf_name, "self_attn.k_proj.bias")) n = kv_heads;
  if (n == 0) return {};
  // w.reshape(n, 2, hd / 2, dim).swapaxes(1, 2): row h·hd + 2i + j of the file is row h·hd + j·hd/2 + i.
  const int64_t hd = head_dim, half = hd / 2;
  std::vector<int64_t> order(static_cast<size_t>(n * hd));
  for (int64_t h = 0; h < n; ++h)
    for (int64_t i = 0; i < half; ++i)
      for (int64_t j = 0; j < 2; ++j) order[static_cast<size_t>(h * hd + 2 * i + j)] = h * hd + j * half + i;
  return order;
}

const Architecture* FindArchitecture(absl::string_view name) {
  for (const Architecture& a : Table()) {
    if (a.name == name) return &a;
  }
  return nullptr;
}

const Architecture* FindArchitectureByGguf(absl::string_view gguf_arch) {
  for (const Architecture& a : Table()) {
    if (a.gguf_arch == gguf_arch) return &a;
  }
  return nullptr;
}

absl::StatusOr<const Architecture*> ArchitectureOf(const ModelDescriptor& descriptor) {
  if (const Architecture* a = FindArchitecture(descriptor.architecture)) return a;
  std::vector<std::string> names;
  for (const Architecture& a : Table()) names.push_back(a.name);
  return absl::UnimplementedError(absl::StrCat("architecture ", descriptor.architecture, " is not supported (supported: ",
                                               absl::StrJoin(names, ", "), ")"));
}

}  // namespace lowbit

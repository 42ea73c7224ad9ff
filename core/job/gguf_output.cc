#include "core/job/gguf_output.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace lowbit {
namespace {

// llama_ftype (llama.h) of a file whose linear layers are `type`.
uint32_t FileType(GgmlType type) {
  switch (type) {
    case GgmlType::kF32: return 0;
    case GgmlType::kF16: return 1;
    case GgmlType::kQ4_0: return 2;
    case GgmlType::kQ4_1: return 3;
    case GgmlType::kQ8_0: return 7;
    case GgmlType::kQ5_0: return 8;
    case GgmlType::kQ5_1: return 9;
    case GgmlType::kBF16: return 32;
  }
  return 0;
}

}  // namespace

absl::StatusOr<GgufMetadata> GgufModelMetadata(const Architecture& arch, const BlockGeometry& g, const GgmlTypeTraits& type,
                                               const std::string& name, const Tokenizer* tokenizer) {
  const std::string a = arch.gguf_arch;
  const auto u32 = [](int64_t v) { return GgufValue::U32(static_cast<uint32_t>(v)); };
  GgufMetadata m = {
      {"general.architecture", GgufValue::String(a)},
      {"general.name", GgufValue::String(name)},
      {"general.file_type", GgufValue::U32(FileType(type.type))},
      {"general.quantization_version", GgufValue::U32(2)},
      {a + ".context_length", u32(g.max_positions)},
      {a + ".embedding_length", u32(g.dim)},
      {a + ".block_count", u32(g.layers)},
      {a + ".feed_forward_length", u32(g.hidden)},
      {a + ".attention.head_count", u32(g.heads)},
      {a + ".attention.head_count_kv", u32(g.kv_heads)},
      {a + ".attention.key_length", u32(g.head_dim)},
      {a + ".attention.value_length", u32(g.head_dim)},
      {a + ".rope.dimension_count", u32(g.head_dim)},
      {a + ".attention.layer_norm_rms_epsilon", GgufValue::F32(static_cast<float>(g.eps))},
      {a + ".rope.freq_base", GgufValue::F32(static_cast<float>(g.rope.theta))},
      {a + ".vocab_size", u32(g.vocab)},
  };
  if (g.rope.type != RopeParameters::Type::kDefault) {
    return absl::UnimplementedError("GGUF output of a model with rope scaling is not supported yet");
  }
  const auto* llama2c = dynamic_cast<const Llama2cTokenizer*>(tokenizer);
  if (llama2c == nullptr) {
    return absl::UnimplementedError("GGUF tokenizer metadata is written from a llama2.c tokenizer.bin only so far");
  }
  // A SentencePiece vocabulary ("llama"): llama2.c stores pieces with spaces where SentencePiece has U+2581.
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  for (size_t i = 0; i < llama2c->pieces().size(); ++i) {
    const std::string& piece = llama2c->pieces()[i];
    const bool byte = piece.size() == 6 && absl::StartsWith(piece, "<0x") && piece.back() == '>';
    tokens.push_back(byte || i < 3 ? piece : absl::StrReplaceAll(piece, {{" ", "\u2581"}}));
    // llama_token_type: 1 normal, 2 unknown, 3 control, 6 byte.
    types.push_back(i == 0 ? 2 : i < 3 ? 3 : byte ? 6 : 1);
  }
  m.push_back({"tokenizer.ggml.model", GgufValue::String("llama")});
  m.push_back({"tokenizer.ggml.tokens", GgufValue::Strings(std::move(tokens))});
  m.push_back({"tokenizer.ggml.scores", GgufValue::F32s(llama2c->scores())});
  m.push_back({"tokenizer.ggml.token_type", GgufValue::I32s(std::move(types))});
  m.push_back({"tokenizer.ggml.unknown_token_id", GgufValue::U32(0)});
  m.push_back({"tokenizer.ggml.bos_token_id", GgufValue::U32(Llama2cTokenizer::kBos)});
  m.push_back({"tokenizer.ggml.eos_token_id", GgufValue::U32(Llama2cTokenizer::kEos)});
  m.push_back({"tokenizer.ggml.add_bos_token", GgufValue::Bool(true)});
  m.push_back({"tokenizer.ggml.add_eos_token", GgufValue::Bool(false)});
  return m;
}

std::vector<int64_t> GgufRowOrder(const Architecture& arch, const BlockGeometry& g, const std::string& hf_name) {
  if (!arch.gguf_permute_qk) return {};
  int64_t heads = 0;
  if (absl::EndsWith(hf_name, "self_attn.q_proj.weight") || absl::EndsWith(hf_name, "self_attn.q_proj.bias")) heads = g.heads;
  if (absl::EndsWith(hf_name, "self_attn.k_proj.weight") || absl::EndsWith(hf_name, "self_attn.k_proj.bias")) heads = g.kv_heads;
  if (heads == 0) return {};
  // w.reshape(heads, 2, hd / 2, dim).swapaxes(1, 2): row h·hd + 2i + j of the file is row h·hd + j·hd/2 + i.
  const int64_t hd = g.head_dim, half = hd / 2;
  std::vector<int64_t> order(static_cast<size_t>(heads * hd));
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < half; ++i)
      for (int64_t j = 0; j < 2; ++j) order[static_cast<size_t>(h * hd + 2 * i + j)] = h * hd + j * half + i;
  return order;
}

}  // namespace lowbit

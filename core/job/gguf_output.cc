#include "core/job/gguf_output.h"

#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace lowbit {
namespace {

// llama-quant.cpp's use_more_bits: the first and last eighth of the blocks, and every third between.
bool UseMoreBits(int64_t layer, int64_t layers) {
  return layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2;
}

}  // namespace

const std::vector<GgufFileType>& GgufFileTypes() {
  using T = GgmlType;
  // llama_ftype values: llama.h (a plain K type is its _S file type, mostly that type).
  static const std::vector<GgufFileType> types = {
      {"F32", T::kF32, T::kF32, 0},         {"F16", T::kF16, T::kF16, 1},         {"BF16", T::kBF16, T::kBF16, 32},
      {"Q8_0", T::kQ8_0, T::kQ8_0, 7},      {"Q4_0", T::kQ4_0, T::kQ4_0, 2},      {"Q4_1", T::kQ4_1, T::kQ4_1, 3},
      {"Q5_0", T::kQ5_0, T::kQ5_0, 8},      {"Q5_1", T::kQ5_1, T::kQ5_1, 9},      {"Q2_K", T::kQ2_K, T::kQ2_K, 10},
      {"Q3_K", T::kQ3_K, T::kQ3_K, 11},     {"Q4_K", T::kQ4_K, T::kQ4_K, 14},     {"Q5_K", T::kQ5_K, T::kQ5_K, 16},
      {"Q6_K", T::kQ6_K, T::kQ6_K, 18},     {"IQ4_NL", T::kIQ4_NL, T::kIQ4_NL, 25}, {"IQ4_XS", T::kIQ4_XS, T::kIQ4_XS, 30},
      {"Q4_K_M", T::kQ4_K, T::kQ6_K, 15},   {"Q5_K_M", T::kQ5_K, T::kQ6_K, 17},
  };
  return types;
}

const GgufFileType* FindGgufFileType(absl::string_view name) {
  for (const GgufFileType& t : GgufFileTypes()) {
    if (absl::EqualsIgnoreCase(t.name, name)) return &t;
  }
  return nullptr;
}

GgmlType GgufTensorType(const GgufFileType& file_type, const std::string& gguf_name, int64_t layers) {
  if (file_type.more == file_type.base) return file_type.base;
  if (gguf_name == "output.weight") return file_type.more;
  int64_t layer = -1;
  char kind[32] = {};
  if (std::sscanf(gguf_name.c_str(), "blk.%" SCNd64 ".%31[a-z_]", &layer, kind) == 2 &&
      (std::string(kind) == "attn_v" || std::string(kind) == "ffn_down") && UseMoreBits(layer, layers)) {
    return file_type.more;
  }
  return file_type.base;
}

GgmlType GgufFallbackType(GgmlType type, int64_t cols) {
  const GgmlTypeTraits& t = TraitsOf(type);
  if (cols % t.block_size == 0) return type;
  GgmlType fallback = GgmlType::kF16;
  switch (type) {
    case GgmlType::kQ2_K:
    case GgmlType::kQ3_K:
    case GgmlType::kIQ4_XS: fallback = GgmlType::kIQ4_NL; break;
    case GgmlType::kQ4_K: fallback = GgmlType::kQ5_0; break;
    case GgmlType::kQ5_K: fallback = GgmlType::kQ5_1; break;
    case GgmlType::kQ6_K: fallback = GgmlType::kQ8_0; break;
    default: break;
  }
  return cols % TraitsOf(fallback).block_size == 0 ? fallback : GgmlType::kF16;
}

std::string GgmlRowsInOrder(const GgmlTensor& t, const std::vector<int64_t>& row_order) {
  if (row_order.empty()) return t.blocks;
  const size_t row_bytes = TraitsOf(t.type).RowBytes(t.cols);
  std::string out(t.blocks.size(), '\0');
  for (size_t i = 0; i < row_order.size(); ++i) {
    std::memcpy(out.data() + i * row_bytes, t.blocks.data() + static_cast<size_t>(row_order[i]) * row_bytes, row_bytes);
  }
  return out;
}

absl::StatusOr<GgufMetadata> GgufModelMetadata(const Architecture& arch, const BlockGeometry& g, const GgufFileType& file_type,
                                               const std::string& name, const Tokenizer* tokenizer) {
  const std::string a = arch.gguf_arch;
  const auto u32 = [](int64_t v) { return GgufValue::U32(static_cast<uint32_t>(v)); };
  GgufMetadata m = {
      {"general.architecture", GgufValue::String(a)},
      {"general.name", GgufValue::String(name)},
      {"general.file_type", GgufValue::U32(file_type.ftype)},
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

}  // namespace lowbit

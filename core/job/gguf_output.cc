#include "core/job/gguf_output.h"

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "core/util/status_macros.h"

namespace lowbit {
namespace {

// The id of a special token named in tokenizer_config.json (a string or {"content": ...}), or -1.
int64_t SpecialTokenId(const nlohmann::json& entry, const std::map<std::string, int64_t>& ids) {
  const nlohmann::json* content = entry.is_object() && entry.contains("content") ? &entry["content"] : &entry;
  if (!content->is_string()) return -1;
  const auto it = ids.find(content->get<std::string>());
  return it == ids.end() ? -1 : it->second;
}

// llama.cpp's name for a byte-level BPE tokenizer's pre-tokenization (llama-vocab.cpp), from the split
// pattern of tokenizer.json; "" if it is none llama.cpp knows.
std::string PreTokenizerName(const nlohmann::json& pre) {
  // tokenizer.json's Split patterns of Llama 3 and of Qwen2/Qwen3 (digits one at a time).
  static const std::pair<const char*, const char*> kPatterns[] = {
      {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
       "llama-bpe"},
      {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
       "qwen2"},
  };
  if (pre.is_object() && pre.value("type", "") == "ByteLevel" && pre.value("use_regex", true)) return "gpt-2";
  if (!pre.is_object() || pre.value("type", "") != "Sequence" || !pre.contains("pretokenizers")) return "";
  for (const nlohmann::json& p : pre["pretokenizers"]) {
    if (p.value("type", "") != "Split" || !p.contains("pattern") || !p["pattern"].contains("Regex")) continue;
    const std::string regex = p["pattern"]["Regex"].get<std::string>();
    for (const auto& [pattern, name] : kPatterns) {
      if (regex == pattern) return name;
    }
  }
  return "";
}

// A tokenizer.json merge ("a b", or ["a", "b"] in newer files) as its two pieces.
std::pair<std::string, std::string> MergePieces(const nlohmann::json& merge) {
  if (merge.is_array()) return {merge[0].get<std::string>(), merge[1].get<std::string>()};
  const std::string text = merge.get<std::string>();
  const size_t space = text.find(' ');
  return {text.substr(0, space), space == std::string::npos ? "" : text.substr(space + 1)};
}

// A byte-level BPE tokenizer.json as llama.cpp's "gpt2" vocabulary, as convert_hf_to_gguf.py's
// get_vocab_base and gguf-py's SpecialVocab write it: tokens in id order padded to the model's vocabulary
// with [PADi] (UNUSED); added tokens CONTROL when special or shaped like <|...|>, else USER_DEFINED;
// the merges; the special tokens' ids; the chat template.
absl::StatusOr<GgufMetadata> HfBpeTokenizerMetadata(const GgufTokenizerSource& source, int64_t vocab) {
  const nlohmann::json& j = source.tokenizer_json;
  if (!j.contains("model") || j["model"].value("type", "") != "BPE" || !j["model"].contains("vocab")) {
    return absl::UnimplementedError("GGUF tokenizer metadata: only BPE tokenizer.json files are written");
  }
  const std::string pre = PreTokenizerName(j.value("pre_tokenizer", nlohmann::json()));
  if (pre.empty()) {
    return absl::UnimplementedError(absl::StrCat("GGUF tokenizer metadata: the pre-tokenizer ", j.value("pre_tokenizer", nlohmann::json()).dump().substr(0, 200),
                                                 " is none llama.cpp names (llama-bpe, qwen2, gpt-2)"));
  }
  // llama_token_type: 1 normal, 3 control, 4 user-defined, 5 unused.
  std::vector<std::string> tokens(static_cast<size_t>(vocab));
  std::vector<int32_t> types(static_cast<size_t>(vocab), 0);
  std::map<std::string, int64_t> ids;
  auto put = [&](const std::string& token, int64_t id, int32_t type) -> absl::Status {
    if (id < 0 || id >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: token ", token, " has id ", id, ", outside the model's ", vocab));
    }
    tokens[static_cast<size_t>(id)] = token, types[static_cast<size_t>(id)] = type, ids[token] = id;
    return absl::OkStatus();
  };
  for (const auto& [token, id] : j["model"]["vocab"].items()) RETURN_IF_ERROR(put(token, id.get<int64_t>(), 1));
  for (const nlohmann::json& t : j.value("added_tokens", nlohmann::json::array())) {
    const std::string content = t.value("content", "");
    const bool special = t.value("special", false) || (absl::StartsWith(content, "<|") && absl::EndsWith(content, "|>"));
    RETURN_IF_ERROR(put(special ? content : absl::StrReplaceAll(content, {{"\u2581", " "}}), t.value("id", int64_t{-1}), special ? 3 : 4));
  }
  for (int64_t i = 0; i < vocab; ++i) {
    if (types[static_cast<size_t>(i)] == 0) tokens[static_cast<size_t>(i)] = absl::StrCat("[PAD", i, "]"), types[static_cast<size_t>(i)] = 5;
  }
  std::vector<std::string> merges;
  for (const nlohmann::json& merge : j["model"].value("merges", nlohmann::json::array())) {
    const auto [left, right] = MergePieces(merge);
    merges.push_back(absl::StrCat(left, " ", right));
  }
  GgufMetadata m = {
      {"tokenizer.ggml.model", GgufValue::String("gpt2")},
      {"tokenizer.ggml.pre", GgufValue::String(pre)},
      {"tokenizer.ggml.tokens", GgufValue::Strings(std::move(tokens))},
      {"tokenizer.ggml.token_type", GgufValue::I32s(std::move(types))},
      {"tokenizer.ggml.merges", GgufValue::Strings(std::move(merges))},
  };
  const nlohmann::json& tc = source.tokenizer_config.is_object() ? source.tokenizer_config : nlohmann::json::object();
  const nlohmann::json& mc = source.model_config.is_object() ? source.model_config : nlohmann::json::object();
  for (const auto& [key, gguf_key] : std::vector<std::pair<std::string, std::string>>{
           {"bos", "bos_token_id"}, {"eos", "eos_token_id"}, {"unk", "unknown_token_id"}, {"pad", "padding_token_id"}}) {
    int64_t id = tc.contains(key + "_token") ? SpecialTokenId(tc[key + "_token"], ids) : -1;
    if (id < 0 && mc.contains(key + "_token_id") && mc[key + "_token_id"].is_number_integer()) id = mc[key + "_token_id"].get<int64_t>();
    if (id >= 0 && id < vocab) m.push_back({"tokenizer.ggml." + gguf_key, GgufValue::U32(static_cast<uint32_t>(id))});
  }
  m.push_back({"tokenizer.ggml.add_bos_token", GgufValue::Bool(source.tokenizer != nullptr && source.tokenizer->bos() >= 0)});
  m.push_back({"tokenizer.ggml.add_eos_token", GgufValue::Bool(false)});
  if (tc.contains("chat_template") && tc["chat_template"].is_string()) {
    m.push_back({"tokenizer.chat_template", GgufValue::String(tc["chat_template"].get<std::string>())});
  }
  return m;
}

// A SentencePiece vocabulary as llama.cpp's "llama" tokenizer model: pieces, scores and token types in id
// order (padded to the model's vocabulary with [PADi], UNUSED), the special ids, BOS as the tokenizer adds it.
absl::StatusOr<GgufMetadata> SentencePieceMetadata(const std::vector<Tokenizer::ScoredPiece>& pieces, const Tokenizer& tokenizer,
                                                  int64_t vocab, int64_t eos) {
  if (static_cast<int64_t>(pieces.size()) > vocab) {
    return absl::InvalidArgumentError(absl::StrCat("the tokenizer has ", pieces.size(), " pieces, the model ", vocab, " embeddings"));
  }
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;
  int64_t unknown = -1;
  for (size_t i = 0; i < pieces.size(); ++i) {
    using Kind = Tokenizer::ScoredPiece::Kind;
    const Tokenizer::ScoredPiece& p = pieces[i];
    tokens.push_back(p.piece);
    scores.push_back(p.score);
    // llama_token_type: 1 normal, 2 unknown, 3 control, 5 unused, 6 byte.
    types.push_back(p.kind == Kind::kNormal ? 1 : p.kind == Kind::kUnknown ? 2 : p.kind == Kind::kControl ? 3 : p.kind == Kind::kUnused ? 5 : 6);
    if (p.kind == Kind::kUnknown && unknown < 0) unknown = static_cast<int64_t>(i);
  }
  for (int64_t i = static_cast<int64_t>(pieces.size()); i < vocab; ++i) {
    tokens.push_back(absl::StrCat("[PAD", i, "]")), scores.push_back(-1000.0f), types.push_back(5);
  }
  GgufMetadata m = {
      {"tokenizer.ggml.model", GgufValue::String("llama")},
      {"tokenizer.ggml.tokens", GgufValue::Strings(std::move(tokens))},
      {"tokenizer.ggml.scores", GgufValue::F32s(std::move(scores))},
      {"tokenizer.ggml.token_type", GgufValue::I32s(std::move(types))},
  };
  if (unknown >= 0) m.push_back({"tokenizer.ggml.unknown_token_id", GgufValue::U32(static_cast<uint32_t>(unknown))});
  if (tokenizer.bos() >= 0) m.push_back({"tokenizer.ggml.bos_token_id", GgufValue::U32(static_cast<uint32_t>(tokenizer.bos()))});
  if (eos >= 0) m.push_back({"tokenizer.ggml.eos_token_id", GgufValue::U32(static_cast<uint32_t>(eos))});
  m.push_back({"tokenizer.ggml.add_bos_token", GgufValue::Bool(tokenizer.bos() >= 0)});
  m.push_back({"tokenizer.ggml.add_eos_token", GgufValue::Bool(false)});
  // The normalizer's add_dummy_prefix and remove_extra_whitespaces (convert_hf_to_gguf.py reads them from
  // the model proto), seen in what the tokenizer does: "a" after a prefix space; runs of spaces collapsed.
  const std::vector<int> a = tokenizer.Encode("a");
  const bool space_prefix = !a.empty() && absl::StartsWith(pieces[static_cast<size_t>(a[0])].piece, "\u2581");
  const bool collapses = tokenizer.Encode(" a  b ") == tokenizer.Encode("a b");
  m.push_back({"tokenizer.ggml.add_space_prefix", GgufValue::Bool(space_prefix)});
  m.push_back({"tokenizer.ggml.remove_extra_whitespaces", GgufValue::Bool(collapses)});
  return m;
}

std::map<std::string, int64_t> IdsOf(const std::vector<Tokenizer::ScoredPiece>& pieces) {
  std::map<std::string, int64_t> ids;
  for (size_t i = 0; i < pieces.size(); ++i) ids.emplace(pieces[i].piece, static_cast<int64_t>(i));
  return ids;
}

// A tokenizer.json that is a SentencePiece BPE model converted (Llama 2, Mistral: BPE with byte fallback,
// no pre-tokenizer or a Metaspace one) as SentencePiece's pieces, for llama.cpp's "llama" tokenizer, which
// merges the adjacent pair whose merged piece scores highest: a merged piece scores −(rank of its merge),
// so llama.cpp merges in the merges' order as the BPE model does (gguf-py's LlamaHfVocab gives every piece
// −1000, which loses the order); unk, control (special added tokens) and <0xNN> byte kinds. Empty for any
// other tokenizer.json.
std::vector<Tokenizer::ScoredPiece> SentencePieceStylePieces(const GgufTokenizerSource& source) {
  const nlohmann::json& j = source.tokenizer_json;
  if (!j.contains("model") || j["model"].value("type", "") != "BPE" || !j["model"].value("byte_fallback", false)) return {};
  const nlohmann::json pre = j.value("pre_tokenizer", nlohmann::json());
  if (!pre.is_null() && !(pre.is_object() && pre.value("type", "") == "Metaspace")) return {};
  using Kind = Tokenizer::ScoredPiece::Kind;
  std::vector<Tokenizer::ScoredPiece> pieces;
  auto put = [&](const std::string& token, int64_t id, Kind kind) {
    if (id < 0 || id > (int64_t{1} << 24)) return;
    if (static_cast<int64_t>(pieces.size()) <= id) pieces.resize(static_cast<size_t>(id + 1), {"", 0.0f, Kind::kUnused});
    pieces[static_cast<size_t>(id)] = {token, kind == Kind::kNormal ? -1e9f : 0.0f, kind};
  };
  const std::string unk = j["model"].value("unk_token", "");
  for (const auto& [token, id] : j["model"]["vocab"].items()) {
    const bool byte = token.size() == 6 && absl::StartsWith(token, "<0x") && token.back() == '>';
    put(token, id.get<int64_t>(), token == unk ? Kind::kUnknown : byte ? Kind::kByte : Kind::kNormal);
  }
  // Pieces no merge makes (single characters) keep −1e9, below every merged one.
  const std::map<std::string, int64_t> ids = IdsOf(pieces);
  int64_t rank = 0;
  for (const nlohmann::json& merge : j["model"].value("merges", nlohmann::json::array())) {
    const auto [left, right] = MergePieces(merge);
    const std::string merged = left + right;
    const auto it = ids.find(merged);
    if (it != ids.end() && pieces[static_cast<size_t>(it->second)].score == -1e9f) {
      pieces[static_cast<size_t>(it->second)].score = -static_cast<float>(rank);
    }
    ++rank;
  }
  for (const nlohmann::json& t : j.value("added_tokens", nlohmann::json::array())) {
    const std::string content = t.value("content", "");
    if (content != unk && t.value("special", false)) put(content, t.value("id", int64_t{-1}), Kind::kControl);
  }
  for (size_t i = 0; i < pieces.size(); ++i) {
    if (pieces[i].piece.empty()) pieces[i].piece = absl::StrCat("[PAD", i, "]");
  }
  return pieces;
}

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

absl::Status WriteImatrix(ObjectWriter* out, const std::vector<ImatrixEntry>& entries, const std::string& dataset,
                          int64_t chunks, int64_t chunk_size) {
  const GgufMetadata metadata = {
      {"general.type", GgufValue::String("imatrix")},
      {"imatrix.datasets", GgufValue::Strings({dataset})},
      {"imatrix.chunk_count", GgufValue::U32(static_cast<uint32_t>(chunks))},
      {"imatrix.chunk_size", GgufValue::U32(static_cast<uint32_t>(chunk_size))},
  };
  std::vector<GgufTensorSpec> specs;
  for (const ImatrixEntry& e : entries) {
    // ggml's ne: in_sum2 [columns, experts], counts [1, experts]; one "expert" for a dense layer.
    specs.push_back({e.gguf_name + ".in_sum2", {1, static_cast<int64_t>(e.sum2.size())}, GgmlType::kF32});
    specs.push_back({e.gguf_name + ".counts", {1, 1}, GgmlType::kF32});
  }
  ASSIGN_OR_RETURN(std::unique_ptr<GgufWriter> writer, GgufWriter::Create(out, metadata, specs));
  for (const ImatrixEntry& e : entries) {
    RETURN_IF_ERROR(writer->Append(e.gguf_name + ".in_sum2",
                                   absl::string_view(reinterpret_cast<const char*>(e.sum2.data()), e.sum2.size() * sizeof(float))));
    const float tokens = static_cast<float>(e.tokens);
    RETURN_IF_ERROR(writer->Append(e.gguf_name + ".counts", absl::string_view(reinterpret_cast<const char*>(&tokens), sizeof(float))));
  }
  RETURN_IF_ERROR(writer->Finish());
  return out->Commit();
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

std::vector<std::pair<GgufTensorSpec, std::string>> GgufExtraTensors(const BlockGeometry& g) {
  if (g.rope.type != RopeParameters::Type::kLlama3) return {};
  // llama.cpp divides each rotary frequency by its factor: the unscaled frequencies over the scaled ones.
  BlockGeometry unscaled = g;
  unscaled.rope = RopeParameters{};
  unscaled.rope.theta = g.rope.theta;
  const std::vector<double> scaled = g.InverseFrequencies(g.max_positions), plain = unscaled.InverseFrequencies(g.max_positions);
  std::vector<float> factors(scaled.size());
  for (size_t i = 0; i < scaled.size(); ++i) factors[i] = static_cast<float>(plain[i] / scaled[i]);
  return {{GgufTensorSpec{"rope_freqs.weight", {static_cast<int64_t>(factors.size())}, GgmlType::kF32},
           std::string(reinterpret_cast<const char*>(factors.data()), factors.size() * sizeof(float))}};
}

absl::StatusOr<GgufMetadata> GgufModelMetadata(const Architecture& arch, const BlockGeometry& g, const GgufFileType& file_type,
                                               const std::string& name, const GgufTokenizerSource& tokenizer) {
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
  switch (g.rope.type) {
    case RopeParameters::Type::kDefault:
    case RopeParameters::Type::kLlama3: break;  // llama3: the divisors go into rope_freqs.weight
    case RopeParameters::Type::kLinear:
      m.push_back({a + ".rope.scaling.type", GgufValue::String("linear")});
      m.push_back({a + ".rope.scaling.factor", GgufValue::F32(static_cast<float>(g.rope.factor))});
      break;
    case RopeParameters::Type::kDynamic:
    case RopeParameters::Type::kYarn:
      return absl::UnimplementedError("GGUF output: dynamic and yarn rope scaling are not written yet");
  }
  if (!tokenizer.tokenizer_json.is_null() && tokenizer.tokenizer != nullptr) {
    const std::vector<Tokenizer::ScoredPiece> pieces = SentencePieceStylePieces(tokenizer);
    const nlohmann::json& tc = tokenizer.tokenizer_config.is_object() ? tokenizer.tokenizer_config : nlohmann::json::object();
    ASSIGN_OR_RETURN(GgufMetadata t, pieces.empty() ? HfBpeTokenizerMetadata(tokenizer, g.vocab)
                                                    : SentencePieceMetadata(pieces, *tokenizer.tokenizer, g.vocab,
                                                                            SpecialTokenId(tc.value("eos_token", nlohmann::json()), IdsOf(pieces))));
    m.insert(m.end(), t.begin(), t.end());
    return m;
  }
  const std::vector<Tokenizer::ScoredPiece> pieces =
      tokenizer.tokenizer != nullptr ? tokenizer.tokenizer->ScoredPieces() : std::vector<Tokenizer::ScoredPiece>{};
  if (pieces.empty()) return absl::UnimplementedError("GGUF tokenizer metadata: the tokenizer is neither tokenizer.json nor SentencePiece");
  ASSIGN_OR_RETURN(GgufMetadata t, SentencePieceMetadata(pieces, *tokenizer.tokenizer, g.vocab, tokenizer.tokenizer->eos()));
  m.insert(m.end(), t.begin(), t.end());
  return m;
}

}  // namespace lowbit

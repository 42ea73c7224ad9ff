#include "core/runtime/tokenizer.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/checkpoint/checkpoint_reader.h"
#include "core/runtime/hf_tokenizer.h"
#include "core/runtime/sentencepiece_module.h"
#include "core/util/status_macros.h"

namespace lowbit {
namespace {

// liblowbit_sentencepiece.so, loaded once: $LOWBIT_SENTENCEPIECE_MODULE, else beside the executable, else
// where the build put it. RTLD_DEEPBIND | RTLD_LOCAL keep libsentencepiece's own protobuf to itself
// (core/runtime/sentencepiece_module.h).
struct SentencePieceModule {
  decltype(&lowbit_spm_load) load = nullptr;
  decltype(&lowbit_spm_free) free = nullptr;
  decltype(&lowbit_spm_encode) encode = nullptr;
  decltype(&lowbit_spm_decode) decode = nullptr;
  decltype(&lowbit_spm_vocab_size) vocab_size = nullptr;
  decltype(&lowbit_spm_bos) bos = nullptr;
  decltype(&lowbit_spm_eos) eos = nullptr;
  decltype(&lowbit_spm_piece) piece = nullptr;
  decltype(&lowbit_spm_release) release = nullptr;
  std::string error;  ///< why it could not be loaded; empty when it was
};

const SentencePieceModule& SentencePiece() {
  static const SentencePieceModule* module = [] {
    auto* m = new SentencePieceModule();
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("LOWBIT_SENTENCEPIECE_MODULE")) candidates.push_back(env);
    char exe[4096];
    const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) candidates.push_back(ParentUri(std::string(exe, static_cast<size_t>(n))) + "/liblowbit_sentencepiece.so");
    candidates.push_back(LOWBIT_SENTENCEPIECE_MODULE_PATH);
    void* handle = nullptr;
    for (const std::string& path : candidates) {
      handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (handle != nullptr) break;
      absl::StrAppend(&m->error, m->error.empty() ? "" : "; ", ::dlerror());
    }
    if (handle == nullptr) return m;
    m->error.clear();
    auto bind = [&](auto* fn, const char* name) {
      *fn = reinterpret_cast<std::remove_pointer_t<decltype(fn)>>(::dlsym(handle, name));
      if (*fn == nullptr) m->error = absl::StrCat("liblowbit_sentencepiece.so lacks ", name);
    };
    bind(&m->load, "lowbit_spm_load");
    bind(&m->free, "lowbit_spm_free");
    bind(&m->encode, "lowbit_spm_encode");
    bind(&m->decode, "lowbit_spm_decode");
    bind(&m->vocab_size, "lowbit_spm_vocab_size");
    bind(&m->bos, "lowbit_spm_bos");
    bind(&m->eos, "lowbit_spm_eos");
    bind(&m->piece, "lowbit_spm_piece");
    bind(&m->release, "lowbit_spm_release");
    return m;
  }();
  return *module;
}

// A SentencePiece model file (tokenizer.model), encoded by libsentencepiece itself.
class SentencePieceTokenizer : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& bytes, absl::string_view uri) {
    const SentencePieceModule& spm = SentencePiece();
    if (!spm.error.empty()) return absl::UnavailableError(absl::StrCat("SentencePiece module: ", spm.error));
    char error[512] = {0};
    void* processor = spm.load(bytes.data(), bytes.size(), error, sizeof(error));
    if (processor == nullptr) return absl::DataLossError(absl::StrCat("SentencePiece model ", uri, ": ", error));
    return std::unique_ptr<Tokenizer>(new SentencePieceTokenizer(spm, processor));
  }
  ~SentencePieceTokenizer() override { spm_.free(processor_); }

  std::vector<int> Encode(absl::string_view raw) const override {
    const std::string text = ValidUtf8(raw);
    int* ids = nullptr;
    size_t count = 0;
    if (spm_.encode(processor_, text.data(), text.size(), &ids, &count) != 0) return {};
    std::vector<int> out(ids, ids + count);
    spm_.release(ids);
    return out;
  }
  std::string Decode(const std::vector<int>& ids) const override {
    std::vector<int> valid;
    for (const int id : ids) {
      if (id >= 0 && id < vocab_size()) valid.push_back(id);
    }
    char* text = nullptr;
    size_t size = 0;
    if (spm_.decode(processor_, valid.data(), valid.size(), &text, &size) != 0) return "";
    std::string out(text, size);
    spm_.release(text);
    return out;
  }
  int vocab_size() const override { return spm_.vocab_size(processor_); }
  int bos() const override { return spm_.bos(processor_); }
  int eos() const override { return spm_.eos(processor_); }
  std::vector<ScoredPiece> ScoredPieces() const override {
    std::vector<ScoredPiece> out(static_cast<size_t>(vocab_size()));
    for (int id = 0; id < vocab_size(); ++id) {
      const char* text = nullptr;
      size_t size = 0;
      int kind = 0;
      if (spm_.piece(processor_, id, &text, &size, &out[id].score, &kind) != 0) return {};
      out[id].piece.assign(text, size);
      out[id].kind = static_cast<ScoredPiece::Kind>(kind);
    }
    return out;
  }

 private:
  SentencePieceTokenizer(const SentencePieceModule& spm, void* processor) : spm_(spm), processor_(processor) {}
  const SentencePieceModule& spm_;
  void* processor_;
};

}  // namespace

std::vector<int> Tokenizer::EncodeText(absl::string_view text, size_t max_tokens) const {
  // Paragraph-sized pieces cut after a newline: each is encoded whole, newlines included.
  constexpr size_t kPieceBytes = 1 << 16;
  std::vector<int> ids;
  size_t at = 0;
  while (at < text.size() && ids.size() < max_tokens) {
    size_t end = at + kPieceBytes >= text.size() ? text.size() : text.find('\n', at + kPieceBytes);
    end = end == absl::string_view::npos ? text.size() : end + 1;
    const std::vector<int> part = Encode(text.substr(at, end - at));
    ids.insert(ids.end(), part.begin(), part.end());
    at = end;
  }
  return ids;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(ObjectStore* store, absl::string_view uri, int vocab_size) {
  if (absl::EndsWith(uri, ".json")) {
    ASSIGN_OR_RETURN(std::string bytes, store->ReadAll(uri));
    std::string config;
    if (absl::StatusOr<std::string> c = store->ReadAll(JoinUri(ParentUri(uri), "tokenizer_config.json")); c.ok()) {
      config = *std::move(c);
    } else if (!absl::IsNotFound(c.status())) {
      return c.status();
    }
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = LoadHfTokenizer(bytes, config);
    if (!t.ok()) return absl::Status(t.status().code(), absl::StrCat(uri, ": ", t.status().message()));
    return t;
  }
  if (absl::EndsWith(uri, ".model")) {
    ASSIGN_OR_RETURN(const std::string bytes, store->ReadAll(uri));
    return SentencePieceTokenizer::Load(bytes, uri);
  }
  ASSIGN_OR_RETURN(Llama2cTokenizer t, Llama2cTokenizer::Load(store, uri, vocab_size));
  return std::unique_ptr<Tokenizer>(new Llama2cTokenizer(std::move(t)));
}

std::string FindTokenizerBeside(ObjectStore* store, absl::string_view source_uri) {
  const std::string dir = CheckpointDirectory(source_uri);
  for (const char* name : {"tokenizer.json", "tokenizer.model", "tokenizer.bin"}) {
    if (store->Stat(JoinUri(dir, name)).ok()) return JoinUri(dir, name);
  }
  return "";
}

absl::StatusOr<Llama2cTokenizer> Llama2cTokenizer::Load(ObjectStore* store, absl::string_view uri, int vocab_size) {
  ASSIGN_OR_RETURN(std::string data, store->ReadAll(uri));
  Llama2cTokenizer t;
  size_t pos = 4;  // max_token_length: not needed
  auto corrupt = [&](absl::string_view why) {
    return absl::DataLossError(absl::StrCat("corrupt tokenizer ", uri, ": ", why));
  };
  for (int i = 0; i < vocab_size; ++i) {
    float score;
    int32_t len;
    if (pos + 8 > data.size()) return corrupt(absl::StrCat("ends before token ", i, " of ", vocab_size));
    std::memcpy(&score, data.data() + pos, 4);
    std::memcpy(&len, data.data() + pos + 4, 4);
    pos += 8;
    if (len < 0 || pos + static_cast<size_t>(len) > data.size()) return corrupt(absl::StrCat("bad length of token ", i));
    t.pieces_.emplace_back(data.substr(pos, static_cast<size_t>(len)));
    t.scores_.push_back(score);
    t.ids_.emplace(t.pieces_.back(), i);
    pos += static_cast<size_t>(len);
  }
  return t;
}

std::vector<int> Llama2cTokenizer::Encode(absl::string_view text, bool bos) const {
  std::vector<int> tokens;
  if (bos) tokens.push_back(kBos);
  std::string input = text.empty() ? std::string() : absl::StrCat(" ", text);  // the dummy prefix
  // One token per UTF-8 code point, or its bytes (+3: the byte tokens follow <unk>, <s>, </s>).
  for (size_t i = 0; i < input.size();) {
    size_t len = 1;
    while (i + len < input.size() && (static_cast<unsigned char>(input[i + len]) & 0xC0) == 0x80 && len < 4) ++len;
    auto it = ids_.find(input.substr(i, len));
    if (it != ids_.end()) {
      tokens.push_back(it->second);
    } else {
      for (size_t b = 0; b < len; ++b) tokens.push_back(static_cast<unsigned char>(input[i + b]) + 3);
    }
    i += len;
  }
  // Merge the best-scoring adjacent pair until no pair is in the vocabulary.
  const size_t first = bos ? 1 : 0;
  while (true) {
    float best_score = -1e10f;
    int best_id = -1;
    size_t best_at = 0;
    for (size_t i = first; i + 1 < tokens.size(); ++i) {
      auto it = ids_.find(pieces_[tokens[i]] + pieces_[tokens[i + 1]]);
      if (it != ids_.end() && scores_[it->second] > best_score) {
        best_score = scores_[it->second];
        best_id = it->second;
        best_at = i;
      }
    }
    if (best_id < 0) break;
    tokens[best_at] = best_id;
    tokens.erase(tokens.begin() + static_cast<std::ptrdiff_t>(best_at) + 1);
  }
  return tokens;
}

std::vector<int> Llama2cTokenizer::EncodeText(absl::string_view text, size_t max_tokens) const {
  std::vector<int> tokens;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipWhitespace())) {
    if (tokens.size() >= max_tokens) break;
    std::vector<int> t = Encode(line, /*bos=*/false);
    tokens.insert(tokens.end(), t.begin(), t.end());
  }
  return tokens;
}

std::vector<Tokenizer::ScoredPiece> Llama2cTokenizer::ScoredPieces() const {
  std::vector<ScoredPiece> out;
  for (size_t i = 0; i < pieces_.size(); ++i) {
    const std::string& piece = pieces_[i];
    const bool byte = piece.size() == 6 && absl::StartsWith(piece, "<0x") && piece.back() == '>';
    using Kind = ScoredPiece::Kind;
    out.push_back({byte || i < 3 ? piece : absl::StrReplaceAll(piece, {{" ", "\u2581"}}), scores_[i],
                   i == 0 ? Kind::kUnknown : i < 3 ? Kind::kControl : byte ? Kind::kByte : Kind::kNormal});
  }
  return out;
}

std::string Llama2cTokenizer::Decode(const std::vector<int>& ids) const {
  std::string text;
  int previous = kBos;
  for (const int id : ids) {
    text += Decode(previous, id);
    previous = id;
  }
  return text;
}

std::string Llama2cTokenizer::Decode(int previous, int token) const {
  if (token < 0 || token >= vocab_size()) return "";
  std::string piece = pieces_[token];
  if (previous == kBos && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
  unsigned int byte;
  if (piece.size() == 6 && std::sscanf(piece.c_str(), "<0x%02X>", &byte) == 1) return std::string(1, static_cast<char>(byte));
  return piece;
}

}  // namespace lowbit

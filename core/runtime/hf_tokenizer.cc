#include "core/runtime/hf_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <unicode/normalizer2.h>
#include <unicode/unistr.h>

#include <algorithm>
#include <cctype>
#include <functional>
#include <cstdio>
#include <queue>

#include <nlohmann/json.hpp>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "core/util/status_macros.h"

namespace lowbit {
namespace {

using json = nlohmann::json;

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Bytes of the UTF-8 character starting at s[i] (s is valid UTF-8).
size_t CharLength(absl::string_view s, size_t i) {
  const unsigned char c = static_cast<unsigned char>(s[i]);
  return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

// GPT-2's bytes_to_unicode (tokenizers' pre_tokenizers/byte_level.rs): printable bytes stand for
// themselves, the others for code points from 256 up, so every byte is a visible character.
struct ByteMap {
  std::string to_char[256];
  absl::flat_hash_map<std::string, unsigned char> to_byte;
  ByteMap() {
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
      AppendUtf8(printable ? b : next++, &to_char[b]);
      to_byte[to_char[b]] = static_cast<unsigned char>(b);
    }
  }
};
const ByteMap& Bytes() {
  static const ByteMap* map = new ByteMap();
  return *map;
}

// A compiled PCRE2 pattern in UTF mode with Unicode properties for \s, \w and \d, as Oniguruma (the
// engine tokenizers uses) reads them. Matching is thread-safe (match data per call).
class Regex {
 public:
  static absl::StatusOr<std::shared_ptr<const Regex>> Compile(const std::string& pattern) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP,
                                     &error, &offset, nullptr);
    if (code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof(message));
      return absl::InvalidArgumentError(absl::StrCat("tokenizer regex ", pattern, ": ", reinterpret_cast<char*>(message)));
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter where JIT is unavailable
    return std::shared_ptr<const Regex>(new Regex(code));
  }
  ~Regex() { pcre2_code_free(code_); }

  // Non-empty matches, left to right, as [begin, end) byte offsets.
  std::vector<std::pair<size_t, size_t>> FindAll(absl::string_view s) const {
    std::vector<std::pair<size_t, size_t>> found;
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_, nullptr);
    size_t at = 0;
    while (at < s.size()) {
      const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), at, PCRE2_NO_UTF_CHECK, md, nullptr);
      if (rc < 0) break;
      const PCRE2_SIZE* v = pcre2_get_ovector_pointer(md);
      if (v[1] > v[0]) {
        found.emplace_back(v[0], v[1]);
        at = v[1];
      } else {
        at = v[0] + CharLength(s, v[0]);
      }
    }
    pcre2_match_data_free(md);
    return found;
  }

 private:
  explicit Regex(pcre2_code* code) : code_(code) {}
  pcre2_code* code_;
};

// A string or regex pattern of tokenizer.json ({"String": s} or {"Regex": r}).
struct Pattern {
  std::string literal;
  std::shared_ptr<const Regex> regex;

  std::vector<std::pair<size_t, size_t>> FindAll(absl::string_view s) const {
    if (regex) return regex->FindAll(s);
    std::vector<std::pair<size_t, size_t>> found;
    if (literal.empty()) return found;
    for (size_t at = s.find(literal); at != absl::string_view::npos; at = s.find(literal, at + literal.size())) {
      found.emplace_back(at, at + literal.size());
    }
    return found;
  }
};

absl::StatusOr<Pattern> PatternOf(const json& j) {
  Pattern p;
  if (j.contains("String") && j["String"].is_string()) {
    p.literal = j["String"].get<std::string>();
  } else if (j.contains("Regex") && j["Regex"].is_string()) {
    ASSIGN_OR_RETURN(p.regex, Regex::Compile(j["Regex"].get<std::string>()));
  } else {
    return absl::DataLossError(absl::StrCat("tokenizer.json: a pattern is neither String nor Regex: ", j.dump()));
  }
  return p;
}

std::string TypeOf(const json& j) { return j.is_object() && j.contains("type") && j["type"].is_string() ? j["type"].get<std::string>() : ""; }

// ---- normalizers ----

using Normalizer = std::function<std::string(std::string)>;

absl::StatusOr<Normalizer> NormalizerOf(const json& j) {
  if (j.is_null()) return Normalizer([](std::string s) { return s; });
  const std::string type = TypeOf(j);
  if (type == "Sequence") {
    std::vector<Normalizer> steps;
    for (const json& n : j.value("normalizers", json::array())) {
      ASSIGN_OR_RETURN(Normalizer step, NormalizerOf(n));
      steps.push_back(std::move(step));
    }
    return Normalizer([steps](std::string s) {
      for (const Normalizer& n : steps) s = n(std::move(s));
      return s;
    });
  }
  if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    UErrorCode error = U_ZERO_ERROR;
    const icu::Normalizer2* n = type == "NFC"    ? icu::Normalizer2::getNFCInstance(error)
                                : type == "NFD"  ? icu::Normalizer2::getNFDInstance(error)
                                : type == "NFKC" ? icu::Normalizer2::getNFKCInstance(error)
                                                 : icu::Normalizer2::getNFKDInstance(error);
    if (U_FAILURE(error)) return absl::InternalError(absl::StrCat("ICU has no ", type, " normalizer"));
    return Normalizer([n](std::string s) {
      UErrorCode e = U_ZERO_ERROR;
      const icu::UnicodeString u = icu::UnicodeString::fromUTF8(s);
      if (n->isNormalized(u, e) && U_SUCCESS(e)) return s;
      e = U_ZERO_ERROR;
      std::string out;
      n->normalize(u, e).toUTF8String(out);
      return U_SUCCESS(e) ? out : s;
    });
  }
  if (type == "Prepend") {
    const std::string prefix = j.value("prepend", "");
    return Normalizer([prefix](std::string s) { return s.empty() ? s : prefix + s; });
  }
  if (type == "Replace") {
    ASSIGN_OR_RETURN(const Pattern pattern, PatternOf(j.value("pattern", json::object())));
    const std::string content = j.value("content", "");
    return Normalizer([pattern, content](std::string s) {
      std::string out;
      size_t prev = 0;
      for (const auto& [b, e] : pattern.FindAll(s)) {
        out.append(s, prev, b - prev).append(content);
        prev = e;
      }
      return out.append(s, prev, std::string::npos);
    });
  }
  return absl::UnimplementedError(absl::StrCat("tokenizer.json: normalizer ", type, " is not supported"));
}

// ---- pre-tokenizers: a segment of text becomes the pieces the model encodes separately ----

struct Piece {
  std::string text;
  bool at_start = false;  ///< begins at offset 0 of the input (Metaspace's prepend_scheme "first")
};
using PreTokenizer = std::function<std::vector<Piece>(std::vector<Piece>)>;

enum class SplitBehavior { kIsolated, kRemoved, kMergedWithPrevious, kMergedWithNext };

std::vector<Piece> SplitPiece(const Piece& p, const Pattern& pattern, SplitBehavior behavior) {
  std::vector<Piece> out;
  auto push = [&](size_t b, size_t e) {
    if (e > b) out.push_back({p.text.substr(b, e - b), p.at_start && b == 0});
  };
  size_t prev = 0;
  for (const auto& [b, e] : pattern.FindAll(p.text)) {
    switch (behavior) {
      case SplitBehavior::kIsolated:
        push(prev, b), push(b, e), prev = e;
        break;
      case SplitBehavior::kRemoved:
        push(prev, b), prev = e;
        break;
      case SplitBehavior::kMergedWithPrevious:
        push(prev, e), prev = e;
        break;
      case SplitBehavior::kMergedWithNext:
        push(prev, b), prev = b;
        break;
    }
  }
  push(prev, p.text.size());
  return out;
}

PreTokenizer EachPiece(std::function<std::vector<Piece>(const Piece&)> f) {
  return [f](std::vector<Piece> pieces) {
    std::vector<Piece> out;
    for (const Piece& p : pieces) {
      std::vector<Piece> parts = f(p);
      out.insert(out.end(), std::make_move_iterator(parts.begin()), std::make_move_iterator(parts.end()));
    }
    return out;
  };
}

absl::StatusOr<PreTokenizer> PreTokenizerOf(const json& j) {
  if (j.is_null()) return PreTokenizer([](std::vector<Piece> p) { return p; });
  const std::string type = TypeOf(j);
  if (type == "Sequence") {
    std::vector<PreTokenizer> steps;
    for (const json& p : j.value("pretokenizers", json::array())) {
      ASSIGN_OR_RETURN(PreTokenizer step, PreTokenizerOf(p));
      steps.push_back(std::move(step));
    }
    return PreTokenizer([steps](std::vector<Piece> pieces) {
      for (const PreTokenizer& p : steps) pieces = p(std::move(pieces));
      return pieces;
    });
  }
  if (type == "Split") {
    ASSIGN_OR_RETURN(const Pattern pattern, PatternOf(j.value("pattern", json::object())));
    const std::string b = j.value("behavior", "Isolated");
    if (j.value("invert", false)) return absl::UnimplementedError("tokenizer.json: inverted Split is not supported");
    SplitBehavior behavior;
    if (b == "Isolated") {
      behavior = SplitBehavior::kIsolated;
    } else if (b == "Removed") {
      behavior = SplitBehavior::kRemoved;
    } else if (b == "MergedWithPrevious") {
      behavior = SplitBehavior::kMergedWithPrevious;
    } else if (b == "MergedWithNext") {
      behavior = SplitBehavior::kMergedWithNext;
    } else {
      return absl::UnimplementedError(absl::StrCat("tokenizer.json: Split behavior ", b, " is not supported"));
    }
    return EachPiece([pattern, behavior](const Piece& p) { return SplitPiece(p, pattern, behavior); });
  }
  if (type == "ByteLevel") {
    const bool prefix_space = j.value("add_prefix_space", false), use_regex = j.value("use_regex", true);
    Pattern gpt2;
    if (use_regex) {
      // GPT-2's pattern (tokenizers' pre_tokenizers/byte_level.rs).
      ASSIGN_OR_RETURN(gpt2.regex, Regex::Compile(R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)"));
    }
    return EachPiece([prefix_space, use_regex, gpt2](const Piece& in) {
      Piece p = in;
      if (prefix_space && !absl::StartsWith(p.text, " ")) p.text.insert(0, " ");
      std::vector<Piece> parts = use_regex ? SplitPiece(p, gpt2, SplitBehavior::kIsolated) : std::vector<Piece>{p};
      for (Piece& part : parts) {
        std::string mapped;
        for (const char c : part.text) mapped += Bytes().to_char[static_cast<unsigned char>(c)];
        part.text = std::move(mapped);
      }
      return parts;
    });
  }
  if (type == "Metaspace") {
    const std::string replacement = j.value("replacement", "\u2581");
    std::string scheme = j.value("prepend_scheme", "");
    if (scheme.empty()) scheme = j.value("add_prefix_space", true) ? "always" : "never";
    const bool split = j.value("split", true);
    if (scheme != "always" && scheme != "first" && scheme != "never") {
      return absl::UnimplementedError(absl::StrCat("tokenizer.json: Metaspace prepend_scheme ", scheme));
    }
    const Pattern boundary{replacement, nullptr};
    return EachPiece([replacement, scheme, split, boundary](const Piece& in) {
      Piece p{absl::StrReplaceAll(in.text, {{" ", replacement}}), in.at_start};
      if (!absl::StartsWith(p.text, replacement) && (scheme == "always" || (scheme == "first" && p.at_start))) {
        p.text.insert(0, replacement);
      }
      return split ? SplitPiece(p, boundary, SplitBehavior::kMergedWithNext) : std::vector<Piece>{p};
    });
  }
  return absl::UnimplementedError(absl::StrCat("tokenizer.json: pre-tokenizer ", type, " is not supported"));
}

// ---- decoders: token strings to text ----

using Decoder = std::function<std::vector<std::string>(std::vector<std::string>)>;

// "<0x41>" -> 0x41, else -1.
int ByteToken(const std::string& t) {
  unsigned int b;
  char tail;
  if (t.size() == 6 && std::sscanf(t.c_str(), "<0x%2X%c", &b, &tail) == 2 && tail == '>') return static_cast<int>(b);
  return -1;
}

absl::StatusOr<Decoder> DecoderOf(const json& j) {
  if (j.is_null()) return Decoder([](std::vector<std::string> t) { return t; });
  const std::string type = TypeOf(j);
  if (type == "Sequence") {
    std::vector<Decoder> steps;
    for (const json& d : j.value("decoders", json::array())) {
      ASSIGN_OR_RETURN(Decoder step, DecoderOf(d));
      steps.push_back(std::move(step));
    }
    return Decoder([steps](std::vector<std::string> t) {
      for (const Decoder& d : steps) t = d(std::move(t));
      return t;
    });
  }
  if (type == "ByteLevel") {  // every token's characters back to bytes, then one lossy UTF-8 string
    return Decoder([](std::vector<std::string> tokens) {
      std::string bytes;
      for (const std::string& t : tokens) {
        std::string mapped;
        bool all = true;
        for (size_t i = 0; i < t.size() && all;) {
          const size_t n = CharLength(t, i);
          auto it = Bytes().to_byte.find(t.substr(i, n));
          if (it == Bytes().to_byte.end()) all = false; else mapped.push_back(static_cast<char>(it->second));
          i += n;
        }
        bytes += all ? mapped : t;
      }
      return std::vector<std::string>{ValidUtf8(bytes)};
    });
  }
  if (type == "Replace") {
    ASSIGN_OR_RETURN(const Pattern pattern, PatternOf(j.value("pattern", json::object())));
    if (pattern.regex) return absl::UnimplementedError("tokenizer.json: Replace decoder with a regex");
    const std::string content = j.value("content", "");
    return Decoder([pattern, content](std::vector<std::string> tokens) {
      for (std::string& t : tokens) t = absl::StrReplaceAll(t, {{pattern.literal, content}});
      return tokens;
    });
  }
  if (type == "ByteFallback") {  // runs of <0xNN> tokens become their bytes if those are UTF-8, else U+FFFD each
    return Decoder([](std::vector<std::string> tokens) {
      std::vector<std::string> out;
      std::string bytes;
      size_t run = 0;
      auto flush = [&] {
        if (run == 0) return;
        if (ValidUtf8(bytes) == bytes) {
          out.push_back(bytes);
        } else {
          for (size_t i = 0; i < run; ++i) out.push_back("\xEF\xBF\xBD");
        }
        bytes.clear();
        run = 0;
      };
      for (std::string& t : tokens) {
        const int b = ByteToken(t);
        if (b >= 0) {
          bytes.push_back(static_cast<char>(b));
          ++run;
        } else {
          flush();
          out.push_back(std::move(t));
        }
      }
      flush();
      return out;
    });
  }
  if (type == "Fuse") {
    return Decoder([](std::vector<std::string> tokens) {
      std::string all;
      for (const std::string& t : tokens) all += t;
      return std::vector<std::string>{all};
    });
  }
  if (type == "Strip") {
    const std::string content = j.value("content", " ");
    const int start = j.value("start", 0), stop = j.value("stop", 0);
    return Decoder([content, start, stop](std::vector<std::string> tokens) {
      for (std::string& t : tokens) {
        for (int i = 0; i < start && absl::StartsWith(t, content); ++i) t.erase(0, content.size());
        for (int i = 0; i < stop && absl::EndsWith(t, content); ++i) t.erase(t.size() - content.size());
      }
      return tokens;
    });
  }
  if (type == "Metaspace") {
    const std::string replacement = j.value("replacement", "\u2581");
    std::string scheme = j.value("prepend_scheme", "");
    if (scheme.empty()) scheme = j.value("add_prefix_space", true) ? "always" : "never";
    return Decoder([replacement, scheme](std::vector<std::string> tokens) {
      for (size_t i = 0; i < tokens.size(); ++i) {
        tokens[i] = absl::StrReplaceAll(tokens[i], {{replacement, " "}});
        if (i == 0 && scheme != "never" && absl::StartsWith(tokens[i], " ")) tokens[i].erase(0, 1);
      }
      return tokens;
    });
  }
  return absl::UnimplementedError(absl::StrCat("tokenizer.json: decoder ", type, " is not supported"));
}

// ---- the tokenizer ----

struct AddedToken {
  std::string content;
  int id = 0;
  bool lstrip = false, rstrip = false, single_word = false;
};

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }
bool IsWordByte(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || (c & 0x80); }

class HfTokenizer : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(absl::string_view text, absl::string_view config_text);

  std::vector<int> Encode(absl::string_view text) const override;
  std::string Decode(const std::vector<int>& ids) const override;
  int vocab_size() const override { return static_cast<int>(id_to_token_.size()); }
  int bos() const override { return bos_; }

 private:
  // BPE of one piece (tokenizers' models/bpe/word.rs merge_all: the lowest-ranked adjacent pair first,
  // leftmost among equals, until no pair of the merges table is adjacent).
  void EncodePiece(const std::string& piece, std::vector<int>* out) const;
  int IdOf(const std::string& token) const {
    auto it = vocab_.find(token);
    return it == vocab_.end() ? -1 : it->second;
  }

  absl::flat_hash_map<std::string, int> vocab_;
  absl::flat_hash_map<uint64_t, std::pair<int, int>> merges_;  // (left id, right id) -> (rank, merged id)
  std::vector<std::string> id_to_token_;
  std::vector<AddedToken> added_;
  int unk_ = -1;
  bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
  int bos_ = -1;
  Normalizer normalizer_;
  PreTokenizer pre_tokenizer_;
  Decoder decoder_;
};

uint64_t PairKey(int a, int b) { return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b); }

absl::StatusOr<std::unique_ptr<Tokenizer>> HfTokenizer::Load(absl::string_view text, absl::string_view config_text) {
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("model") || !j["model"].is_object()) {
    return absl::DataLossError("tokenizer.json is not a tokenizers JSON object with a model");
  }
  auto t = std::make_unique<HfTokenizer>();
  const json& m = j["model"];
  const std::string model_type = m.value("type", "BPE");
  if (model_type != "BPE") return absl::UnimplementedError(absl::StrCat("tokenizer.json: model ", model_type, " is not supported (only BPE)"));
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (m.contains(key) && m[key].is_string() && !m[key].get<std::string>().empty()) {
      return absl::UnimplementedError(absl::StrCat("tokenizer.json: BPE ", key, " is not supported"));
    }
  }
  if (m.contains("dropout") && m["dropout"].is_number() && m["dropout"].get<double>() > 0) {
    return absl::UnimplementedError("tokenizer.json: BPE dropout is not deterministic");
  }
  if (!m.contains("vocab") || !m["vocab"].is_object()) return absl::DataLossError("tokenizer.json: the model has no vocab");
  for (const auto& [token, id] : m["vocab"].items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > (1 << 24)) {
      return absl::DataLossError(absl::StrCat("tokenizer.json: bad id of token ", token));
    }
    t->vocab_[token] = id.get<int>();
  }
  std::vector<std::pair<int, std::string>> extra;
  for (const json& a : j.value("added_tokens", json::array())) {
    if (!a.contains("id") || !a["id"].is_number_integer() || !a.contains("content") || !a["content"].is_string()) {
      return absl::DataLossError("tokenizer.json: an added token without id or content");
    }
    AddedToken at{a["content"].get<std::string>(), a["id"].get<int>(), a.value("lstrip", false), a.value("rstrip", false),
                  a.value("single_word", false)};
    if (at.content.empty() || at.id < 0 || at.id > (1 << 24)) return absl::DataLossError("tokenizer.json: a bad added token");
    extra.emplace_back(at.id, at.content);
    t->added_.push_back(std::move(at));
  }
  int max_id = -1;
  for (const auto& [token, id] : t->vocab_) max_id = std::max(max_id, id);
  for (const auto& [id, token] : extra) max_id = std::max(max_id, id);
  t->id_to_token_.resize(static_cast<size_t>(max_id + 1));
  for (const auto& [token, id] : t->vocab_) t->id_to_token_[static_cast<size_t>(id)] = token;
  for (const auto& [id, token] : extra) t->id_to_token_[static_cast<size_t>(id)] = token;
  // Longest first, so the first that matches at a position is the longest.
  std::stable_sort(t->added_.begin(), t->added_.end(), [](const AddedToken& a, const AddedToken& b) { return a.content.size() > b.content.size(); });

  int rank = 0;
  for (const json& merge : m.value("merges", json::array())) {
    std::string left, right;
    if (merge.is_string()) {  // "a b"
      const std::string s = merge.get<std::string>();
      const size_t space = s.find(' ', 1);
      if (space == std::string::npos) return absl::DataLossError(absl::StrCat("tokenizer.json: bad merge ", s));
      left = s.substr(0, space), right = s.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {  // ["a", "b"]
      left = merge[0].get<std::string>(), right = merge[1].get<std::string>();
    } else {
      return absl::DataLossError(absl::StrCat("tokenizer.json: bad merge ", merge.dump()));
    }
    const int a = t->IdOf(left), b = t->IdOf(right), ab = t->IdOf(left + right);
    if (a < 0 || b < 0 || ab < 0) {
      return absl::DataLossError(absl::StrCat("tokenizer.json: merge ", left, " + ", right, " of tokens not in the vocab"));
    }
    t->merges_.try_emplace(PairKey(a, b), rank++, ab);
  }
  if (m.contains("unk_token") && m["unk_token"].is_string()) {
    t->unk_ = t->IdOf(m["unk_token"].get<std::string>());
  }
  t->fuse_unk_ = m.value("fuse_unk", false);
  t->byte_fallback_ = m.value("byte_fallback", false);
  t->ignore_merges_ = m.value("ignore_merges", false);
  ASSIGN_OR_RETURN(t->normalizer_, NormalizerOf(j.value("normalizer", json())));
  ASSIGN_OR_RETURN(t->pre_tokenizer_, PreTokenizerOf(j.value("pre_tokenizer", json())));
  ASSIGN_OR_RETURN(t->decoder_, DecoderOf(j.value("decoder", json())));

  // BOS: the first special token of the post-processor's template, else tokenizer_config's add_bos_token.
  std::function<void(const json&)> template_bos = [&](const json& p) {
    if (TypeOf(p) == "Sequence") {
      for (const json& q : p.value("processors", json::array())) template_bos(q);
    } else if (TypeOf(p) == "TemplateProcessing" && p.contains("single") && p["single"].is_array() && !p["single"].empty()) {
      const json& first = p["single"][0];
      if (first.contains("SpecialToken")) {
        const std::string name = first["SpecialToken"].value("id", "");
        const json& specials = p.value("special_tokens", json::object());
        if (specials.contains(name) && specials[name].contains("ids") && !specials[name]["ids"].empty()) {
          t->bos_ = specials[name]["ids"][0].get<int>();
        }
      }
    }
  };
  template_bos(j.value("post_processor", json()));
  if (t->bos_ < 0 && !config_text.empty()) {
    const json c = json::parse(config_text, nullptr, false);
    if (c.is_object() && c.value("add_bos_token", false) && c.contains("bos_token")) {
      const json& b = c["bos_token"];
      const std::string name = b.is_string() ? b.get<std::string>() : b.is_object() ? b.value("content", "") : "";
      for (const AddedToken& a : t->added_) {
        if (a.content == name) t->bos_ = a.id;
      }
      if (t->bos_ < 0) t->bos_ = t->IdOf(name);
    }
  }
  return std::unique_ptr<Tokenizer>(std::move(t));
}

void HfTokenizer::EncodePiece(const std::string& piece, std::vector<int>* out) const {
  if (ignore_merges_) {
    if (const int id = IdOf(piece); id >= 0) {
      out->push_back(id);
      return;
    }
  }
  struct Symbol {
    int id;
    int prev, next;
    bool removed;
  };
  std::vector<Symbol> symbols;
  auto push = [&](int id) {
    const int n = static_cast<int>(symbols.size());
    symbols.push_back({id, n - 1, n + 1, false});
  };
  bool last_unk = false;
  for (size_t i = 0; i < piece.size();) {
    const size_t n = CharLength(piece, i);
    const int id = IdOf(piece.substr(i, n));
    if (id >= 0) {
      push(id);
      last_unk = false;
    } else if (byte_fallback_ && [&] {
                 for (size_t b = 0; b < n; ++b) {
                   char name[8];
                   std::snprintf(name, sizeof(name), "<0x%02X>", static_cast<unsigned char>(piece[i + b]));
                   if (IdOf(name) < 0) return false;
                 }
                 return true;
               }()) {
      for (size_t b = 0; b < n; ++b) {
        char name[8];
        std::snprintf(name, sizeof(name), "<0x%02X>", static_cast<unsigned char>(piece[i + b]));
        push(IdOf(name));
      }
      last_unk = false;
    } else if (unk_ >= 0) {
      if (!(fuse_unk_ && last_unk)) push(unk_);
      last_unk = true;
    }
    i += n;
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;

  struct Candidate {
    int rank, pos, merged;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  auto consider = [&](int pos) {
    const int next = symbols[static_cast<size_t>(pos)].next;
    if (next < 0) return;
    auto it = merges_.find(PairKey(symbols[static_cast<size_t>(pos)].id, symbols[static_cast<size_t>(next)].id));
    if (it != merges_.end()) queue.push({it->second.first, pos, it->second.second});
  };
  for (int i = 0; i + 1 < static_cast<int>(symbols.size()); ++i) consider(i);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[static_cast<size_t>(top.pos)];
    if (left.removed || left.next < 0) continue;
    Symbol& right = symbols[static_cast<size_t>(left.next)];
    auto it = merges_.find(PairKey(left.id, right.id));
    if (it == merges_.end() || it->second.second != top.merged) continue;  // a stale candidate
    left.id = top.merged;
    right.removed = true;
    left.next = right.next;
    if (right.next >= 0) symbols[static_cast<size_t>(right.next)].prev = top.pos;
    if (left.prev >= 0) consider(left.prev);
    consider(top.pos);
  }
  for (int i = 0; i >= 0; i = symbols[static_cast<size_t>(i)].next) out->push_back(symbols[static_cast<size_t>(i)].id);
}

std::vector<int> HfTokenizer::Encode(absl::string_view raw) const {
  const std::string text = ValidUtf8(raw);
  std::vector<int> ids;
  absl::flat_hash_map<std::string, std::vector<int>> cache;  // pieces repeat (words of a text)
  auto encode_segment = [&](size_t begin, size_t end) {
    if (end <= begin) return;
    std::vector<Piece> pieces = pre_tokenizer_({Piece{normalizer_(text.substr(begin, end - begin)), begin == 0}});
    for (const Piece& p : pieces) {
      if (p.text.size() > 64) {
        EncodePiece(p.text, &ids);
        continue;
      }
      auto [it, inserted] = cache.try_emplace(p.text);
      if (inserted) EncodePiece(p.text, &it->second);
      ids.insert(ids.end(), it->second.begin(), it->second.end());
    }
  };
  // Added tokens first: the leftmost match, the longest there; lstrip/rstrip take the whitespace beside it.
  size_t segment = 0;
  for (size_t i = 0; i < text.size();) {
    const AddedToken* hit = nullptr;
    for (const AddedToken& a : added_) {
      if (text.compare(i, a.content.size(), a.content) != 0) continue;
      if (a.single_word && ((i > 0 && IsWordByte(text[i - 1])) ||
                            (i + a.content.size() < text.size() && IsWordByte(text[i + a.content.size()])))) {
        continue;
      }
      hit = &a;
      break;
    }
    if (hit == nullptr) {
      ++i;
      continue;
    }
    size_t begin = i, end = i + hit->content.size();
    if (hit->lstrip) {
      while (begin > segment && IsSpace(text[begin - 1])) --begin;
    }
    if (hit->rstrip) {
      while (end < text.size() && IsSpace(text[end])) ++end;
    }
    encode_segment(segment, begin);
    ids.push_back(hit->id);
    segment = i = end;
  }
  encode_segment(segment, text.size());
  return ids;
}

std::string HfTokenizer::Decode(const std::vector<int>& ids) const {
  std::vector<std::string> tokens;
  for (const int id : ids) {
    if (id >= 0 && id < vocab_size()) tokens.push_back(id_to_token_[static_cast<size_t>(id)]);
  }
  std::string text;
  for (const std::string& t : decoder_(std::move(tokens))) text += t;
  return text;
}

}  // namespace

std::string ValidUtf8(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
      ++i;
      continue;
    }
    // Expected continuation bytes and the allowed range of the first one (Unicode table 3-7).
    int need = 0;
    unsigned char low = 0x80, high = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      need = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      need = 2;
      if (c == 0xE0) low = 0xA0;
      if (c == 0xED) high = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      need = 3;
      if (c == 0xF0) low = 0x90;
      if (c == 0xF4) high = 0x8F;
    }
    size_t j = i + 1;
    bool ok = need > 0;
    for (int k = 0; ok && k < need; ++k, ++j) {
      const unsigned char b = j < s.size() ? static_cast<unsigned char>(s[j]) : 0;
      if (j >= s.size() || b < (k == 0 ? low : 0x80) || b > (k == 0 ? high : 0xBF)) ok = false;
      if (!ok) break;
    }
    if (ok) {
      out.append(s.data() + i, j - i);
    } else {
      out.append("\xEF\xBF\xBD");  // the maximal subpart read so far is replaced; the failing byte starts anew
      if (j == i) j = i + 1;
    }
    i = ok ? j : std::max(j, i + 1);
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadHfTokenizer(absl::string_view json_text, absl::string_view config_json) {
  // The reader asks nlohmann for the types tokenizer.json's schema promises; a file that breaks the promise
  // (found by tests/fuzz/tokenizer_fuzz.cc: "type": ["a b"]) throws, and is refused here as malformed.
  try {
    return HfTokenizer::Load(json_text, config_json);
  } catch (const nlohmann::json::exception& e) {
    return absl::DataLossError(absl::StrCat("malformed tokenizer.json: ", e.what()));
  }
}

}  // namespace lowbit

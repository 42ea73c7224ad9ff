#include "core/runtime/tokenizer.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/util/status_macros.h"

namespace lowbit {

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

std::vector<int> Llama2cTokenizer::EncodeLines(absl::string_view text, size_t max_tokens) const {
  std::vector<int> tokens;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipWhitespace())) {
    if (tokens.size() >= max_tokens) break;
    std::vector<int> t = Encode(line, /*bos=*/false);
    tokens.insert(tokens.end(), t.begin(), t.end());
  }
  return tokens;
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

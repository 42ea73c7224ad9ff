#include "core/runtime/token_windows.h"

#include <random>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/util/status_macros.h"

namespace lowbit {
namespace {

absl::Status CheckId(const nlohmann::json& v, absl::string_view uri, int64_t vocab) {
  if (v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() < vocab) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(uri, ": token id ", v.dump(), " is outside the vocabulary of ", vocab));
}

absl::StatusOr<nlohmann::json> ParseIds(const std::string& text, absl::string_view uri) {
  nlohmann::json ids = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!ids.is_array() || ids.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(uri, ": expected a JSON array of token ids or of windows"));
  }
  return ids;
}

// All ids of a pre-tokenized text as one stream (windows given as arrays are joined).
absl::StatusOr<std::vector<int>> IdStream(const nlohmann::json& ids, absl::string_view uri, int64_t vocab) {
  std::vector<int> tokens;
  for (const nlohmann::json& v : ids) {
    if (v.is_array()) {
      for (const nlohmann::json& id : v) {
        RETURN_IF_ERROR(CheckId(id, uri, vocab));
        tokens.push_back(id.get<int>());
      }
      continue;
    }
    RETURN_IF_ERROR(CheckId(v, uri, vocab));
    tokens.push_back(v.get<int>());
  }
  return tokens;
}

absl::StatusOr<std::vector<int>> Tokenize(const std::string& text, absl::string_view uri, const TokenSource& source,
                                          size_t max_tokens) {
  if (source.tokenizer == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        uri, ": a plain text needs the model's tokenizer (none beside the checkpoint: give tokenizer_uri, or .ids.json)"));
  }
  return source.tokenizer->EncodeText(text, max_tokens);
}

}  // namespace

absl::StatusOr<TokenSource> OpenTokenSource(ObjectStore* store, absl::string_view tokenizer_uri,
                                            const ModelDescriptor& descriptor, std::unique_ptr<Tokenizer>* tokenizer) {
  TokenSource source;
  source.vocab_size = descriptor.vocab_size;
  const nlohmann::json& bos = descriptor.config.contains("bos_token_id") ? descriptor.config["bos_token_id"] : nlohmann::json();
  source.bos = bos.is_number_integer() ? bos.get<int>() : Llama2cTokenizer::kBos;
  if (!tokenizer_uri.empty()) {
    ASSIGN_OR_RETURN(*tokenizer, LoadTokenizer(store, tokenizer_uri, static_cast<int>(descriptor.vocab_size)));
    source.tokenizer = tokenizer->get();
    source.bos = (*tokenizer)->bos();
    if (source.bos >= descriptor.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer ", tokenizer_uri, ": BOS id ", source.bos,
                                                     " is outside the model's vocabulary of ", descriptor.vocab_size));
    }
  }
  return source;
}

bool IsPreTokenized(absl::string_view uri) { return absl::EndsWith(uri, ".ids.json"); }

std::string TokenizerFor(ObjectStore* store, absl::string_view tokenizer_uri, absl::string_view model_uri,
                         absl::string_view text_uri) {
  if (!tokenizer_uri.empty()) return std::string(tokenizer_uri);
  if (IsPreTokenized(text_uri)) return "";
  return FindTokenizerBeside(store, model_uri);
}

absl::StatusOr<std::vector<std::vector<int>>> CalibrationWindows(ObjectStore* store, absl::string_view uri,
                                                                 const TokenSource& source,
                                                                 const CalibrationOptions& options) {
  ASSIGN_OR_RETURN(std::string text, store->ReadAll(uri));
  std::vector<int> tokens;
  if (IsPreTokenized(uri)) {
    ASSIGN_OR_RETURN(const nlohmann::json ids, ParseIds(text, uri));
    if (ids[0].is_array()) {  // windows as given
      std::vector<std::vector<int>> windows;
      for (const nlohmann::json& w : ids) {
        if (static_cast<int>(windows.size()) == options.samples) break;
        if (!w.is_array() || w.empty()) return absl::InvalidArgumentError(absl::StrCat(uri, ": a window is not a non-empty array"));
        std::vector<int> window;
        for (const nlohmann::json& v : w) {
          RETURN_IF_ERROR(CheckId(v, uri, source.vocab_size));
          if (static_cast<int>(window.size()) < options.seqlen) window.push_back(v.get<int>());
        }
        windows.push_back(std::move(window));
      }
      return windows;
    }
    ASSIGN_OR_RETURN(tokens, IdStream(ids, uri, source.vocab_size));
  } else {
    // Enough tokens for windows that rarely overlap.
    ASSIGN_OR_RETURN(tokens, Tokenize(text, uri, source,
                                      static_cast<size_t>(options.samples) * static_cast<size_t>(options.seqlen) * 4));
  }
  if (tokens.size() < static_cast<size_t>(options.seqlen)) {
    return absl::InvalidArgumentError(absl::StrCat("calibration text ", uri, " has ", tokens.size(),
                                                   " tokens, fewer than one window of ", options.seqlen));
  }
  std::mt19937 rng(options.seed);
  std::uniform_int_distribution<size_t> start(0, tokens.size() - static_cast<size_t>(options.seqlen));
  std::vector<std::vector<int>> windows;
  const int taken = source.bos >= 0 ? options.seqlen - 1 : options.seqlen;
  for (int s = 0; s < options.samples; ++s) {
    const size_t at = start(rng);
    std::vector<int> w;
    if (source.bos >= 0) w.push_back(source.bos);
    w.insert(w.end(), tokens.begin() + static_cast<std::ptrdiff_t>(at), tokens.begin() + static_cast<std::ptrdiff_t>(at) + taken);
    windows.push_back(std::move(w));
  }
  return windows;
}

absl::StatusOr<EvaluationWindows> MakeEvaluationWindows(ObjectStore* store, absl::string_view uri,
                                                        const TokenSource& source, int windows, int seqlen) {
  if (seqlen < 2 || windows < 1) return absl::InvalidArgumentError("evaluation: needs seqlen >= 2 and windows >= 1");
  ASSIGN_OR_RETURN(std::string text, store->ReadAll(uri));
  const size_t per_window = static_cast<size_t>(seqlen - 1);
  std::vector<int> tokens;
  if (IsPreTokenized(uri)) {
    ASSIGN_OR_RETURN(const nlohmann::json ids, ParseIds(text, uri));
    ASSIGN_OR_RETURN(tokens, IdStream(ids, uri, source.vocab_size));
  } else {
    ASSIGN_OR_RETURN(tokens, Tokenize(text, uri, source, per_window * static_cast<size_t>(windows)));
  }
  const size_t n = std::min(static_cast<size_t>(windows), tokens.size() / per_window);
  if (n == 0) {
    return absl::InvalidArgumentError(absl::StrCat("evaluation text ", uri, " has fewer than ", per_window, " tokens"));
  }
  EvaluationWindows result;
  for (size_t w = 0; w < n; ++w) {
    const auto first = tokens.begin() + static_cast<std::ptrdiff_t>(w * per_window);
    const auto last = first + static_cast<std::ptrdiff_t>(per_window);
    // With BOS every token of the window is predicted; without, all but the first.
    std::vector<int> inputs;
    if (source.bos >= 0) inputs.push_back(source.bos);
    inputs.insert(inputs.end(), first, last - 1);
    result.inputs.push_back(std::move(inputs));
    result.targets.emplace_back(source.bos >= 0 ? first : first + 1, last);
  }
  return result;
}

}  // namespace lowbit

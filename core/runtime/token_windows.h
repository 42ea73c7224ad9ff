// Token windows of a text, for calibration and evaluation: the text is tokenized with the model's
// tokenizer, or — for a URI ending in ".ids.json" — is already token ids and needs no tokenizer (synthetic
// and foreign-tokenizer models).
#ifndef LOWBIT_CORE_RUNTIME_TOKEN_WINDOWS_H_
#define LOWBIT_CORE_RUNTIME_TOKEN_WINDOWS_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "core/checkpoint/model_descriptor.h"
#include "core/runtime/tokenizer.h"
#include "core/storage/object_store.h"

namespace lowbit {

// Where ids come from and which are valid.
struct TokenSource {
  const Tokenizer* tokenizer = nullptr;  ///< null: only ".ids.json" texts can be read
  int64_t vocab_size = 0;                ///< ids must be below it
  int bos = Llama2cTokenizer::kBos;      ///< starts every window drawn from a stream; -1: none (Qwen)
};

// The token source of a model: its vocabulary from `descriptor`, the tokenizer at `tokenizer_uri` when one
// is given, loaded into `tokenizer` (which must outlive the result), and BOS as that tokenizer adds it
// (else config's bos_token_id, else llama2.c's).
absl::StatusOr<TokenSource> OpenTokenSource(ObjectStore* store, absl::string_view tokenizer_uri,
                                            const ModelDescriptor& descriptor, std::unique_ptr<Tokenizer>* tokenizer);

// True for a pre-tokenized text (".ids.json").
bool IsPreTokenized(absl::string_view uri);

// The tokenizer a text at `text_uri` is read with: `tokenizer_uri` if given, else none for pre-tokenized
// text, else the one beside the checkpoint at `model_uri` (FindTokenizerBeside), else "".
std::string TokenizerFor(ObjectStore* store, absl::string_view tokenizer_uri, absl::string_view model_uri,
                         absl::string_view text_uri);

struct CalibrationOptions {
  int samples = 32;     ///< token windows
  int seqlen = 128;     ///< tokens per window (starting with BOS)
  uint32_t seed = 0;    ///< picks the windows
};

// `samples` windows of `seqlen` tokens drawn with `seed` from the text at `uri` (tokenized line by line),
// or from pre-tokenized ids: one JSON array of ids (a stream windows are drawn from) or an array of arrays
// (windows used as given, cut to `seqlen`). INVALID_ARGUMENT if there are too few tokens, an id is outside
// the vocabulary, or a plain text comes without a tokenizer.
absl::StatusOr<std::vector<std::vector<int>>> CalibrationWindows(ObjectStore* store, absl::string_view uri,
                                                                 const TokenSource& source,
                                                                 const CalibrationOptions& options);

// Evaluation windows: non-overlapping runs of seqlen - 1 tokens from the start of the text (a pre-tokenized
// text is read as one stream); each window's inputs are BOS and its tokens but the last, its targets its
// tokens. At most `windows` of them; INVALID_ARGUMENT if not even one fits.
struct EvaluationWindows {
  std::vector<std::vector<int>> inputs, targets;
};
absl::StatusOr<EvaluationWindows> MakeEvaluationWindows(ObjectStore* store, absl::string_view uri,
                                                        const TokenSource& source, int windows, int seqlen);

}  // namespace lowbit

#endif  // LOWBIT_CORE_RUNTIME_TOKEN_WINDOWS_H_

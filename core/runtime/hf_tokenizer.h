// HfTokenizer: a Hugging Face `tokenizer.json`, encoding as the tokenizers library does (its pipeline:
// added tokens split out → normalizer → pre-tokenizer → BPE model; decoding through its decoders), so that
// calibration and evaluation text becomes the ids the model was trained on.
//
// Implemented components (tokenizers' src/{normalizers,pre_tokenizers,models/bpe,decoders}); anything else
// is refused at load with UNIMPLEMENTED naming it:
// - normalizers: NFC, NFD, NFKC, NFKD (ICU), Prepend, Replace, Sequence;
// - pre-tokenizers: Split (regex through PCRE2 or a string; Isolated, Removed, MergedWithPrevious,
//   MergedWithNext), ByteLevel (GPT-2's byte-to-unicode map and regex), Metaspace, Digits, Sequence;
// - models: BPE (merge ranks, byte_fallback, unk_token with fuse_unk, ignore_merges);
// - decoders: ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, Sequence.
// This covers byte-level BPE (GPT-2, Llama 3, Qwen2/3) and SentencePiece-style BPE with byte fallback
// (Llama 2, Mistral, Gemma). Added tokens are matched on the text before normalization (leftmost, longest),
// with their lstrip/rstrip.
#ifndef LOWBIT_CORE_RUNTIME_HF_TOKENIZER_H_
#define LOWBIT_CORE_RUNTIME_HF_TOKENIZER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/runtime/tokenizer.h"

namespace lowbit {

// `json` is tokenizer.json's text; `config_json` tokenizer_config.json's, or empty (it says whether BOS is
// added when the tokenizer.json's post-processor does not).
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadHfTokenizer(absl::string_view json, absl::string_view config_json);

// `text` with every byte sequence that is not UTF-8 replaced by U+FFFD, one per maximal invalid subpart
// (the WHATWG/Unicode rule every UTF-8 decoder uses, Node's and Python's included).
std::string ValidUtf8(absl::string_view text);

}  // namespace lowbit

#endif  // LOWBIT_CORE_RUNTIME_HF_TOKENIZER_H_

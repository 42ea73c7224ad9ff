// Tokenizers: text to token ids and back, for calibration and evaluation data, `lowbit tokenize` and
// `lowbit generate`. Three kinds, found by file name (LoadTokenizer):
// - `tokenizer.json` (Hugging Face tokenizers: byte-level BPE and SentencePiece-style BPE; hf_tokenizer.h),
// - `*.model` (a SentencePiece model, through Debian's libsentencepiece; core/runtime/sentencepiece_module.h),
// - `*.bin` (the llama2.c tokenizer, below).
// Immutable after loading; thread-safe.
#ifndef LOWBIT_CORE_RUNTIME_TOKENIZER_H_
#define LOWBIT_CORE_RUNTIME_TOKENIZER_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/storage/object_store.h"

namespace lowbit {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // The ids of `text` (bytes that are not UTF-8 read as U+FFFD, as a UTF-8 decoder reads them); text of
  // special tokens in it becomes those tokens; nothing is added (no BOS).
  virtual std::vector<int> Encode(absl::string_view text) const = 0;
  // The text of `ids`, special tokens as their text.
  virtual std::string Decode(const std::vector<int>& ids) const = 0;
  virtual int vocab_size() const = 0;
  // The id every sequence starts with when the tokenizer adds special tokens (BOS), or -1 if it adds none.
  virtual int bos() const = 0;
  // The end-of-sequence id a SentencePiece vocabulary names, or -1.
  virtual int eos() const { return -1; }
  // The ids of a long text, in pieces (line by line or paragraphs), stopping once at least `max_tokens`
  // are collected.
  virtual std::vector<int> EncodeText(absl::string_view text, size_t max_tokens) const;

  // The vocabulary as SentencePiece holds it (pieces with U+2581 for spaces, scores, kinds), for the
  // tokenizers that are SentencePiece models (tokenizer.model, llama2.c's); empty for the others.
  struct ScoredPiece {
    enum class Kind { kNormal, kUnknown, kControl, kUnused, kByte };
    std::string piece;
    float score = 0;
    Kind kind = Kind::kNormal;
  };
  virtual std::vector<ScoredPiece> ScoredPieces() const { return {}; }
};

// The tokenizer at `uri` by its file name (tokenizer.json, *.model, else llama2.c's .bin, which needs the
// model's `vocab_size`). DATA_LOSS for a malformed file, UNIMPLEMENTED for a tokenizer.json component it
// does not implement (naming it), NOT_FOUND for a missing one.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(ObjectStore* store, absl::string_view uri, int vocab_size);

// The tokenizer files of a checkpoint at `source_uri` (a directory, or a file inside one), most specific
// first: tokenizer.json, tokenizer.model, tokenizer.bin; the URI of the first that exists, or "".
std::string FindTokenizerBeside(ObjectStore* store, absl::string_view source_uri);

// The llama2.c tokenizer (tokenizer.bin): a score-ordered BPE vocabulary with byte fallback.
// File format: int32 max_token_length, then per token: float32 score, int32 length, the bytes.
// Tokens 0, 1, 2 are <unk>, <s> (BOS), </s> (EOS); tokens 3..258 are the bytes <0x00>..<0xFF>.
class Llama2cTokenizer : public Tokenizer {
 public:
  static constexpr int kBos = 1;
  static constexpr int kEos = 2;

  // DATA_LOSS for a malformed file, naming it.
  static absl::StatusOr<Llama2cTokenizer> Load(ObjectStore* store, absl::string_view uri, int vocab_size);

  // BPE encoding as llama2.c does it: a leading space (the dummy prefix), UTF-8 code points looked up
  // whole or as bytes, then repeated merging of the adjacent pair whose merge has the best score.
  std::vector<int> Encode(absl::string_view text, bool bos) const;
  std::vector<int> Encode(absl::string_view text) const override { return Encode(text, /*bos=*/false); }
  // Line by line (BPE's merge loop is quadratic in its input); each line gets its own dummy-prefix space.
  std::vector<int> EncodeText(absl::string_view text, size_t max_tokens) const override;
  // The text of `token` following `previous` (a leading space after BOS is dropped; <0xNN> -> byte).
  std::string Decode(int previous, int token) const;
  std::string Decode(const std::vector<int>& ids) const override;
  int vocab_size() const override { return static_cast<int>(pieces_.size()); }
  int bos() const override { return kBos; }
  int eos() const override { return kEos; }
  // llama2.c's pieces hold spaces where SentencePiece has U+2581; 0 is <unk>, 1 and 2 control, <0xNN> bytes.
  std::vector<ScoredPiece> ScoredPieces() const override;

 private:
  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::map<std::string, int> ids_;
};

}  // namespace lowbit

#endif  // LOWBIT_CORE_RUNTIME_TOKENIZER_H_

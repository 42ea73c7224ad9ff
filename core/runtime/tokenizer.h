// The llama2.c tokenizer (tokenizer.bin): a score-ordered BPE vocabulary with byte fallback.
//
// File format: int32 max_token_length, then per token: float32 score, int32 length, the bytes.
// Tokens 0, 1, 2 are <unk>, <s> (BOS), </s> (EOS); tokens 3..258 are the bytes <0x00>..<0xFF>.
// Immutable after loading; thread-safe.
#ifndef LOWBIT_CORE_RUNTIME_TOKENIZER_H_
#define LOWBIT_CORE_RUNTIME_TOKENIZER_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/storage/object_store.h"

namespace lowbit {

class Llama2cTokenizer {
 public:
  static constexpr int kBos = 1;
  static constexpr int kEos = 2;

  // DATA_LOSS for a malformed file, naming it.
  static absl::StatusOr<Llama2cTokenizer> Load(ObjectStore* store, absl::string_view uri, int vocab_size);

  // BPE encoding as llama2.c does it: a leading space (the dummy prefix), UTF-8 code points looked up
  // whole or as bytes, then repeated merging of the adjacent pair whose merge has the best score.
  std::vector<int> Encode(absl::string_view text, bool bos) const;
  // Encodes a long text line by line (BPE's merge loop is quadratic in its input), stopping once at least
  // `max_tokens` tokens are collected. No BOS; each line gets its own dummy-prefix space.
  std::vector<int> EncodeLines(absl::string_view text, size_t max_tokens) const;
  // The text of `token` following `previous` (a leading space after BOS is dropped; <0xNN> -> byte).
  std::string Decode(int previous, int token) const;
  int vocab_size() const { return static_cast<int>(pieces_.size()); }

 private:
  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::map<std::string, int> ids_;
};

}  // namespace lowbit

#endif  // LOWBIT_CORE_RUNTIME_TOKENIZER_H_

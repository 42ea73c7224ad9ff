// LlamaModel: a float32 forward pass of Llama-family decoders (RMSNorm, rotary embeddings in the HF
// rotate-half layout that every reader presents, grouped-query causal attention with a KV cache, SwiGLU
// MLP, tied or separate lm_head), with OpenBLAS for the matrix-vector products.
//
// This first version holds all weights in memory and decodes one token at a time, which is what
// generation needs; block-at-a-time streaming for calibration is later work. Not thread-safe (the KV
// cache is state); Reset() starts a new sequence.
#ifndef LOWBIT_CORE_RUNTIME_LLAMA_MODEL_H_
#define LOWBIT_CORE_RUNTIME_LLAMA_MODEL_H_

#include <vector>

#include "absl/status/statusor.h"
#include "core/checkpoint/checkpoint_reader.h"

namespace lowbit {

class LlamaModel {
 public:
  // INVALID_ARGUMENT if the checkpoint is not a Llama-family decoder or a tensor has the wrong shape.
  static absl::StatusOr<LlamaModel> Load(const CheckpointReader& reader);

  // Runs one token at the next position; returns the logits over the vocabulary.
  const std::vector<float>& Forward(int token);
  void Reset() { pos_ = 0; }
  int vocab_size() const { return static_cast<int>(vocab_); }
  int max_positions() const { return static_cast<int>(max_pos_); }

 private:
  struct Block {
    std::vector<float> attn_norm, ffn_norm;
    Matrix q, k, v, o, gate, up, down;
  };
  int64_t dim_ = 0, hidden_ = 0, heads_ = 0, kv_heads_ = 0, head_dim_ = 0, vocab_ = 0, max_pos_ = 0;
  double eps_ = 1e-5, theta_ = 10000.0;
  Matrix embed_, lm_head_;  // lm_head_ empty when tied to embed_
  std::vector<float> final_norm_;
  std::vector<Block> blocks_;
  std::vector<float> key_cache_, value_cache_;  // [layer][pos][kv_dim]
  std::vector<float> x_, xb_, q_, k_, v_, att_, out_, h1_, h3_, logits_;
  int64_t pos_ = 0;
};

// Greedy decoding from BOS for `steps` tokens (stopping early at BOS/EOS, as llama2.c's run does).
std::vector<int> GreedyDecode(LlamaModel& model, int bos, int steps);

}  // namespace lowbit

#endif  // LOWBIT_CORE_RUNTIME_LLAMA_MODEL_H_

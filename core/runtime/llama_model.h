// LlamaModel: a float32 forward pass of Llama-family decoders (RMSNorm, rotary embeddings in the HF
// rotate-half layout that every reader presents, grouped-query causal attention with a KV cache, SwiGLU
// MLP, tied or separate lm_head), with OpenBLAS for the matrix-vector products.
//
// This first version holds all weights in memory and decodes one token at a time, which is what
// generation needs; block-at-a-time streaming for calibration is later work. Not thread-safe (the KV
// cache is state); Reset() starts a new sequence.
#ifndef LOWBIT_CORE_RUNTIME_LLAMA_MODEL_H_
#define LOWBIT_CORE_RUNTIME_LLAMA_MODEL_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/checkpoint/checkpoint_reader.h"

namespace lowbit {

// The four places a decoder block's linear layers read their input.
enum class LinearInput {
  kQkv = 0,     ///< q/k/v_proj: the attention RMSNorm's output
  kO = 1,       ///< o_proj: the attention output
  kGateUp = 2,  ///< gate/up_proj: the MLP RMSNorm's output
  kDown = 3,    ///< down_proj: SiLU(gate) * up
};

class LlamaModel {
 public:
  // Called with each linear input vector (length = that layer's input width) while a capture is set.
  using Capture = std::function<void(int layer, LinearInput input, const float* x)>;

  // INVALID_ARGUMENT if the checkpoint is not a Llama-family decoder or a tensor has the wrong shape.
  static absl::StatusOr<LlamaModel> Load(const CheckpointReader& reader);

  // Runs one token at the next position; returns the logits over the vocabulary. With `last_layer` >= 0
  // it stops after that decoder block (calibration needs no more) and the logits are not computed.
  const std::vector<float>& Forward(int token, int last_layer = -1);
  void set_capture(Capture capture) { capture_ = std::move(capture); }
  // The linear layer's weights by HF name, to replace them with their quantized values; null if absent.
  Matrix* MutableLinear(const std::string& name);
  // A decoder block's RMSNorm weight ("model.layers.N.input_layernorm.weight", ...); null if absent.
  std::vector<float>* MutableNorm(const std::string& name);
  int num_layers() const { return static_cast<int>(blocks_.size()); }

  // Sub-block outputs on whole sequences, with the block's weights given explicitly so a search (AWQ) can
  // try variants. AttentionOutput: o_proj(attention(q, k, v)) for one sequence `x` of attention-norm
  // outputs (T x dim, positions 0..T-1, causal). MlpOutput: down(SiLU(gate·x) ⊙ up·x) for rows of `x`.
  Matrix AttentionOutput(const Matrix& x, const Matrix& q, const Matrix& k, const Matrix& v, const Matrix& o) const;
  static Matrix MlpOutput(const Matrix& x, const Matrix& gate, const Matrix& up, const Matrix& down);
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
  Capture capture_;
};

// Greedy decoding from BOS for `steps` tokens (stopping early at BOS/EOS, as llama2.c's run does).
std::vector<int> GreedyDecode(LlamaModel& model, int bos, int steps);

}  // namespace lowbit

#endif  // LOWBIT_CORE_RUNTIME_LLAMA_MODEL_H_

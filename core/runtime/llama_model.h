// LlamaModel: a whole Llama-family decoder in float32 for token-at-a-time decoding (`lowbit generate`),
// built on the decoder block's token step (core/runtime/decoder_block.h) with a KV cache that grows with
// the sequence. It holds every block, so it is for small models and tests; calibration and evaluation
// never load a whole model (core/runtime/block_calibrator.h, evaluation.h).
//
// Not thread-safe (the KV cache is state); Reset() starts a new sequence.
#ifndef LOWBIT_CORE_RUNTIME_LLAMA_MODEL_H_
#define LOWBIT_CORE_RUNTIME_LLAMA_MODEL_H_

#include <vector>

#include "absl/status/statusor.h"
#include "core/checkpoint/checkpoint_reader.h"
#include "core/runtime/decoder_block.h"

namespace lowbit {

class LlamaModel {
 public:
  // Called with each linear input vector of each block while a capture is set.
  using Capture = std::function<void(int layer, LinearInput input, const float* x)>;

  // UNIMPLEMENTED for an architecture not in the table; INVALID_ARGUMENT for missing or mis-shaped tensors.
  static absl::StatusOr<LlamaModel> Load(const CheckpointReader& reader);

  // Runs one token at the next position; returns the logits over the vocabulary.
  const std::vector<float>& Forward(int token);
  void set_capture(Capture capture) { capture_ = std::move(capture); }
  void Reset();
  const BlockGeometry& geometry() const { return geometry_; }
  int vocab_size() const { return static_cast<int>(geometry_.vocab); }
  int max_positions() const { return static_cast<int>(geometry_.max_positions); }

 private:
  BlockGeometry geometry_;
  Matrix embed_, lm_head_;  // lm_head_ empty when tied to embed_
  std::vector<float> final_norm_;
  std::vector<BlockWeights> blocks_;
  std::vector<KvCache> caches_;
  std::vector<float> x_, xn_, logits_;
  Capture capture_;
};

// Greedy decoding from BOS for `steps` tokens (stopping early at BOS/EOS, as llama2.c's run does).
std::vector<int> GreedyDecode(LlamaModel& model, int bos, int steps);

// The final RMSNorm's weight and the output projection (the embedding when tied), in float32.
struct OutputHead {
  std::vector<float> norm;
  Matrix lm_head;  ///< vocab x dim
};
absl::StatusOr<OutputHead> ReadOutputHead(const CheckpointReader& reader, const Architecture& arch,
                                          const BlockGeometry& g);

}  // namespace lowbit

#endif  // LOWBIT_CORE_RUNTIME_LLAMA_MODEL_H_

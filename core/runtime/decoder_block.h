// DecoderBlock: one Llama-family decoder block (RMSNorm, rotary embeddings in the HF rotate-half layout
// with the rope scalings of transformers' modeling_rope_utils.py, grouped-query causal attention with
// optional q/k/v/o biases (Qwen2) and per-head q/k RMSNorm (Qwen3), SwiGLU MLP) with its weights passed in
// explicitly, in two forms that share every kernel:
// - batched: rows of a matrix are the tokens of consecutive windows (each at positions 0..len-1), matrix
//   products through OpenBLAS sgemm, causal attention per window with no KV cache — what calibration and
//   evaluation run, one block of the model resident at a time;
// - a token step with a growing KV cache — what generation runs.
// The pieces of the batched block are exposed so the calibrator can quantize between them (true-sequential)
// and AWQ can try candidate weights on them. All functions are pure (thread-compatible).
#ifndef LOWBIT_CORE_RUNTIME_DECODER_BLOCK_H_
#define LOWBIT_CORE_RUNTIME_DECODER_BLOCK_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/checkpoint/architecture.h"
#include "core/checkpoint/checkpoint_reader.h"
#include "core/tensor/tensor.h"

namespace lowbit {

// Rotary embedding parameters as transformers' modeling_rope_utils.py computes them, from `rope_theta` +
// `rope_scaling` (transformers 4.x) or `rope_parameters` (5.x).
struct RopeParameters {
  enum class Type { kDefault, kLinear, kDynamic, kYarn, kLlama3 };
  Type type = Type::kDefault;
  double theta = 10000.0;
  double factor = 1.0;
  int64_t original_max_positions = 0;    ///< llama3 and yarn; the model's max positions if the config has none
  double low_freq_factor = 1.0, high_freq_factor = 4.0;  ///< llama3
  double beta_fast = 32.0, beta_slow = 1.0;              ///< yarn
  bool truncate = true;                                  ///< yarn: integer correction range
  double attention_factor = 1.0;  ///< yarn's mscale, multiplied into cos and sin
};

// A block's dimensions and constants, from config.json.
struct BlockGeometry {
  int64_t dim = 0;       ///< hidden_size
  int64_t hidden = 0;    ///< intermediate_size
  int64_t heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;  ///< config's head_dim, else hidden_size / heads
  int64_t vocab = 0;
  int64_t layers = 0;
  int64_t max_positions = 0;   ///< max_position_embeddings (2048 if absent)
  int64_t sliding_window = 0;  ///< 0: full causal attention
  double eps = 1e-5;           ///< rms_norm_eps
  RopeParameters rope;

  // Inverse frequencies of the head's dimension pairs for a sequence of `length` positions (only dynamic
  // NTK scaling depends on it, and only beyond max_positions).
  std::vector<double> InverseFrequencies(int64_t length) const;

  int64_t q_dim() const { return heads * head_dim; }
  int64_t kv_dim() const { return kv_heads * head_dim; }
  // Float32 parameters of one block.
  int64_t BlockParameters() const { return 2 * dim + 2 * q_dim() * dim + 2 * kv_dim() * dim + 3 * hidden * dim; }

  // INVALID_ARGUMENT if the config does not describe a decoder this block can run.
  static absl::StatusOr<BlockGeometry> Of(const ModelDescriptor& descriptor);
};

// One block's weights in float32, row-major [out, in] as HF stores them. A bias or q/k norm the checkpoint
// does not have is empty.
struct BlockWeights {
  std::vector<float> attn_norm, ffn_norm;
  Matrix q, k, v, o, gate, up, down;
  std::vector<float> q_bias, k_bias, v_bias, o_bias, gate_bias, up_bias, down_bias;
  std::vector<float> q_norm, k_norm;  ///< per-head RMSNorm of queries and keys (Qwen3), head_dim values

  // The linear layer, its bias, or a norm by its tensor name inside the block ("self_attn.q_proj.weight",
  // "self_attn.q_proj.bias", "self_attn.q_norm.weight"); null if the block has no such tensor kind.
  Matrix* Linear(absl::string_view name);
  std::vector<float>* Bias(absl::string_view name);
  std::vector<float>* Norm(absl::string_view name);
};

// `t` widened to a float32 rows x cols matrix; INVALID_ARGUMENT naming it if its size differs or a value
// is not finite.
absl::StatusOr<Matrix> ShapedMatrix(const Tensor& t, int64_t rows, int64_t cols);

// Block `block`'s tensors as stored (every tensor whose name has the block's prefix), in reader order.
absl::StatusOr<std::vector<Tensor>> ReadBlockTensors(const CheckpointReader& reader, const Architecture& arch, int block);
// The block's weights in float32 from its tensors. INVALID_ARGUMENT for a missing tensor, a shape the
// geometry does not expect, or a non-finite value, naming the tensor.
absl::StatusOr<BlockWeights> BlockFromTensors(const std::vector<Tensor>& tensors, const Architecture& arch,
                                              const BlockGeometry& g, int block);
// Both at once.
absl::StatusOr<BlockWeights> ReadBlock(const CheckpointReader& reader, const Architecture& arch, const BlockGeometry& g,
                                       int block);

// Embedding rows for `tokens`, converted from the checkpoint's dtype one row at a time.
absl::StatusOr<Matrix> Embed(const CheckpointReader& reader, const Architecture& arch, const BlockGeometry& g,
                             const std::vector<int>& tokens);

// y = x·wᵀ for rows of x (n x in) and w (out x in), one sgemm.
Matrix TimesTransposed(const Matrix& x, const Matrix& w);
// y = x·wᵀ + bias (bias empty: none).
Matrix Project(const Matrix& x, const Matrix& w, const std::vector<float>& bias);
// RMSNorm of every row.
Matrix RmsNormRows(const Matrix& x, const std::vector<float>& weight, double eps);
// Causal self-attention before o_proj: rows of `xn` are windows of the given lengths, back to back. The
// projections are `q`, `k`, `v` (AWQ tries candidates for them); biases and q/k norms come from `w`.
Matrix Attention(const BlockGeometry& g, const BlockWeights& w, const Matrix& xn, const Matrix& q, const Matrix& k,
                 const Matrix& v, const std::vector<int64_t>& window_lengths);
// The same with the block's own projections.
Matrix Attention(const BlockGeometry& g, const BlockWeights& w, const Matrix& xn,
                 const std::vector<int64_t>& window_lengths);
// SiLU(xn·gateᵀ + b) ⊙ (xn·upᵀ + b): down_proj's input; biases from `w`.
Matrix SwiGlu(const BlockWeights& w, const Matrix& xn, const Matrix& gate, const Matrix& up);
// x += y, elementwise.
void AddInPlace(Matrix* x, const Matrix& y);

// Tokens (whole windows) per batched pass of calibration and evaluation: big enough for sgemm to run near
// peak, small enough that one chunk of a 7B block takes well under a second between cancellation checks.
// One value everywhere, so a job's evaluation and `lowbit eval` sum in the same order.
inline constexpr int64_t kDefaultRowsPerChunk = 512;

// Consecutive whole windows of a row batch, processed together to bound memory.
struct RowChunk {
  int64_t first_row = 0, rows = 0;
  std::vector<int64_t> lengths;  ///< its windows' lengths
};
// Windows of the given lengths, back to back, cut into chunks of about `rows_per_chunk` rows (whole windows).
std::vector<RowChunk> ChunkWindows(const std::vector<int64_t>& window_lengths, int64_t rows_per_chunk);
// Rows [first, first + rows) of m as a matrix of their own, and back.
Matrix RowsOf(const Matrix& m, int64_t first, int64_t rows);
void PutRows(const Matrix& part, int64_t first, Matrix* m);

// Called with each linear input of a batched block pass.
using BlockCapture = std::function<void(LinearInput input, const Matrix& rows)>;
// The whole block on rows of windows.
Matrix BlockForward(const BlockGeometry& g, const BlockWeights& w, const Matrix& x,
                    const std::vector<int64_t>& window_lengths, const BlockCapture& capture = nullptr);

// The keys and values of the positions seen so far (row per position), for the token step.
struct KvCache {
  std::vector<float> keys, values;
  int64_t length = 0;
};
// Called with each linear input of a token step (one vector).
using StepCapture = std::function<void(LinearInput input, const float* x)>;
// One token at position cache->length through the block: `x` (dim values) is updated in place.
void BlockStep(const BlockGeometry& g, const BlockWeights& w, float* x, KvCache* cache,
               const StepCapture& capture = nullptr);

// RMSNorm of one vector of n values.
void RmsNorm(const float* x, const float* weight, int64_t n, double eps, float* out);

}  // namespace lowbit

#endif  // LOWBIT_CORE_RUNTIME_DECODER_BLOCK_H_

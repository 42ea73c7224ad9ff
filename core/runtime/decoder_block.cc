#include "core/runtime/decoder_block.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "core/tensor/dtype.h"
#include "core/util/status_macros.h"

namespace lowbit {
namespace {

// Rotates `heads` consecutive head vectors at one position, with cos/sin of that position's angles.
void Rotate(float* v, int64_t heads, int64_t head_dim, const float* cos, const float* sin) {
  const int64_t half = head_dim / 2;
  for (int64_t h = 0; h < heads; ++h) {
    float* x = v + h * head_dim;
    for (int64_t i = 0; i < half; ++i) {
      const float a = x[i], b = x[i + half];
      x[i] = a * cos[i] - b * sin[i];
      x[i + half] = b * cos[i] + a * sin[i];
    }
  }
}

// cos and sin of positions [first, first + count) of a sequence `length` long, [pos][half], with the
// rope's attention factor multiplied in (transformers' RotaryEmbedding.forward).
void RotaryTable(const BlockGeometry& g, int64_t first, int64_t count, int64_t length, std::vector<float>* cos,
                 std::vector<float>* sin) {
  const std::vector<double> f = g.InverseFrequencies(length);
  const int64_t half = g.head_dim / 2;
  const double scale = g.rope.attention_factor;
  cos->resize(static_cast<size_t>(count * half));
  sin->resize(cos->size());
  for (int64_t p = 0; p < count; ++p) {
    for (int64_t i = 0; i < half; ++i) {
      const double angle = static_cast<double>(first + p) * f[static_cast<size_t>(i)];
      (*cos)[p * half + i] = static_cast<float>(std::cos(angle) * scale);
      (*sin)[p * half + i] = static_cast<float>(std::sin(angle) * scale);
    }
  }
}

// RMSNorm of each head_dim slice of `heads` consecutive head vectors (Qwen3's q_norm/k_norm); none if the
// weight is empty.
void NormHeads(float* v, int64_t heads, int64_t head_dim, const std::vector<float>& weight, double eps) {
  if (weight.empty()) return;
  for (int64_t h = 0; h < heads; ++h) RmsNorm(v + h * head_dim, weight.data(), head_dim, eps, v + h * head_dim);
}

void AddBias(Matrix* y, const std::vector<float>& bias) {
  if (bias.empty()) return;
  for (int64_t r = 0; r < y->rows; ++r)
    for (int64_t c = 0; c < y->cols; ++c) y->data[r * y->cols + c] += bias[c];
}

double NumberOr(const nlohmann::json& object, const char* key, double fallback) {
  auto it = object.find(key);
  return it != object.end() && it->is_number() ? it->get<double>() : fallback;
}

// transformers' modeling_rope_utils.py (5.x): `rope_parameters` holds rope_type, rope_theta and the scaling
// fields; 4.x configs have `rope_theta` at the top and the scaling fields in `rope_scaling` (type or
// rope_type). Yarn's factor is the config's (5.x); 4.4x releases derived it from the positions instead.
absl::StatusOr<RopeParameters> RopeOf(const nlohmann::json& c, int64_t max_positions) {
  RopeParameters r;
  r.theta = NumberOr(c, "rope_theta", 10000.0);
  const nlohmann::json* p = nullptr;
  for (const char* key : {"rope_parameters", "rope_scaling"}) {
    if (auto it = c.find(key); it != c.end() && it->is_object()) {
      p = &*it;
      break;
    }
  }
  if (NumberOr(c, "partial_rotary_factor", 1.0) != 1.0 || (p && NumberOr(*p, "partial_rotary_factor", 1.0) != 1.0)) {
    return absl::UnimplementedError("partial rotary embeddings (partial_rotary_factor) are not supported");
  }
  if (p == nullptr) return r;
  r.theta = NumberOr(*p, "rope_theta", r.theta);
  std::string type = "default";
  for (const char* key : {"rope_type", "type"}) {
    if (auto it = p->find(key); it != p->end() && it->is_string()) {
      type = it->get<std::string>();
      break;
    }
  }
  if (type == "default") return r;
  auto required = [&](const char* key) -> absl::StatusOr<double> {
    auto it = p->find(key);
    if (it == p->end() || !it->is_number()) {
      return absl::InvalidArgumentError(absl::StrCat("rope scaling ", type, " needs a number ", key));
    }
    return it->get<double>();
  };
  ASSIGN_OR_RETURN(r.factor, required("factor"));
  if (!(r.factor >= 1.0)) return absl::InvalidArgumentError(absl::StrCat("rope scaling factor ", r.factor, " is below 1"));
  r.original_max_positions = static_cast<int64_t>(NumberOr(*p, "original_max_position_embeddings", static_cast<double>(max_positions)));
  if (type == "linear") {
    r.type = RopeParameters::Type::kLinear;
  } else if (type == "dynamic") {
    r.type = RopeParameters::Type::kDynamic;
  } else if (type == "llama3") {
    r.type = RopeParameters::Type::kLlama3;
    ASSIGN_OR_RETURN(r.low_freq_factor, required("low_freq_factor"));
    ASSIGN_OR_RETURN(r.high_freq_factor, required("high_freq_factor"));
    ASSIGN_OR_RETURN(const double original, required("original_max_position_embeddings"));
    r.original_max_positions = static_cast<int64_t>(original);
    if (!(r.high_freq_factor > r.low_freq_factor)) return absl::InvalidArgumentError("llama3 rope: high_freq_factor must exceed low_freq_factor");
  } else if (type == "yarn") {
    r.type = RopeParameters::Type::kYarn;
    auto mscale = [](double scale, double m) { return scale <= 1 ? 1.0 : 0.1 * m * std::log(scale) + 1.0; };
    const double m = NumberOr(*p, "mscale", 0), m_all = NumberOr(*p, "mscale_all_dim", 0);
    r.attention_factor = NumberOr(*p, "attention_factor", m != 0 && m_all != 0 ? mscale(r.factor, m) / mscale(r.factor, m_all)
                                                                               : mscale(r.factor, 1.0));
    r.beta_fast = NumberOr(*p, "beta_fast", 32.0);
    r.beta_slow = NumberOr(*p, "beta_slow", 1.0);
    if (auto it = p->find("truncate"); it != p->end() && it->is_boolean()) r.truncate = it->get<bool>();
  } else {
    return absl::UnimplementedError(absl::StrCat("rope scaling type ", type, " is not supported (supported: default, linear, dynamic, yarn, llama3)"));
  }
  if (r.original_max_positions <= 0) return absl::InvalidArgumentError("rope scaling needs original_max_position_embeddings");
  return r;
}

// Softmax of s[first..last] in place (scores outside are left alone); returns nothing, the caller reads s.
void SoftmaxRange(float* s, int64_t first, int64_t last) {
  float max_score = -INFINITY;
  for (int64_t t = first; t <= last; ++t) max_score = std::max(max_score, s[t]);
  float sum = 0;
  for (int64_t t = first; t <= last; ++t) sum += (s[t] = std::exp(s[t] - max_score));
  const float inv = 1.0f / sum;
  for (int64_t t = first; t <= last; ++t) s[t] *= inv;
}

// The first key position query position t may attend to.
int64_t FirstVisible(const BlockGeometry& g, int64_t t) {
  return g.sliding_window > 0 ? std::max<int64_t>(0, t - g.sliding_window + 1) : 0;
}

float Silu(float x) { return x / (1.0f + std::exp(-x)); }

}  // namespace

std::vector<double> BlockGeometry::InverseFrequencies(int64_t length) const {
  const RopeParameters& r = rope;
  const double dim = static_cast<double>(head_dim);
  double base = r.theta;
  if (r.type == RopeParameters::Type::kDynamic && length > max_positions) {
    base *= std::pow(r.factor * static_cast<double>(length) / static_cast<double>(max_positions) - (r.factor - 1), dim / (dim - 2));
  }
  std::vector<double> f(static_cast<size_t>(head_dim / 2));
  for (size_t i = 0; i < f.size(); ++i) f[i] = std::pow(base, -2.0 * static_cast<double>(i) / dim);
  switch (r.type) {
    case RopeParameters::Type::kDefault:
    case RopeParameters::Type::kDynamic:
      break;
    case RopeParameters::Type::kLinear:
      for (double& x : f) x /= r.factor;
      break;
    case RopeParameters::Type::kLlama3: {
      // Wavelengths above original/low_freq_factor are scaled by 1/factor, below original/high_freq_factor
      // kept, and interpolated smoothly between.
      const double old = static_cast<double>(r.original_max_positions);
      const double low_wavelen = old / r.low_freq_factor, high_wavelen = old / r.high_freq_factor;
      for (double& x : f) {
        const double wavelen = 2 * M_PI / x;
        if (wavelen > low_wavelen) {
          x /= r.factor;
        } else if (wavelen >= high_wavelen) {
          const double smooth = (old / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
          x = (1 - smooth) * x / r.factor + smooth * x;
        }
      }
      break;
    }
    case RopeParameters::Type::kYarn: {
      // The dimensions that rotate fewer than beta_slow times over the original context are interpolated,
      // more than beta_fast times extrapolated, with a linear ramp between.
      const double old = static_cast<double>(r.original_max_positions);
      auto correction_dim = [&](double rotations) { return dim * std::log(old / (rotations * 2 * M_PI)) / (2 * std::log(r.theta)); };
      double low = correction_dim(r.beta_fast), high = correction_dim(r.beta_slow);
      if (r.truncate) low = std::floor(low), high = std::ceil(high);
      low = std::max(low, 0.0), high = std::min(high, dim - 1);
      if (low == high) high += 0.001;
      for (size_t i = 0; i < f.size(); ++i) {
        const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
        const double extrapolation = 1 - ramp;
        f[i] = f[i] / r.factor * (1 - extrapolation) + f[i] * extrapolation;
      }
      break;
    }
  }
  return f;
}

absl::StatusOr<BlockGeometry> BlockGeometry::Of(const ModelDescriptor& d) {
  BlockGeometry g;
  g.dim = d.hidden_size;
  g.hidden = d.intermediate_size;
  g.heads = d.num_heads;
  g.kv_heads = d.num_kv_heads > 0 ? d.num_kv_heads : d.num_heads;
  g.vocab = d.vocab_size;
  g.layers = d.num_layers;
  if (g.dim <= 0 || g.hidden <= 0 || g.heads <= 0 || g.vocab <= 0 || g.layers <= 0) {
    return absl::InvalidArgumentError("the checkpoint's config does not describe a decoder (hidden_size, "
                                      "intermediate_size, num_attention_heads, vocab_size, num_hidden_layers)");
  }
  const nlohmann::json& c = d.config;
  g.head_dim = static_cast<int64_t>(NumberOr(c, "head_dim", 0));
  if (g.head_dim <= 0) g.head_dim = g.dim / g.heads;
  g.max_positions = static_cast<int64_t>(NumberOr(c, "max_position_embeddings", 2048));
  g.sliding_window = static_cast<int64_t>(NumberOr(c, "sliding_window", 0));
  // Qwen2/Qwen3 configs carry a sliding_window they do not use unless use_sliding_window is set, and then
  // only from layer max_window_layers on (modeling_qwen2.py's layer_types).
  if (auto it = c.find("use_sliding_window"); it != c.end() && it->is_boolean()) {
    if (!it->get<bool>()) {
      g.sliding_window = 0;
    } else if (NumberOr(c, "max_window_layers", 0) < static_cast<double>(g.layers)) {
      return absl::UnimplementedError("sliding-window attention on some layers only (use_sliding_window with max_window_layers) is not supported");
    } else {
      g.sliding_window = 0;
    }
  }
  g.eps = NumberOr(c, "rms_norm_eps", 1e-5);
  if (g.head_dim % 2 != 0 || g.heads % g.kv_heads != 0 || g.head_dim < 4) {
    return absl::InvalidArgumentError(absl::StrCat("attention shape: ", g.heads, " heads of ", g.head_dim, " over ",
                                                   g.kv_heads, " key/value heads"));
  }
  if (g.max_positions <= 0) return absl::InvalidArgumentError("max_position_embeddings must be positive");
  ASSIGN_OR_RETURN(g.rope, RopeOf(c, g.max_positions));
  return g;
}

Matrix* BlockWeights::Linear(absl::string_view name) {
  static const std::pair<const char*, Matrix BlockWeights::*> kNames[] = {
      {"self_attn.q_proj.weight", &BlockWeights::q}, {"self_attn.k_proj.weight", &BlockWeights::k},
      {"self_attn.v_proj.weight", &BlockWeights::v}, {"self_attn.o_proj.weight", &BlockWeights::o},
      {"mlp.gate_proj.weight", &BlockWeights::gate}, {"mlp.up_proj.weight", &BlockWeights::up},
      {"mlp.down_proj.weight", &BlockWeights::down}};
  for (const auto& [n, member] : kNames) {
    if (name == n) return &(this->*member);
  }
  return nullptr;
}

std::vector<float>* BlockWeights::Bias(absl::string_view name) {
  static const std::pair<const char*, std::vector<float> BlockWeights::*> kNames[] = {
      {"self_attn.q_proj.bias", &BlockWeights::q_bias}, {"self_attn.k_proj.bias", &BlockWeights::k_bias},
      {"self_attn.v_proj.bias", &BlockWeights::v_bias}, {"self_attn.o_proj.bias", &BlockWeights::o_bias},
      {"mlp.gate_proj.bias", &BlockWeights::gate_bias}, {"mlp.up_proj.bias", &BlockWeights::up_bias},
      {"mlp.down_proj.bias", &BlockWeights::down_bias}};
  for (const auto& [n, member] : kNames) {
    if (name == n) return &(this->*member);
  }
  return nullptr;
}

std::vector<float>* BlockWeights::Norm(absl::string_view name) {
  if (name == "input_layernorm.weight") return &attn_norm;
  if (name == "post_attention_layernorm.weight") return &ffn_norm;
  if (name == "self_attn.q_norm.weight") return &q_norm;
  if (name == "self_attn.k_norm.weight") return &k_norm;
  return nullptr;
}

absl::StatusOr<Matrix> ShapedMatrix(const Tensor& t, int64_t rows, int64_t cols) {
  ASSIGN_OR_RETURN(Matrix m, ToMatrix(t));
  if (m.rows * m.cols != rows * cols) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", t.name, " is ", m.rows, "x", m.cols, ", expected ", rows, "x", cols));
  }
  RETURN_IF_ERROR(CheckFinite(m.data.data(), rows * cols, absl::StrCat("tensor ", t.name)));
  m.rows = rows;
  m.cols = cols;
  return m;
}

absl::StatusOr<std::vector<Tensor>> ReadBlockTensors(const CheckpointReader& reader, const Architecture& arch, int block) {
  const std::string prefix = arch.BlockPrefix(block);
  std::vector<Tensor> tensors;
  for (const TensorInfo& t : reader.tensors()) {
    if (t.name.rfind(prefix, 0) != 0) continue;
    ASSIGN_OR_RETURN(Tensor tensor, reader.Read(t));
    tensors.push_back(std::move(tensor));
  }
  return tensors;
}

absl::StatusOr<BlockWeights> BlockFromTensors(const std::vector<Tensor>& tensors, const Architecture& arch,
                                              const BlockGeometry& g, int block) {
  const std::string prefix = arch.BlockPrefix(block);
  auto load = [&](const std::string& name, int64_t rows, int64_t cols) -> absl::StatusOr<Matrix> {
    const Tensor* t = nullptr;
    for (const Tensor& candidate : tensors) {
      if (candidate.name == prefix + name) t = &candidate;
    }
    if (t == nullptr) return absl::InvalidArgumentError(absl::StrCat("missing tensor ", prefix, name));
    return ShapedMatrix(*t, rows, cols);
  };
  BlockWeights w;
  ASSIGN_OR_RETURN(Matrix attn_norm, load(arch.attn_norm, 1, g.dim));
  ASSIGN_OR_RETURN(Matrix ffn_norm, load(arch.ffn_norm, 1, g.dim));
  w.attn_norm = std::move(attn_norm.data);
  w.ffn_norm = std::move(ffn_norm.data);
  // [out, in] of each linear layer, as HF stores them; the tensors are then loaded into those shapes.
  w.q = {g.q_dim(), g.dim, {}}, w.k = {g.kv_dim(), g.dim, {}}, w.v = {g.kv_dim(), g.dim, {}}, w.o = {g.dim, g.q_dim(), {}};
  w.gate = {g.hidden, g.dim, {}}, w.up = {g.hidden, g.dim, {}}, w.down = {g.dim, g.hidden, {}};
  for (const LinearGroup& group : arch.groups) {
    for (const std::string& name : group.linears) {
      Matrix* m = w.Linear(name);
      if (m == nullptr) return absl::InternalError(absl::StrCat("the block has no linear layer ", name));
      ASSIGN_OR_RETURN(*m, load(name, m->rows, m->cols));
    }
  }
  // Biases and q/k norms: those the architecture always has must be there (below); any other bias the
  // checkpoint holds (Llama's attention_bias / mlp_bias) is used too. A bias or norm with no place in the
  // block is refused rather than ignored.
  for (const Tensor& t : tensors) {
    const std::string local = t.name.substr(prefix.size());
    if (std::vector<float>* bias = w.Bias(local)) {
      const Matrix* weight = w.Linear(absl::StrReplaceAll(local, {{".bias", ".weight"}}));
      ASSIGN_OR_RETURN(Matrix m, load(local, 1, weight->rows));
      *bias = std::move(m.data);
    } else if (!local.empty() && (local == arch.q_norm || local == arch.k_norm)) {
      ASSIGN_OR_RETURN(Matrix m, load(local, 1, g.head_dim));
      *w.Norm(local) = std::move(m.data);
    } else if (absl::EndsWith(local, ".bias") ||
               (absl::StrContains(local, "norm") && local != arch.attn_norm && local != arch.ffn_norm)) {
      return absl::UnimplementedError(absl::StrCat("tensor ", t.name, " has no place in the ", arch.name, " block"));
    }
  }
  for (const std::string& name : arch.required_extras) {
    if (w.Bias(name) != nullptr ? w.Bias(name)->empty() : w.Norm(name)->empty()) {
      return absl::InvalidArgumentError(absl::StrCat("missing tensor ", prefix, name, " (", arch.name, " has it in every block)"));
    }
  }
  return w;
}

absl::StatusOr<BlockWeights> ReadBlock(const CheckpointReader& reader, const Architecture& arch, const BlockGeometry& g,
                                       int block) {
  ASSIGN_OR_RETURN(const std::vector<Tensor> tensors, ReadBlockTensors(reader, arch, block));
  return BlockFromTensors(tensors, arch, g, block);
}

absl::StatusOr<Matrix> Embed(const CheckpointReader& reader, const Architecture& arch, const BlockGeometry& g,
                             const std::vector<int>& tokens) {
  const TensorInfo* info = nullptr;
  for (const TensorInfo& t : reader.tensors()) {
    if (t.name == arch.embed) info = &t;
  }
  if (info == nullptr) return absl::InvalidArgumentError(absl::StrCat("missing tensor ", arch.embed));
  if (info->shape.size() != 2 || info->shape[0] != g.vocab || info->shape[1] != g.dim || !IsFloatDType(info->dtype)) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", arch.embed, " is not a float ", g.vocab, "x", g.dim, " matrix"));
  }
  ASSIGN_OR_RETURN(Tensor t, reader.Read(*info));
  const size_t row_bytes = static_cast<size_t>(g.dim) * DTypeSize(t.dtype);
  Matrix x{static_cast<int64_t>(tokens.size()), g.dim, std::vector<float>(tokens.size() * static_cast<size_t>(g.dim))};
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= g.vocab) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", tokens[i], " is outside the vocabulary of ", g.vocab));
    }
    ConvertToF32(t.dtype, t.bytes.data() + static_cast<size_t>(tokens[i]) * row_bytes, static_cast<size_t>(g.dim),
                 x.row(static_cast<int64_t>(i)));
  }
  RETURN_IF_ERROR(CheckFinite(x.data.data(), static_cast<int64_t>(x.data.size()), "embeddings"));
  return x;
}

std::vector<RowChunk> ChunkWindows(const std::vector<int64_t>& window_lengths, int64_t rows_per_chunk) {
  std::vector<RowChunk> chunks;
  int64_t row = 0;
  for (const int64_t len : window_lengths) {
    if (chunks.empty() || chunks.back().rows >= rows_per_chunk) chunks.push_back({row, 0, {}});
    chunks.back().rows += len;
    chunks.back().lengths.push_back(len);
    row += len;
  }
  return chunks;
}

Matrix RowsOf(const Matrix& m, int64_t first, int64_t rows) {
  return Matrix{rows, m.cols, std::vector<float>(m.row(first), m.row(first) + rows * m.cols)};
}

void PutRows(const Matrix& part, int64_t first, Matrix* m) {
  std::copy(part.data.begin(), part.data.end(), m->row(first));
}

Matrix TimesTransposed(const Matrix& x, const Matrix& w) {
  Matrix y{x.rows, w.rows, std::vector<float>(static_cast<size_t>(x.rows * w.rows))};
  if (x.rows == 0) return y;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(x.rows), static_cast<int>(w.rows),
              static_cast<int>(x.cols), 1.0f, x.data.data(), static_cast<int>(x.cols), w.data.data(),
              static_cast<int>(w.cols), 0.0f, y.data.data(), static_cast<int>(w.rows));
  return y;
}

Matrix Project(const Matrix& x, const Matrix& w, const std::vector<float>& bias) {
  Matrix y = TimesTransposed(x, w);
  AddBias(&y, bias);
  return y;
}

void RmsNorm(const float* x, const float* weight, int64_t n, double eps, float* out) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float scale = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * scale * weight[i];
}

Matrix RmsNormRows(const Matrix& x, const std::vector<float>& weight, double eps) {
  Matrix out{x.rows, x.cols, std::vector<float>(x.data.size())};
  for (int64_t r = 0; r < x.rows; ++r) RmsNorm(x.row(r), weight.data(), x.cols, eps, out.row(r));
  return out;
}

Matrix Attention(const BlockGeometry& g, const BlockWeights& w, const Matrix& xn, const std::vector<int64_t>& window_lengths) {
  return Attention(g, w, xn, w.q, w.k, w.v, window_lengths);
}

Matrix Attention(const BlockGeometry& g, const BlockWeights& w, const Matrix& xn, const Matrix& wq, const Matrix& wk,
                 const Matrix& wv, const std::vector<int64_t>& window_lengths) {
  Matrix q = Project(xn, wq, w.q_bias), k = Project(xn, wk, w.k_bias), v = Project(xn, wv, w.v_bias);
  const int64_t hd = g.head_dim, q_dim = g.q_dim(), kv_dim = g.kv_dim(), group = g.heads / g.kv_heads;
  const int64_t longest = window_lengths.empty() ? 0 : *std::max_element(window_lengths.begin(), window_lengths.end());
  Matrix out{xn.rows, q_dim, std::vector<float>(static_cast<size_t>(xn.rows * q_dim))};
  std::vector<float> scores(static_cast<size_t>(longest * longest));
  const float inv_sqrt = 1.0f / std::sqrt(static_cast<float>(hd));
  std::vector<float> cos, sin;
  int64_t start = 0;
  for (const int64_t len : window_lengths) {
    RotaryTable(g, 0, len, len, &cos, &sin);
    for (int64_t t = 0; t < len; ++t) {
      NormHeads(q.row(start + t), g.heads, hd, w.q_norm, g.eps);
      NormHeads(k.row(start + t), g.kv_heads, hd, w.k_norm, g.eps);
      Rotate(q.row(start + t), g.heads, hd, &cos[t * (hd / 2)], &sin[t * (hd / 2)]);
      Rotate(k.row(start + t), g.kv_heads, hd, &cos[t * (hd / 2)], &sin[t * (hd / 2)]);
    }
    // Small heads go through plain loops: a threaded sgemm per (window, head) costs more in thread
    // wake-ups than it computes (measured: AWQ on stories260K 4x slower with two OpenBLAS threads).
    const bool use_blas = len * len * hd >= (int64_t{1} << 20);
    for (int64_t h = 0; h < g.heads; ++h) {
      const float* qh = q.row(start) + h * hd;
      const float* kh = k.row(start) + (h / group) * hd;
      const float* vh = v.row(start) + (h / group) * hd;
      float* oh = out.row(start) + h * hd;
      const int n = static_cast<int>(len);
      // S = Q Kᵀ / √d for the whole window; only the causal part is used.
      if (use_blas) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, static_cast<int>(hd), inv_sqrt, qh,
                    static_cast<int>(q_dim), kh, static_cast<int>(kv_dim), 0.0f, scores.data(), n);
      } else {
        for (int64_t t = 0; t < len; ++t) {
          for (int64_t j = FirstVisible(g, t); j <= t; ++j) {
            float s = 0;
            for (int64_t i = 0; i < hd; ++i) s += qh[t * q_dim + i] * kh[j * kv_dim + i];
            scores[t * len + j] = s * inv_sqrt;
          }
        }
      }
      for (int64_t t = 0; t < len; ++t) {
        float* s = scores.data() + t * len;
        const int64_t first = FirstVisible(g, t);
        SoftmaxRange(s, first, t);
        std::fill(s, s + first, 0.0f);
        std::fill(s + t + 1, s + len, 0.0f);
      }
      if (use_blas) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, static_cast<int>(hd), n, 1.0f, scores.data(), n, vh,
                    static_cast<int>(kv_dim), 0.0f, oh, static_cast<int>(q_dim));
      } else {
        for (int64_t t = 0; t < len; ++t) {
          float* o = oh + t * q_dim;
          std::fill(o, o + hd, 0.0f);
          for (int64_t j = FirstVisible(g, t); j <= t; ++j) {
            const float a = scores[t * len + j];
            for (int64_t i = 0; i < hd; ++i) o[i] += a * vh[j * kv_dim + i];
          }
        }
      }
    }
    start += len;
  }
  return out;
}

Matrix SwiGlu(const BlockWeights& w, const Matrix& xn, const Matrix& gate, const Matrix& up) {
  Matrix h1 = Project(xn, gate, w.gate_bias);
  const Matrix h3 = Project(xn, up, w.up_bias);
  for (size_t i = 0; i < h1.data.size(); ++i) h1.data[i] = Silu(h1.data[i]) * h3.data[i];
  return h1;
}

void AddInPlace(Matrix* x, const Matrix& y) {
  for (size_t i = 0; i < x->data.size(); ++i) x->data[i] += y.data[i];
}

Matrix BlockForward(const BlockGeometry& g, const BlockWeights& w, const Matrix& x,
                    const std::vector<int64_t>& window_lengths, const BlockCapture& capture) {
  const Matrix xn = RmsNormRows(x, w.attn_norm, g.eps);
  if (capture) capture(LinearInput::kQkv, xn);
  const Matrix a = Attention(g, w, xn, window_lengths);
  if (capture) capture(LinearInput::kO, a);
  Matrix h = Project(a, w.o, w.o_bias);
  AddInPlace(&h, x);
  const Matrix hn = RmsNormRows(h, w.ffn_norm, g.eps);
  if (capture) capture(LinearInput::kGateUp, hn);
  const Matrix act = SwiGlu(w, hn, w.gate, w.up);
  if (capture) capture(LinearInput::kDown, act);
  Matrix out = Project(act, w.down, w.down_bias);
  AddInPlace(&out, h);
  return out;
}

void BlockStep(const BlockGeometry& g, const BlockWeights& w, float* x, KvCache* cache, const StepCapture& capture) {
  const int64_t hd = g.head_dim, kv_dim = g.kv_dim(), group = g.heads / g.kv_heads, pos = cache->length;
  auto mat_vec = [](const Matrix& m, const std::vector<float>& bias, const float* in, float* out) {
    if (bias.empty()) {
      cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(m.rows), static_cast<int>(m.cols), 1.0f, m.data.data(),
                  static_cast<int>(m.cols), in, 1, 0.0f, out, 1);
    } else {
      std::copy(bias.begin(), bias.end(), out);
      cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(m.rows), static_cast<int>(m.cols), 1.0f, m.data.data(),
                  static_cast<int>(m.cols), in, 1, 1.0f, out, 1);
    }
  };
  std::vector<float> xn(static_cast<size_t>(g.dim)), q(static_cast<size_t>(g.q_dim())), att(static_cast<size_t>(g.q_dim()));
  std::vector<float> y(static_cast<size_t>(g.dim)), h1(static_cast<size_t>(g.hidden)), h3(h1.size());
  RmsNorm(x, w.attn_norm.data(), g.dim, g.eps, xn.data());
  if (capture) capture(LinearInput::kQkv, xn.data());
  cache->keys.resize(static_cast<size_t>((pos + 1) * kv_dim));
  cache->values.resize(cache->keys.size());
  float* k = cache->keys.data() + pos * kv_dim;
  float* v = cache->values.data() + pos * kv_dim;
  mat_vec(w.q, w.q_bias, xn.data(), q.data());
  mat_vec(w.k, w.k_bias, xn.data(), k);
  mat_vec(w.v, w.v_bias, xn.data(), v);
  NormHeads(q.data(), g.heads, hd, w.q_norm, g.eps);
  NormHeads(k, g.kv_heads, hd, w.k_norm, g.eps);
  std::vector<float> cos, sin;
  RotaryTable(g, pos, 1, pos + 1, &cos, &sin);
  Rotate(q.data(), g.heads, hd, cos.data(), sin.data());
  Rotate(k, g.kv_heads, hd, cos.data(), sin.data());
  ++cache->length;
  std::vector<float> scores(static_cast<size_t>(pos + 1));
  const float inv_sqrt = 1.0f / std::sqrt(static_cast<float>(hd));
  const int64_t first = FirstVisible(g, pos);
  for (int64_t h = 0; h < g.heads; ++h) {
    const int64_t offset = (h / group) * hd;
    for (int64_t t = first; t <= pos; ++t) {
      scores[t] = cblas_sdot(static_cast<int>(hd), q.data() + h * hd, 1, cache->keys.data() + t * kv_dim + offset, 1) * inv_sqrt;
    }
    SoftmaxRange(scores.data(), first, pos);
    float* out = att.data() + h * hd;
    std::fill(out, out + hd, 0.0f);
    for (int64_t t = first; t <= pos; ++t) {
      cblas_saxpy(static_cast<int>(hd), scores[t], cache->values.data() + t * kv_dim + offset, 1, out, 1);
    }
  }
  if (capture) capture(LinearInput::kO, att.data());
  mat_vec(w.o, w.o_bias, att.data(), y.data());
  for (int64_t i = 0; i < g.dim; ++i) x[i] += y[i];
  RmsNorm(x, w.ffn_norm.data(), g.dim, g.eps, xn.data());
  if (capture) capture(LinearInput::kGateUp, xn.data());
  mat_vec(w.gate, w.gate_bias, xn.data(), h1.data());
  mat_vec(w.up, w.up_bias, xn.data(), h3.data());
  for (size_t i = 0; i < h1.size(); ++i) h1[i] = Silu(h1[i]) * h3[i];
  if (capture) capture(LinearInput::kDown, h1.data());
  mat_vec(w.down, w.down_bias, h1.data(), y.data());
  for (int64_t i = 0; i < g.dim; ++i) x[i] += y[i];
}

}  // namespace lowbit

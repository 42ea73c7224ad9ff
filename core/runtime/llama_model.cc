#include "core/runtime/llama_model.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"
#include "core/util/status_macros.h"

namespace lowbit {
namespace {

void RmsNorm(const float* x, const float* weight, int64_t n, double eps, float* out) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float scale = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * scale * weight[i];
}

// y = W x for a row-major [rows, cols] matrix.
void MatVec(const Matrix& w, const float* x, float* y) {
  cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(w.rows), static_cast<int>(w.cols), 1.0f, w.data.data(),
              static_cast<int>(w.cols), x, 1, 0.0f, y, 1);
}

// HF rotary embedding: dimension i pairs with i + d/2, frequency theta^(-2i/d).
// Causal attention of one query head `q` over positions 0..last: keys and values are rows kv_dim apart,
// this head's slot at `offset`. `scores` holds last + 1 floats of scratch; `out` gets head_dim values.
void AttendHead(const float* q, const float* keys, const float* values, int64_t last, int64_t kv_dim, int64_t offset,
                int64_t head_dim, float* scores, float* out) {
  const float inv_sqrt = 1.0f / std::sqrt(static_cast<float>(head_dim));
  float max_score = -INFINITY;
  for (int64_t t = 0; t <= last; ++t) {
    const float* k = keys + t * kv_dim + offset;
    float s = 0;
    for (int64_t i = 0; i < head_dim; ++i) s += q[i] * k[i];
    scores[t] = s * inv_sqrt;
    max_score = std::max(max_score, scores[t]);
  }
  float sum = 0;
  for (int64_t t = 0; t <= last; ++t) sum += (scores[t] = std::exp(scores[t] - max_score));
  std::fill(out, out + head_dim, 0.0f);
  for (int64_t t = 0; t <= last; ++t) {
    const float* v = values + t * kv_dim + offset;
    const float a = scores[t] / sum;
    for (int64_t i = 0; i < head_dim; ++i) out[i] += a * v[i];
  }
}

void Rope(float* v, int64_t heads, int64_t head_dim, int64_t pos, double theta) {
  const int64_t half = head_dim / 2;
  for (int64_t h = 0; h < heads; ++h) {
    float* x = v + h * head_dim;
    for (int64_t i = 0; i < half; ++i) {
      const double angle = static_cast<double>(pos) * std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
      const float c = static_cast<float>(std::cos(angle)), s = static_cast<float>(std::sin(angle));
      const float a = x[i], b = x[i + half];
      x[i] = a * c - b * s;
      x[i + half] = b * c + a * s;
    }
  }
}

}  // namespace

absl::StatusOr<LlamaModel> LlamaModel::Load(const CheckpointReader& reader) {
  const ModelDescriptor& d = reader.descriptor();
  if (d.hidden_size <= 0 || d.num_layers <= 0 || d.num_heads <= 0 || d.vocab_size <= 0) {
    return absl::InvalidArgumentError("the checkpoint's config does not describe a Llama-family decoder");
  }
  LlamaModel m;
  m.dim_ = d.hidden_size;
  m.hidden_ = d.intermediate_size;
  m.heads_ = d.num_heads;
  m.kv_heads_ = d.num_kv_heads;
  m.head_dim_ = m.dim_ / m.heads_;
  m.vocab_ = d.vocab_size;
  m.max_pos_ = d.config.value("max_position_embeddings", 2048);
  m.eps_ = d.config.value("rms_norm_eps", 1e-5);
  m.theta_ = d.config.value("rope_theta", 10000.0);
  std::map<std::string, Matrix> weights;
  for (const TensorInfo& info : reader.tensors()) {
    ASSIGN_OR_RETURN(Tensor t, reader.Read(info));
    ASSIGN_OR_RETURN(weights[info.name], ToMatrix(t));
  }
  auto take = [&](const std::string& name, int64_t rows, int64_t cols) -> absl::StatusOr<Matrix> {
    auto it = weights.find(name);
    if (it == weights.end()) return absl::InvalidArgumentError(absl::StrCat("missing tensor ", name));
    if (it->second.rows * it->second.cols != rows * cols) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " is ", it->second.rows, "x", it->second.cols,
                                                     ", expected ", rows, "x", cols));
    }
    Matrix w = std::move(it->second);
    w.rows = rows;
    w.cols = cols;
    return w;
  };
  const int64_t kv_dim = m.kv_heads_ * m.head_dim_;
  ASSIGN_OR_RETURN(m.embed_, take("model.embed_tokens.weight", m.vocab_, m.dim_));
  for (int64_t l = 0; l < d.num_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    Block b;
    ASSIGN_OR_RETURN(Matrix an, take(p + "input_layernorm.weight", 1, m.dim_));
    ASSIGN_OR_RETURN(Matrix fn, take(p + "post_attention_layernorm.weight", 1, m.dim_));
    b.attn_norm = std::move(an.data);
    b.ffn_norm = std::move(fn.data);
    ASSIGN_OR_RETURN(b.q, take(p + "self_attn.q_proj.weight", m.dim_, m.dim_));
    ASSIGN_OR_RETURN(b.k, take(p + "self_attn.k_proj.weight", kv_dim, m.dim_));
    ASSIGN_OR_RETURN(b.v, take(p + "self_attn.v_proj.weight", kv_dim, m.dim_));
    ASSIGN_OR_RETURN(b.o, take(p + "self_attn.o_proj.weight", m.dim_, m.dim_));
    ASSIGN_OR_RETURN(b.gate, take(p + "mlp.gate_proj.weight", m.hidden_, m.dim_));
    ASSIGN_OR_RETURN(b.up, take(p + "mlp.up_proj.weight", m.hidden_, m.dim_));
    ASSIGN_OR_RETURN(b.down, take(p + "mlp.down_proj.weight", m.dim_, m.hidden_));
    m.blocks_.push_back(std::move(b));
  }
  ASSIGN_OR_RETURN(Matrix norm, take("model.norm.weight", 1, m.dim_));
  m.final_norm_ = std::move(norm.data);
  if (weights.count("lm_head.weight")) {
    ASSIGN_OR_RETURN(m.lm_head_, take("lm_head.weight", m.vocab_, m.dim_));
  }
  const size_t cache = static_cast<size_t>(d.num_layers * m.max_pos_ * kv_dim);
  m.key_cache_.assign(cache, 0.0f);
  m.value_cache_.assign(cache, 0.0f);
  m.x_.resize(m.dim_), m.xb_.resize(m.dim_), m.q_.resize(m.dim_), m.k_.resize(kv_dim), m.v_.resize(kv_dim);
  m.att_.resize(m.max_pos_), m.out_.resize(m.dim_), m.h1_.resize(m.hidden_), m.h3_.resize(m.hidden_);
  m.logits_.resize(m.vocab_);
  return m;
}

Matrix* LlamaModel::MutableLinear(const std::string& name) {
  const int layer = LayerIndexOf(name);
  if (layer < 0 || layer >= num_layers()) return nullptr;
  Block& b = blocks_[static_cast<size_t>(layer)];
  for (auto [suffix, m] : {std::pair<const char*, Matrix*>{"self_attn.q_proj.weight", &b.q}, {"self_attn.k_proj.weight", &b.k},
                           {"self_attn.v_proj.weight", &b.v}, {"self_attn.o_proj.weight", &b.o},
                           {"mlp.gate_proj.weight", &b.gate}, {"mlp.up_proj.weight", &b.up},
                           {"mlp.down_proj.weight", &b.down}}) {
    if (name == absl::StrCat("model.layers.", layer, ".", suffix)) return m;
  }
  return nullptr;
}

std::vector<float>* LlamaModel::MutableNorm(const std::string& name) {
  const int layer = LayerIndexOf(name);
  if (layer < 0 || layer >= num_layers()) return nullptr;
  Block& b = blocks_[static_cast<size_t>(layer)];
  if (name == absl::StrCat("model.layers.", layer, ".input_layernorm.weight")) return &b.attn_norm;
  if (name == absl::StrCat("model.layers.", layer, ".post_attention_layernorm.weight")) return &b.ffn_norm;
  return nullptr;
}

const std::vector<float>& LlamaModel::Forward(int token, int last_layer) {
  const int64_t kv_dim = kv_heads_ * head_dim_, group = heads_ / kv_heads_;
  std::copy(embed_.row(token), embed_.row(token) + dim_, x_.begin());
  for (size_t l = 0; l < blocks_.size(); ++l) {
    const Block& b = blocks_[l];
    const int layer = static_cast<int>(l);
    RmsNorm(x_.data(), b.attn_norm.data(), dim_, eps_, xb_.data());
    if (capture_) capture_(layer, LinearInput::kQkv, xb_.data());
    MatVec(b.q, xb_.data(), q_.data());
    MatVec(b.k, xb_.data(), k_.data());
    MatVec(b.v, xb_.data(), v_.data());
    Rope(q_.data(), heads_, head_dim_, pos_, theta_);
    Rope(k_.data(), kv_heads_, head_dim_, pos_, theta_);
    float* keys = key_cache_.data() + (static_cast<int64_t>(l) * max_pos_) * kv_dim;
    float* values = value_cache_.data() + (static_cast<int64_t>(l) * max_pos_) * kv_dim;
    std::copy(k_.begin(), k_.end(), keys + pos_ * kv_dim);
    std::copy(v_.begin(), v_.end(), values + pos_ * kv_dim);
    for (int64_t h = 0; h < heads_; ++h) {
      AttendHead(q_.data() + h * head_dim_, keys, values, pos_, kv_dim, (h / group) * head_dim_, head_dim_, att_.data(),
                 out_.data() + h * head_dim_);
    }
    if (capture_) capture_(layer, LinearInput::kO, out_.data());
    MatVec(b.o, out_.data(), xb_.data());
    for (int64_t i = 0; i < dim_; ++i) x_[i] += xb_[i];
    RmsNorm(x_.data(), b.ffn_norm.data(), dim_, eps_, xb_.data());
    if (capture_) capture_(layer, LinearInput::kGateUp, xb_.data());
    MatVec(b.gate, xb_.data(), h1_.data());
    MatVec(b.up, xb_.data(), h3_.data());
    for (int64_t i = 0; i < hidden_; ++i) h1_[i] = h1_[i] / (1.0f + std::exp(-h1_[i])) * h3_[i];  // SiLU(gate) * up
    if (capture_) capture_(layer, LinearInput::kDown, h1_.data());
    MatVec(b.down, h1_.data(), xb_.data());
    for (int64_t i = 0; i < dim_; ++i) x_[i] += xb_[i];
    if (layer == last_layer) {
      ++pos_;
      return logits_;
    }
  }
  RmsNorm(x_.data(), final_norm_.data(), dim_, eps_, xb_.data());
  MatVec(lm_head_.data.empty() ? embed_ : lm_head_, xb_.data(), logits_.data());
  ++pos_;
  return logits_;
}

namespace {

// y = x·wᵀ for rows of x (n x in) and w (out x in).
Matrix TimesTransposed(const Matrix& x, const Matrix& w) {
  Matrix y{x.rows, w.rows, std::vector<float>(static_cast<size_t>(x.rows * w.rows))};
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(x.rows), static_cast<int>(w.rows),
              static_cast<int>(x.cols), 1.0f, x.data.data(), static_cast<int>(x.cols), w.data.data(),
              static_cast<int>(w.cols), 0.0f, y.data.data(), static_cast<int>(w.rows));
  return y;
}

}  // namespace

Matrix LlamaModel::AttentionOutput(const Matrix& x, const Matrix& wq, const Matrix& wk, const Matrix& wv,
                                   const Matrix& wo) const {
  const int64_t steps = x.rows, kv_dim = kv_heads_ * head_dim_, group = heads_ / kv_heads_;
  Matrix q = TimesTransposed(x, wq), k = TimesTransposed(x, wk), v = TimesTransposed(x, wv);
  for (int64_t t = 0; t < steps; ++t) {
    Rope(q.row(t), heads_, head_dim_, t, theta_);
    Rope(k.row(t), kv_heads_, head_dim_, t, theta_);
  }
  Matrix out{steps, heads_ * head_dim_, std::vector<float>(static_cast<size_t>(steps * heads_ * head_dim_))};
  std::vector<float> att(static_cast<size_t>(steps));
  for (int64_t t = 0; t < steps; ++t) {
    for (int64_t h = 0; h < heads_; ++h) {
      AttendHead(q.row(t) + h * head_dim_, k.data.data(), v.data.data(), t, kv_dim, (h / group) * head_dim_, head_dim_,
                 att.data(), out.row(t) + h * head_dim_);
    }
  }
  return TimesTransposed(out, wo);
}

Matrix LlamaModel::MlpOutput(const Matrix& x, const Matrix& gate, const Matrix& up, const Matrix& down) {
  Matrix h1 = TimesTransposed(x, gate);
  const Matrix h3 = TimesTransposed(x, up);
  for (size_t i = 0; i < h1.data.size(); ++i) h1.data[i] = h1.data[i] / (1.0f + std::exp(-h1.data[i])) * h3.data[i];
  return TimesTransposed(h1, down);
}

std::vector<int> GreedyDecode(LlamaModel& model, int bos, int steps) {
  model.Reset();
  std::vector<int> tokens;
  int token = bos;
  for (int step = 0; step < steps && step < model.max_positions(); ++step) {
    const std::vector<float>& logits = model.Forward(token);
    token = static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    if (token == bos || token == 2) break;  // llama2.c stops at BOS; EOS ends a story too
    tokens.push_back(token);
  }
  return tokens;
}

}  // namespace lowbit

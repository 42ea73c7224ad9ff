#include "core/runtime/llama_model.h"

#include <cblas.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/util/status_macros.h"

namespace lowbit {
namespace {

absl::StatusOr<Matrix> ReadMatrix(const CheckpointReader& reader, const std::string& name, int64_t rows, int64_t cols) {
  for (const TensorInfo& info : reader.tensors()) {
    if (info.name != name) continue;
    ASSIGN_OR_RETURN(Tensor t, reader.Read(info));
    return ShapedMatrix(t, rows, cols);
  }
  return absl::NotFoundError(absl::StrCat("missing tensor ", name));
}

}  // namespace

absl::StatusOr<OutputHead> ReadOutputHead(const CheckpointReader& reader, const Architecture& arch, const BlockGeometry& g) {
  OutputHead head;
  absl::StatusOr<Matrix> norm = ReadMatrix(reader, arch.final_norm, 1, g.dim);
  if (!norm.ok()) return absl::InvalidArgumentError(norm.status().message());
  head.norm = std::move(norm->data);
  absl::StatusOr<Matrix> lm_head = ReadMatrix(reader, arch.lm_head, g.vocab, g.dim);
  if (absl::IsNotFound(lm_head.status())) lm_head = ReadMatrix(reader, arch.embed, g.vocab, g.dim);  // tied
  if (!lm_head.ok()) return absl::InvalidArgumentError(lm_head.status().message());
  head.lm_head = *std::move(lm_head);
  return head;
}

absl::StatusOr<LlamaModel> LlamaModel::Load(const CheckpointReader& reader) {
  ASSIGN_OR_RETURN(const Architecture* arch, ArchitectureOf(reader.descriptor()));
  LlamaModel m;
  ASSIGN_OR_RETURN(m.geometry_, BlockGeometry::Of(reader.descriptor()));
  const BlockGeometry& g = m.geometry_;
  absl::StatusOr<Matrix> embed = ReadMatrix(reader, arch->embed, g.vocab, g.dim);
  if (!embed.ok()) return absl::InvalidArgumentError(embed.status().message());
  m.embed_ = *std::move(embed);
  for (int l = 0; l < g.layers; ++l) {
    ASSIGN_OR_RETURN(BlockWeights b, ReadBlock(reader, *arch, g, l));
    m.blocks_.push_back(std::move(b));
  }
  ASSIGN_OR_RETURN(OutputHead head, ReadOutputHead(reader, *arch, g));
  m.final_norm_ = std::move(head.norm);
  bool tied = true;
  for (const TensorInfo& info : reader.tensors()) tied = tied && info.name != arch->lm_head;
  if (!tied) m.lm_head_ = std::move(head.lm_head);
  m.caches_.resize(m.blocks_.size());
  m.x_.resize(static_cast<size_t>(g.dim));
  m.xn_.resize(static_cast<size_t>(g.dim));
  m.logits_.resize(static_cast<size_t>(g.vocab));
  return m;
}

void LlamaModel::Reset() {
  for (KvCache& c : caches_) c = KvCache{};
}

const std::vector<float>& LlamaModel::Forward(int token) {
  const BlockGeometry& g = geometry_;
  std::copy(embed_.row(token), embed_.row(token) + g.dim, x_.begin());
  for (size_t l = 0; l < blocks_.size(); ++l) {
    StepCapture capture;
    if (capture_) capture = [&, l](LinearInput in, const float* x) { capture_(static_cast<int>(l), in, x); };
    BlockStep(g, blocks_[l], x_.data(), &caches_[l], capture);
  }
  RmsNorm(x_.data(), final_norm_.data(), g.dim, g.eps, xn_.data());
  const Matrix& head = lm_head_.data.empty() ? embed_ : lm_head_;
  cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(head.rows), static_cast<int>(head.cols), 1.0f,
              head.data.data(), static_cast<int>(head.cols), xn_.data(), 1, 0.0f, logits_.data(), 1);
  return logits_;
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

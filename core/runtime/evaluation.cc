#include "core/runtime/evaluation.h"

#include <cmath>
#include <future>

#include "absl/strings/str_cat.h"
#include "core/runtime/decoder_block.h"
#include "core/runtime/llama_model.h"
#include "core/util/status_macros.h"

namespace lowbit {
namespace {

// One model advanced block by block over the evaluation rows.
struct Stream {
  const CheckpointReader* reader = nullptr;
  const Architecture* arch = nullptr;
  BlockGeometry geometry;
  Matrix x;
  std::future<absl::StatusOr<std::vector<Tensor>>> next;  ///< the next block as stored

  void Prefetch(int block) {
    if (block < geometry.layers) {
      next = std::async(std::launch::async, [this, block] { return ReadBlockTensors(*reader, *arch, block); });
    }
  }
  ~Stream() {
    if (next.valid()) next.wait();
  }
};

absl::Status Open(const CheckpointReader& reader, const std::vector<int>& tokens, Stream* s) {
  s->reader = &reader;
  ASSIGN_OR_RETURN(s->arch, ArchitectureOf(reader.descriptor()));
  ASSIGN_OR_RETURN(s->geometry, BlockGeometry::Of(reader.descriptor()));
  ASSIGN_OR_RETURN(s->x, Embed(reader, *s->arch, s->geometry, tokens));
  s->Prefetch(0);
  return absl::OkStatus();
}

absl::Status Advance(Stream* s, int block, const std::vector<RowChunk>& chunks, const JobContext* context) {
  ASSIGN_OR_RETURN(const std::vector<Tensor> tensors, s->next.get());
  s->Prefetch(block + 1);
  ASSIGN_OR_RETURN(const BlockWeights w, BlockFromTensors(tensors, *s->arch, s->geometry, block));
  for (const RowChunk& c : chunks) {
    RETURN_IF_ERROR(CheckCancelled(context));
    PutRows(BlockForward(s->geometry, w, RowsOf(s->x, c.first_row, c.rows), c.lengths), c.first_row, &s->x);
  }
  return absl::OkStatus();
}

// log-softmax of each row of logits, in double.
std::vector<double> LogSoftmaxRow(const float* logits, int64_t n) {
  double max = -INFINITY;
  for (int64_t i = 0; i < n; ++i) max = std::max(max, static_cast<double>(logits[i]));
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(logits[i]) - max);
  const double log_sum = max + std::log(sum);
  std::vector<double> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<double>(logits[i]) - log_sum;
  return out;
}

}  // namespace

absl::StatusOr<EvalResult> Evaluate(const CheckpointReader& model, const CheckpointReader* reference,
                                    const EvaluationWindows& windows, JobContext* context, int64_t rows_per_chunk,
                                    const LogProbsSink& each_position) {
  std::vector<int> tokens, targets;
  std::vector<int64_t> lengths;
  for (size_t w = 0; w < windows.inputs.size(); ++w) {
    tokens.insert(tokens.end(), windows.inputs[w].begin(), windows.inputs[w].end());
    targets.insert(targets.end(), windows.targets[w].begin(), windows.targets[w].end());
    lengths.push_back(static_cast<int64_t>(windows.inputs[w].size()));
  }
  if (tokens.empty() || tokens.size() != targets.size()) return absl::InvalidArgumentError("evaluation: no windows");
  Stream m, r;
  RETURN_IF_ERROR(Open(model, tokens, &m));
  if (reference != nullptr) {
    RETURN_IF_ERROR(Open(*reference, tokens, &r));
    const BlockGeometry &a = m.geometry, &b = r.geometry;
    if (a.dim != b.dim || a.hidden != b.hidden || a.layers != b.layers || a.vocab != b.vocab || a.heads != b.heads ||
        a.kv_heads != b.kv_heads) {
      return absl::InvalidArgumentError("evaluation: the model and the reference have different shapes");
    }
  }
  for (int64_t t : targets) {
    if (t < 0 || t >= m.geometry.vocab) return absl::InvalidArgumentError(absl::StrCat("evaluation: target id ", t, " is outside the vocabulary"));
  }
  const std::vector<RowChunk> chunks = ChunkWindows(lengths, rows_per_chunk);
  const int layers = static_cast<int>(m.geometry.layers);
  for (int block = 0; block < layers; ++block) {
    RETURN_IF_ERROR(CheckCancelled(context));
    if (context) context->Progress({JobPhase::kEvaluating, block, layers + 1, m.arch->BlockPrefix(block)});
    RETURN_IF_ERROR(Advance(&m, block, chunks, context));
    if (reference != nullptr) RETURN_IF_ERROR(Advance(&r, block, chunks, context));
  }
  if (context) context->Progress({JobPhase::kEvaluating, layers, layers + 1, "lm_head"});
  ASSIGN_OR_RETURN(const OutputHead head, ReadOutputHead(model, *m.arch, m.geometry));
  OutputHead ref_head;
  if (reference != nullptr) {
    ASSIGN_OR_RETURN(ref_head, ReadOutputHead(*reference, *r.arch, r.geometry));
  }
  EvalResult result;
  double nll = 0, ref_nll = 0, kl = 0;
  const int64_t vocab = m.geometry.vocab;
  // Row chunks small enough that chunk x vocabulary logits stay modest.
  const int64_t rows = std::max<int64_t>(1, std::min<int64_t>(rows_per_chunk, (64 << 20) / (vocab * 4)));
  for (int64_t first = 0; first < m.x.rows; first += rows) {
    RETURN_IF_ERROR(CheckCancelled(context));
    const int64_t n = std::min(rows, m.x.rows - first);
    const Matrix logits = TimesTransposed(RmsNormRows(RowsOf(m.x, first, n), head.norm, m.geometry.eps), head.lm_head);
    Matrix ref_logits;
    if (reference != nullptr) {
      ref_logits = TimesTransposed(RmsNormRows(RowsOf(r.x, first, n), ref_head.norm, r.geometry.eps), ref_head.lm_head);
    }
    for (int64_t i = 0; i < n; ++i) {
      const size_t target = static_cast<size_t>(targets[static_cast<size_t>(first + i)]);
      const std::vector<double> lp = LogSoftmaxRow(logits.row(i), vocab);
      nll -= lp[target];
      if (each_position) RETURN_IF_ERROR(each_position(lp));
      if (reference != nullptr) {
        const std::vector<double> ref_lp = LogSoftmaxRow(ref_logits.row(i), vocab);
        ref_nll -= ref_lp[target];
        for (int64_t v = 0; v < vocab; ++v) kl += std::exp(ref_lp[v]) * (ref_lp[v] - lp[v]);
      }
      ++result.tokens;
    }
  }
  const double count = static_cast<double>(result.tokens);
  result.perplexity = std::exp(nll / count);
  if (reference != nullptr) {
    result.reference_perplexity = std::exp(ref_nll / count);
    result.kl_divergence = kl / count;
  }
  return result;
}

}  // namespace lowbit

#include "core/runtime/evaluation.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/util/status_macros.h"

namespace lowbit {
namespace {

// log-softmax of logits into out.
void LogSoftmax(const std::vector<float>& logits, std::vector<double>* out) {
  double max = -INFINITY;
  for (float v : logits) max = std::max(max, static_cast<double>(v));
  double sum = 0;
  for (float v : logits) sum += std::exp(static_cast<double>(v) - max);
  const double log_sum = max + std::log(sum);
  out->resize(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) (*out)[i] = static_cast<double>(logits[i]) - log_sum;
}

}  // namespace

absl::StatusOr<EvalResult> Evaluate(LlamaModel& model, LlamaModel* reference, ObjectStore* store,
                                    absl::string_view text_uri, const Llama2cTokenizer& tokenizer,
                                    const EvalOptions& options) {
  ASSIGN_OR_RETURN(std::string text, store->ReadAll(text_uri));
  const size_t per_window = static_cast<size_t>(options.seqlen - 1);
  const std::vector<int> tokens = tokenizer.EncodeLines(text, per_window * static_cast<size_t>(options.windows));
  const size_t windows = std::min(static_cast<size_t>(options.windows), tokens.size() / per_window);
  if (windows == 0) {
    return absl::InvalidArgumentError(absl::StrCat("evaluation text ", text_uri, " has fewer than ", per_window, " tokens"));
  }
  EvalResult r;
  double nll = 0, ref_nll = 0, kl = 0;
  std::vector<double> lp, ref_lp;
  for (size_t w = 0; w < windows; ++w) {
    model.Reset();
    if (reference) reference->Reset();
    int input = Llama2cTokenizer::kBos;
    for (size_t i = 0; i < per_window; ++i) {
      const int target = tokens[w * per_window + i];
      LogSoftmax(model.Forward(input), &lp);
      nll -= lp[static_cast<size_t>(target)];
      if (reference) {
        LogSoftmax(reference->Forward(input), &ref_lp);
        ref_nll -= ref_lp[static_cast<size_t>(target)];
        for (size_t v = 0; v < lp.size(); ++v) kl += std::exp(ref_lp[v]) * (ref_lp[v] - lp[v]);
      }
      ++r.tokens;
      input = target;
    }
  }
  const double n = static_cast<double>(r.tokens);
  r.perplexity = std::exp(nll / n);
  if (reference) {
    r.reference_perplexity = std::exp(ref_nll / n);
    r.kl_divergence = kl / n;
  }
  return r;
}

}  // namespace lowbit

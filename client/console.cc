#include "client/console.h"

#include <unistd.h>

#include <cstdio>

#include "absl/strings/str_format.h"

namespace lowbit::cli {

ProgressBar::ProgressBar() : enabled_(::isatty(STDERR_FILENO) == 1) {}

void ProgressBar::Update(int64_t done, int64_t total, const std::string& label) {
  if (!enabled_) return;
  constexpr int kWidth = 30;
  const double fraction = total > 0 ? static_cast<double>(done) / static_cast<double>(total) : 0.0;
  const int filled = static_cast<int>(fraction * kWidth);
  std::fprintf(stderr, "\r\033[K[%s%s] %3d%% %lld/%lld %s", std::string(filled, '#').c_str(),
               std::string(kWidth - filled, '.').c_str(), static_cast<int>(fraction * 100),
               static_cast<long long>(done), static_cast<long long>(total), label.c_str());
  std::fflush(stderr);
  drawn_ = true;
}

void ProgressBar::Finish() {
  if (enabled_ && drawn_) std::fprintf(stderr, "\r\033[K");
  drawn_ = false;
}

std::string LayerTableHeader() {
  return absl::StrFormat("%-44s %-12s %-6s %8s %10s %9s\n", "layer", "shape", "method", "bits/w", "rel.error", "ms");
}

std::string LayerTableRow(const LayerReport& layer) {
  std::string shape = layer.shape.size() == 2 ? absl::StrFormat("%dx%d", layer.shape[0], layer.shape[1]) : "?";
  std::string name = layer.name;
  if (name.size() > 44) name = "…" + name.substr(name.size() - 43);
  return absl::StrFormat("%-44s %-12s %-6s %8.3f %10.5f %9.2f\n", name, shape, layer.method, layer.bits_per_weight,
                         layer.relative_error, layer.seconds * 1e3);
}

std::string SummaryLine(const JobSummary& s) {
  return absl::StrFormat(
      "%d layers (%d weights) at %.3f bits/weight; relative error mean %.5f, max %.5f; read %.2f MB, wrote %.2f MB "
      "in %.2f s\n",
      s.layers_quantized, s.weights_quantized, s.bits_per_weight, s.mean_relative_error, s.max_relative_error,
      s.bytes_read / 1e6, s.bytes_written / 1e6, s.seconds);
}

std::string EvaluationLine(const Evaluation& e) {
  return absl::StrFormat("evaluation on %d tokens: perplexity %.4f (source %.4f), KL to the source %.5f nats/token\n",
                         e.tokens, e.perplexity, e.reference_perplexity, e.kl_divergence);
}

}  // namespace lowbit::cli

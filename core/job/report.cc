#include "core/job/report.h"

#include <algorithm>

namespace lowbit {

void Summarize(JobReport* report) {
  JobSummary& s = report->summary;
  s.layers_quantized = static_cast<int64_t>(report->layers.size());
  s.weights_quantized = 0;
  double bits = 0, error_sum = 0;
  s.max_relative_error = 0;
  for (const LayerReport& layer : report->layers) {
    const int64_t n = layer.shape.size() == 2 ? layer.shape[0] * layer.shape[1] : 0;
    s.weights_quantized += n;
    bits += layer.bits_per_weight * static_cast<double>(n);
    error_sum += layer.relative_error;
    s.max_relative_error = std::max(s.max_relative_error, layer.relative_error);
  }
  s.bits_per_weight = s.weights_quantized > 0 ? bits / static_cast<double>(s.weights_quantized) : 0;
  s.mean_relative_error = report->layers.empty() ? 0 : error_sum / static_cast<double>(report->layers.size());
}

nlohmann::json ToJson(const LayerReport& layer) {
  nlohmann::json j = {{"name", layer.name},
                      {"method", layer.method},
                      {"shape", layer.shape},
                      {"bits_per_weight", layer.bits_per_weight},
                      {"relative_error", layer.relative_error},
                      {"seconds", layer.seconds}};
  if (!layer.note.empty()) j["note"] = layer.note;
  return j;
}

nlohmann::json ToJson(const JobReport& report) {
  nlohmann::json layers = nlohmann::json::array();
  for (const LayerReport& layer : report.layers) layers.push_back(ToJson(layer));
  nlohmann::json files = nlohmann::json::array();
  for (const OutputFile& f : report.files) files.push_back({{"name", f.name}, {"bytes", f.bytes}});
  nlohmann::json kept = nlohmann::json::array();
  for (const KeptLayer& k : report.kept) kept.push_back({{"name", k.name}, {"reason", k.reason}});
  const JobSummary& s = report.summary;
  nlohmann::json j = {{"source", report.source},
          {"resumed", report.resumed},
          {"destination", report.destination},
          {"config", report.config},
          {"layers", layers},
          {"kept_in_high_precision", kept},
          {"files", files},
          {"summary",
           {{"layers_quantized", s.layers_quantized},
            {"tensors_total", s.tensors_total},
            {"weights_quantized", s.weights_quantized},
            {"bits_per_weight", s.bits_per_weight},
            {"mean_relative_error", s.mean_relative_error},
            {"max_relative_error", s.max_relative_error},
            {"bytes_read", s.bytes_read},
            {"bytes_written", s.bytes_written},
            {"seconds", s.seconds}}}};
  if (report.evaluation) {
    const Evaluation& e = *report.evaluation;
    j["evaluation"] = {{"perplexity", e.perplexity},
                       {"reference_perplexity", e.reference_perplexity},
                       {"kl_divergence", e.kl_divergence},
                       {"tokens", e.tokens},
                       {"text", e.text}};
  }
  if (report.allocation) j["allocation"] = ToJson(*report.allocation);
  return j;
}

nlohmann::json ToJson(const AllocationReport& a) {
  nlohmann::json layers = nlohmann::json::array();
  for (const AllocatedLayer& l : a.layers) {
    layers.push_back({{"name", l.name}, {"setting", l.setting}, {"bits_per_weight", l.bits_per_weight},
                      {"output_error", l.output_error}, {"sensitivity", l.sensitivity}, {"predicted_kl", l.predicted_kl}});
  }
  return {{"target", a.target},
          {"budget_bits_per_weight", a.budget_bits_per_weight},
          {"bits_per_weight", a.bits_per_weight},
          {"predicted_kl", a.predicted_kl},
          {"lower_bound_kl", a.lower_bound_kl},
          {"exact", a.exact},
          {"measurement", a.measurement},
          {"measurement_seconds", a.measurement_seconds},
          {"layers", layers}};
}

}  // namespace lowbit

#include "core/runtime/calibration.h"

#include <random>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/util/status_macros.h"

namespace lowbit {

absl::StatusOr<std::vector<std::vector<int>>> CalibrationWindows(ObjectStore* store, absl::string_view uri,
                                                                 const Llama2cTokenizer& tokenizer,
                                                                 const CalibrationOptions& options) {
  ASSIGN_OR_RETURN(std::string text, store->ReadAll(uri));
  std::vector<int> tokens;
  if (absl::EndsWith(uri, ".ids.json")) {
    const nlohmann::json ids = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    auto id_ok = [&](const nlohmann::json& v) {
      return v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() < tokenizer.vocab_size();
    };
    if (!ids.is_array() || ids.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(uri, ": expected a JSON array of token ids or of windows"));
    }
    if (ids[0].is_array()) {  // windows as given
      std::vector<std::vector<int>> windows;
      for (const nlohmann::json& w : ids) {
        if (static_cast<int>(windows.size()) == options.samples) break;
        if (!w.is_array() || w.empty()) return absl::InvalidArgumentError(absl::StrCat(uri, ": a window is not a non-empty array"));
        std::vector<int> window;
        for (const nlohmann::json& v : w) {
          if (!id_ok(v)) return absl::InvalidArgumentError(absl::StrCat(uri, ": token id ", v.dump(), " is outside the vocabulary"));
          if (static_cast<int>(window.size()) < options.seqlen) window.push_back(v.get<int>());
        }
        windows.push_back(std::move(window));
      }
      return windows;
    }
    for (const nlohmann::json& v : ids) {
      if (!id_ok(v)) return absl::InvalidArgumentError(absl::StrCat(uri, ": token id ", v.dump(), " is outside the vocabulary"));
      tokens.push_back(v.get<int>());
    }
  } else {
    // Enough tokens for windows that rarely overlap.
    tokens = tokenizer.EncodeLines(text, static_cast<size_t>(options.samples) * static_cast<size_t>(options.seqlen) * 4);
  }
  if (tokens.size() < static_cast<size_t>(options.seqlen)) {
    return absl::InvalidArgumentError(absl::StrCat("calibration text ", uri, " has ", tokens.size(),
                                                   " tokens, fewer than one window of ", options.seqlen));
  }
  std::mt19937 rng(options.seed);
  std::uniform_int_distribution<size_t> start(0, tokens.size() - static_cast<size_t>(options.seqlen));
  std::vector<std::vector<int>> windows;
  for (int s = 0; s < options.samples; ++s) {
    const size_t at = start(rng);
    std::vector<int> w = {Llama2cTokenizer::kBos};
    w.insert(w.end(), tokens.begin() + static_cast<std::ptrdiff_t>(at),
             tokens.begin() + static_cast<std::ptrdiff_t>(at) + options.seqlen - 1);
    windows.push_back(std::move(w));
  }
  return windows;
}

absl::StatusOr<std::map<std::string, GptqResult>> RunSequentialGptq(
    LlamaModel& model, const std::vector<std::vector<int>>& windows, const GptqOptions& options,
    const std::function<bool(const std::string&)>& include, const std::function<void(const std::string&)>& progress) {
  static const std::vector<std::pair<LinearInput, std::vector<std::string>>> kSteps = {
      {LinearInput::kQkv, {"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"}},
      {LinearInput::kO, {"self_attn.o_proj.weight"}},
      {LinearInput::kGateUp, {"mlp.gate_proj.weight", "mlp.up_proj.weight"}},
      {LinearInput::kDown, {"mlp.down_proj.weight"}},
  };
  std::map<std::string, GptqResult> results;
  for (int layer = 0; layer < model.num_layers(); ++layer) {
    for (const auto& [input, suffixes] : kSteps) {
      std::vector<std::string> names;
      for (const std::string& s : suffixes) {
        const std::string name = absl::StrCat("model.layers.", layer, ".", s);
        if (include(name)) names.push_back(name);
      }
      if (names.empty()) continue;
      // One pass over the calibration windows up to this block, collecting this input's statistics.
      CalibrationStats stats;
      stats.cols = model.MutableLinear(names.front())->cols;
      std::vector<float> rows;
      model.set_capture([&, layer, input = input](int l, LinearInput in, const float* x) {
        if (l == layer && in == input) rows.insert(rows.end(), x, x + stats.cols);
      });
      for (const std::vector<int>& window : windows) {
        model.Reset();
        for (int token : window) model.Forward(token, layer);
        AccumulateHessian(rows.data(), static_cast<int64_t>(rows.size()) / stats.cols, &stats);
        rows.clear();
      }
      model.set_capture(nullptr);
      for (const std::string& name : names) {
        Matrix* w = model.MutableLinear(name);
        absl::StatusOr<GptqResult> r = QuantizeGptq(*w, stats, options);
        if (!r.ok()) return absl::Status(r.status().code(), absl::StrCat("tensor ", name, ": ", r.status().message()));
        *w = r->tensor.Dequantize();  // later blocks see this layer as it will be
        results.emplace(name, *std::move(r));
        if (progress) progress(name);
      }
    }
  }
  model.Reset();
  return results;
}

}  // namespace lowbit

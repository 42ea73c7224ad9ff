#include "core/runtime/calibration.h"

#include <array>
#include <chrono>
#include <random>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/quant/error_metrics.h"
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

namespace {

constexpr const char* kInputNames[] = {"q/k/v", "o", "gate/up", "down"};

double SquaredDifference(const Matrix& a, const Matrix& b) {
  double e = 0;
  for (size_t i = 0; i < a.data.size(); ++i) e += (static_cast<double>(a.data[i]) - b.data[i]) * (a.data[i] - b.data[i]);
  return e;
}

// The statistics of the `wanted` linear inputs of decoder block `layer`, from one pass over the windows. With
// `attention_inputs` and `mlp_inputs` (AWQ's block searches; both inputs wanted) the attention-norm outputs are
// also kept per window and the MLP-norm outputs as rows of one matrix.
std::array<CalibrationStats, 4> CaptureBlockInputs(LlamaModel& model, int layer, const std::vector<std::vector<int>>& windows,
                                                   std::array<bool, 4> wanted,
                                                   std::vector<Matrix>* attention_inputs = nullptr,
                                                   Matrix* mlp_inputs = nullptr) {
  const std::string p = absl::StrCat("model.layers.", layer, ".");
  std::array<CalibrationStats, 4> stats;
  stats[0].cols = model.MutableLinear(p + "self_attn.q_proj.weight")->cols;
  stats[1].cols = model.MutableLinear(p + "self_attn.o_proj.weight")->cols;
  stats[2].cols = model.MutableLinear(p + "mlp.gate_proj.weight")->cols;
  stats[3].cols = model.MutableLinear(p + "mlp.down_proj.weight")->cols;
  if (mlp_inputs != nullptr) *mlp_inputs = Matrix{0, stats[2].cols, {}};
  std::array<std::vector<float>, 4> rows;
  model.set_capture([&, layer](int l, LinearInput in, const float* x) {
    const int i = static_cast<int>(in);
    if (l == layer && wanted[i]) rows[i].insert(rows[i].end(), x, x + stats[i].cols);
  });
  for (const std::vector<int>& window : windows) {
    model.Reset();
    for (int token : window) model.Forward(token, layer);
    if (attention_inputs != nullptr) attention_inputs->push_back({static_cast<int64_t>(window.size()), stats[0].cols, rows[0]});
    if (mlp_inputs != nullptr) {
      mlp_inputs->data.insert(mlp_inputs->data.end(), rows[2].begin(), rows[2].end());
      mlp_inputs->rows += static_cast<int64_t>(window.size());
    }
    for (int i = 0; i < 4; ++i) {
      if (!wanted[i]) continue;
      AccumulateHessian(rows[i].data(), static_cast<int64_t>(rows[i].size()) / stats[i].cols, &stats[i]);
      rows[i].clear();
    }
  }
  model.set_capture(nullptr);
  model.Reset();
  return stats;
}

}  // namespace

absl::StatusOr<std::map<std::string, CalibratedLayer>> RunSequential(
    LlamaModel& model, const std::vector<std::vector<int>>& windows, const LayerQuantizeFn& quantize,
    const std::function<bool(const std::string&)>& include, const std::function<void(const std::string&)>& progress) {
  static const std::vector<std::pair<LinearInput, std::vector<std::string>>> kSteps = {
      {LinearInput::kQkv, {"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"}},
      {LinearInput::kO, {"self_attn.o_proj.weight"}},
      {LinearInput::kGateUp, {"mlp.gate_proj.weight", "mlp.up_proj.weight"}},
      {LinearInput::kDown, {"mlp.down_proj.weight"}},
  };
  std::map<std::string, CalibratedLayer> results;
  for (int layer = 0; layer < model.num_layers(); ++layer) {
    for (const auto& [input, suffixes] : kSteps) {
      std::vector<std::string> names;
      for (const std::string& s : suffixes) {
        const std::string name = absl::StrCat("model.layers.", layer, ".", s);
        if (include(name)) names.push_back(name);
      }
      if (names.empty()) continue;
      // One pass over the calibration windows up to this block, collecting this input's statistics.
      std::array<bool, 4> wanted{};
      wanted[static_cast<int>(input)] = true;
      const CalibrationStats stats = CaptureBlockInputs(model, layer, windows, wanted)[static_cast<int>(input)];
      for (const std::string& name : names) {
        Matrix* w = model.MutableLinear(name);
        const auto started = std::chrono::steady_clock::now();
        absl::StatusOr<CalibratedLayer> r = quantize(name, *w, stats);
        if (!r.ok()) return absl::Status(r.status().code(), absl::StrCat("tensor ", name, ": ", r.status().message()));
        r->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        *w = Dequantize(r->tensor);  // later blocks see this layer as it will be
        results.emplace(name, *std::move(r));
        if (progress) progress(name);
      }
    }
  }
  model.Reset();
  return results;
}

absl::StatusOr<AwqModelResult> RunAwq(LlamaModel& model, const std::vector<std::vector<int>>& windows,
                                      const AwqOptions& options, const std::function<bool(const std::string&)>& include) {
  AwqModelResult result;
  for (int layer = 0; layer < model.num_layers(); ++layer) {
    const std::string p = absl::StrCat("model.layers.", layer, ".");
    std::vector<Matrix> attention_x;
    Matrix mlp_x;
    const std::array<CalibrationStats, 4> stats =
        CaptureBlockInputs(model, layer, windows, {true, true, true, true}, &attention_x, &mlp_x);
    // Working copies: the float model stays as it is, so later blocks see float activations.
    std::map<std::string, Matrix> w;
    for (const char* s : {"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                          "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"}) {
      w[s] = *model.MutableLinear(p + s);
    }
    std::vector<float> attn_norm = *model.MutableNorm(p + "input_layernorm.weight");
    std::vector<float> ffn_norm = *model.MutableNorm(p + "post_attention_layernorm.weight");
    auto scale_cols = [](Matrix& m, const std::vector<float>& s) {
      for (int64_t r = 0; r < m.rows; ++r)
        for (int64_t c = 0; c < m.cols; ++c) m.data[r * m.cols + c] *= s[c];
    };
    auto unscale_rows = [](Matrix& m, const std::vector<float>& s) {
      for (int64_t r = 0; r < m.rows; ++r)
        for (int64_t c = 0; c < m.cols; ++c) m.data[r * m.cols + c] /= s[r];
    };
    Matrix& q = w["self_attn.q_proj.weight"];
    Matrix& k = w["self_attn.k_proj.weight"];
    Matrix& v = w["self_attn.v_proj.weight"];
    Matrix& o = w["self_attn.o_proj.weight"];
    Matrix& gate = w["mlp.gate_proj.weight"];
    Matrix& up = w["mlp.up_proj.weight"];
    Matrix& down = w["mlp.down_proj.weight"];
    // The blocks q/k/v and gate/up feed, as AutoAWQ inspects them: their float outputs, then the error of
    // a candidate's.
    std::vector<Matrix> attention_reference;
    for (const Matrix& x : attention_x) attention_reference.push_back(model.AttentionOutput(x, q, k, v, o));
    const Matrix mlp_reference = LlamaModel::MlpOutput(mlp_x, gate, up, down);
    const AwqBlockError attention_error = [&](const std::vector<Matrix>& w) {
      double e = 0;
      for (size_t i = 0; i < attention_x.size(); ++i) {
        e += SquaredDifference(model.AttentionOutput(attention_x[i], w[0], w[1], w[2], o), attention_reference[i]);
      }
      return e;
    };
    const AwqBlockError mlp_error = [&](const std::vector<Matrix>& w) {
      return SquaredDifference(LlamaModel::MlpOutput(mlp_x, w[0], w[1], down), mlp_reference);
    };
    // Searches on the original weights, as AutoAWQ, then the scales are applied.
    std::array<AwqScales, 4> found;
    ASSIGN_OR_RETURN(found[0], SearchAwqScales({&q, &k, &v}, stats[0], options, attention_error));
    const bool fold_v_into_o = v.rows == o.cols;  // no grouped-query attention
    if (fold_v_into_o) {
      ASSIGN_OR_RETURN(found[1], SearchAwqScales({&o}, stats[1], options));
    } else {
      found[1].scales.assign(static_cast<size_t>(o.cols), 1.0f);
    }
    ASSIGN_OR_RETURN(found[2], SearchAwqScales({&gate, &up}, stats[2], options, mlp_error));
    ASSIGN_OR_RETURN(found[3], SearchAwqScales({&down}, stats[3], options));
    for (int64_t c = 0; c < q.cols; ++c) attn_norm[c] /= found[0].scales[c];
    for (Matrix* m : {&q, &k, &v}) scale_cols(*m, found[0].scales);
    if (fold_v_into_o) {
      unscale_rows(v, found[1].scales);
      scale_cols(o, found[1].scales);
    }
    for (int64_t c = 0; c < gate.cols; ++c) ffn_norm[c] /= found[2].scales[c];
    for (Matrix* m : {&gate, &up}) scale_cols(*m, found[2].scales);
    unscale_rows(up, found[3].scales);
    scale_cols(down, found[3].scales);
    result.replaced[p + "input_layernorm.weight"] = attn_norm;
    result.replaced[p + "post_attention_layernorm.weight"] = ffn_norm;

    const std::vector<std::pair<std::string, int>> inputs = {
        {"self_attn.q_proj.weight", 0}, {"self_attn.k_proj.weight", 0}, {"self_attn.v_proj.weight", 0},
        {"self_attn.o_proj.weight", 1}, {"mlp.gate_proj.weight", 2},    {"mlp.up_proj.weight", 2},
        {"mlp.down_proj.weight", 3}};
    for (const auto& [suffix, in] : inputs) {
      const std::string name = p + suffix;
      if (!include(name)) {  // kept in high precision, but with the scales folded in
        result.replaced[name] = w[suffix].data;
        continue;
      }
      const auto started = std::chrono::steady_clock::now();
      const bool clip = options.clip && !absl::StrContains(suffix, "q_proj") && !absl::StrContains(suffix, "k_proj");
      absl::StatusOr<QuantizedTensor> qt = QuantizeAwqLayer(w[suffix], ScaleStats(stats[in], found[in].scales), clip, options);
      if (!qt.ok()) return absl::Status(qt.status().code(), absl::StrCat("tensor ", name, ": ", qt.status().message()));
      const AwqScales& f = found[in];
      std::string note = in == 1 && !fold_v_into_o
                             ? "awq: o_proj unscaled (grouped-query attention: v's outputs are not o's inputs)"
                             : absl::StrFormat("awq: %s scales alpha=%.2f, search error %.3g of plain RTN's", kInputNames[in],
                                               f.alpha, f.error_unscaled > 0 ? f.error / f.error_unscaled : 1.0);
      if (clip) absl::StrAppend(&note, "; clipped");
      const double error = RelativeFrobeniusError(w[suffix], *qt);
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      result.layers.emplace(name, CalibratedLayer{*std::move(qt), note, error, seconds});
    }
  }
  return result;
}

}  // namespace lowbit

#include "core/job/bit_budget.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/quant/bit_allocation.h"
#include "core/quant/error_metrics.h"
#include "core/runtime/block_calibrator.h"
#include "core/runtime/evaluation.h"
#include "core/storage/sigv4.h"
#include "core/util/status_macros.h"

namespace lowbit {
namespace {

// The sensitivity probe: data-free, so each layer's perturbation is recomputed from its weights alone.
QuantConfig ProbeConfig() {
  QuantConfig probe;
  probe.method = Method::kRtn;
  probe.bits = 4;
  probe.group_size = 32;
  return probe;
}

}  // namespace

double LayerOutputError(const Matrix& w, const QuantizedLayer& q, const CalibrationStats& stats) {
  // In chunks of rows (about 4M values), so the pool's concurrent tasks each hold two chunks, not two layers.
  const int64_t cols = w.cols, chunk = std::max<int64_t>(1, std::min<int64_t>(w.rows, (int64_t{1} << 22) / std::max<int64_t>(1, cols)));
  std::vector<float> d(static_cast<size_t>(chunk * cols)), dh(d.size());
  double sum = 0;
  for (int64_t first = 0; first < w.rows; first += chunk) {
    const int64_t n = std::min(chunk, w.rows - first);
    for (int64_t r = 0; r < n; ++r) {
      float* row = d.data() + r * cols;
      DequantizeRow(q, first + r, row);
      const float* original = w.row(first + r);
      for (int64_t c = 0; c < cols; ++c) row[c] = original[c] - row[c];
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(n), static_cast<int>(cols), static_cast<int>(cols), 1.0f,
                d.data(), static_cast<int>(cols), stats.hessian.data(), static_cast<int>(cols), 0.0f, dh.data(), static_cast<int>(cols));
    for (int64_t k = 0; k < n * cols; ++k) sum += static_cast<double>(d[k]) * dh[k];
  }
  return std::max(0.0, 0.5 * sum);
}

namespace {

// The source with one linear layer replaced by float values.
class PerturbedReader final : public CheckpointReader {
 public:
  PerturbedReader(const CheckpointReader& inner, const std::string& name, Matrix values)
      : CheckpointReader(nullptr), inner_(inner), name_(name), values_(std::move(values)) {
    descriptor_ = inner.descriptor();
    metadata_ = inner.metadata();
    for (TensorInfo t : inner.tensors()) {
      if (t.name == name_) t.dtype = DType::kF32, t.size = values_.data.size() * sizeof(float);
      tensors_.push_back(std::move(t));
    }
  }
  absl::StatusOr<Tensor> Read(const TensorInfo& info) const override {
    if (info.name != name_) return inner_.Read(info);
    return Tensor{info.name, DType::kF32, info.shape,
                  std::string(reinterpret_cast<const char*>(values_.data.data()), values_.data.size() * sizeof(float))};
  }

 private:
  const CheckpointReader& inner_;
  const std::string name_;
  const Matrix values_;
};

uint64_t StoredBits(const OutputFormatTraits& traits, const std::string& name, int64_t rows, int64_t cols, const QuantConfig& q) {
  if (traits.shape_problem != nullptr && !traits.shape_problem(rows, cols, q).empty()) return 0;
  std::map<std::string, std::string> metadata;
  const std::string prefix = name.substr(0, name.size() - absl::string_view(".weight").size());
  uint64_t bytes = 0;
  for (const TensorSpec& s : traits.tensor_specs(prefix, rows, cols, q, &metadata)) {
    uint64_t n = DTypeSize(s.dtype);
    for (const int64_t d : s.shape) n *= static_cast<uint64_t>(d);
    bytes += n;
  }
  return 8 * bytes;
}

// The job's context with every phase reported as measuring (the calibrator reports its blocks).
class MeasuringContext final : public JobContext {
 public:
  explicit MeasuringContext(JobContext* inner) : inner_(inner) {}
  absl::Status CheckCancelled() const override { return lowbit::CheckCancelled(inner_); }
  void Progress(const JobProgress& p) override {
    if (inner_ == nullptr) return;
    JobProgress measuring = p;
    measuring.phase = JobPhase::kMeasuring;
    inner_->Progress(measuring);
  }

 private:
  JobContext* const inner_;
};

}  // namespace

absl::StatusOr<QuantConfig> ParseCandidate(absl::string_view name) {
  const std::vector<std::string> parts = absl::StrSplit(name, '-');
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("candidate '", name, "': ", why,
                                                   " (METHOD-Nb[-gG|-ch][-sym][-ao][-dD], e.g. gptq-4b-g32, lut-4b-g16, vq-3b-d2, onebit)"));
  };
  const std::optional<Method> method = ParseMethod(parts[0]);
  if (!method || (*method != Method::kGptq && *method != Method::kRtn && *method != Method::kLut && *method != Method::kVq &&
                  *method != Method::kOneBit)) {
    return bad("the method must be gptq, rtn, lut, vq or onebit");
  }
  QuantConfig q;
  q.method = *method;
  int bits = 0, dim = 0;
  int64_t group = 0;
  bool per_channel = false;
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string& p = parts[i];
    if (p.size() > 1 && p.back() == 'b' && absl::SimpleAtoi(p.substr(0, p.size() - 1), &bits)) continue;
    if (p.size() > 1 && p[0] == 'g' && absl::SimpleAtoi(p.substr(1), &group) && group > 0) continue;
    if (p.size() > 1 && p[0] == 'd' && absl::SimpleAtoi(p.substr(1), &dim)) continue;
    if (p == "ch") per_channel = true;
    else if (p == "sym") q.symmetric = true;
    else if (p == "ao" && q.method == Method::kGptq) q.act_order = true;
    else return bad(absl::StrCat("unknown part '", p, "'"));
  }
  if ((q.method == Method::kOneBit) != (bits == 0)) return bad(q.method == Method::kOneBit ? "onebit takes no bits" : "give the bits, e.g. 4b");
  if (dim != 0 && q.method != Method::kVq) return bad("only vq has a dimension");
  switch (q.method) {
    case Method::kGptq:
    case Method::kRtn:
      q.bits = bits;
      q.group_size = per_channel ? -1 : group > 0 ? group : 128;
      break;
    case Method::kLut:
      if (per_channel || q.symmetric) return bad("lut takes bits and -gG output channels per table only");
      q.lut.bits = bits;
      if (group > 0) q.lut.granularity = LutGranularity::kPerGroupedChannel, q.lut.group_size = group;
      break;
    case Method::kVq:
      if (per_channel || q.symmetric || group > 0) return bad("vq takes bits per dimension and -dD only");
      q.vq.bits = bits;
      q.vq.dim = dim > 0 ? dim : 2;
      break;
    default:
      if (per_channel || q.symmetric || group > 0) return bad("onebit takes no options");
  }
  RETURN_IF_ERROR(ValidateQuantConfig(q));
  return q;
}

std::vector<std::string> DefaultCandidates(OutputFormat format) {
  std::vector<std::string> names;
  // GPTQ's engines load 2, 3, 4 and 8 bits (vLLM's gptq.py); lowbit's own layout any width. Symmetric
  // grids for GPTQ: vLLM's Marlin kernels take no other.
  const bool gptq = format == OutputFormat::kGptq;
  const std::vector<int> widths = gptq ? std::vector<int>{2, 3, 4, 8} : std::vector<int>{2, 3, 4, 5, 6, 8};
  for (const int bits : widths) {
    for (const char* group : {"g32", "g64", "g128", "ch"}) names.push_back(absl::StrCat("gptq-", bits, "b-", group, gptq ? "-sym" : ""));
  }
  if (!gptq) {
    for (const char* other : {"vq-2b-d2", "vq-3b-d2", "lut-3b-g16", "lut-4b-g16"}) names.push_back(other);
  }
  return names;
}

absl::Status ValidateBudget(const BitBudget& b, OutputFormat format) {
  const int targets = (b.bits_per_weight > 0) + (b.max_bytes > 0) + (b.max_kl > 0);
  if (targets != 1) return absl::InvalidArgumentError("budget: give exactly one of bits_per_weight, max_bytes and max_kl");
  if (!std::isfinite(b.bits_per_weight) || b.bits_per_weight < 0 || b.bits_per_weight > 32) {
    return absl::InvalidArgumentError("budget.bits_per_weight: must be above 0 and at most 32");
  }
  if (!std::isfinite(b.max_kl) || b.max_kl < 0) return absl::InvalidArgumentError("budget.max_kl: must be a positive number");
  if (b.sensitivity_windows < 1 || b.sensitivity_windows > 1024) {
    return absl::InvalidArgumentError("budget.sensitivity_windows: must be 1..1024");
  }
  return ValidateCandidates(b.candidates, format);
}

absl::Status ValidateCandidates(const std::vector<std::string>& candidates, OutputFormat format) {
  if (format != OutputFormat::kNative && format != OutputFormat::kGptq) {
    return absl::InvalidArgumentError(absl::StrCat("budget: the ", FormatName(format),
                                                   " format is not allocated per layer; write native or gptq"));
  }
  const OutputFormatTraits& traits = FormatTraits(format);
  for (const std::string& name : candidates) {
    ASSIGN_OR_RETURN(const QuantConfig q, ParseCandidate(name));
    if (!traits.accepts(q.method)) {
      return absl::InvalidArgumentError(absl::StrCat("budget.candidates: the ", traits.name, " format takes ", traits.methods,
                                                     " results, not ", name));
    }
    if (traits.check) {
      if (absl::Status s = traits.check(q); !s.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("budget.candidates: ", name, ": ", s.message()));
      }
    }
  }
  return absl::OkStatus();
}

nlohmann::json Measurement::ToJson() const {
  nlohmann::json layers_json = nlohmann::json::array();
  for (const LayerMeasurement& l : layers) {
    layers_json.push_back({{"name", l.name}, {"rows", l.rows}, {"cols", l.cols}, {"bits", l.bits}, {"error", l.error},
                           {"probe_error", l.probe_error}, {"probe_kl", l.probe_kl}, {"sensitivity", l.sensitivity()}});
  }
  return {{"key", key}, {"candidates", candidates}, {"seconds", seconds},
          {"probe", "rtn-4b-g32 (zero point)"}, {"layers", layers_json}};
}

absl::StatusOr<Measurement> Measurement::FromJson(absl::string_view text) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  auto bad = [](absl::string_view why) { return absl::InvalidArgumentError(absl::StrCat("measurement: ", why)); };
  if (!j.is_object() || !j.contains("key") || !j["key"].is_string() || !j.contains("candidates") ||
      !j["candidates"].is_array() || !j.contains("layers") || !j["layers"].is_array()) {
    return bad("not a lowbit measurement (key, candidates, layers)");
  }
  Measurement m;
  m.key = j["key"];
  for (const nlohmann::json& c : j["candidates"]) {
    if (!c.is_string()) return bad("a candidate is not a string");
    m.candidates.push_back(c);
  }
  const size_t n = m.candidates.size();
  for (const nlohmann::json& l : j["layers"]) {
    LayerMeasurement layer;
    try {
      layer.name = l.at("name");
      layer.rows = l.at("rows");
      layer.cols = l.at("cols");
      layer.bits = l.at("bits").get<std::vector<uint64_t>>();
      layer.error = l.at("error").get<std::vector<double>>();
      layer.probe_error = l.at("probe_error");
      layer.probe_kl = l.at("probe_kl");
    } catch (const nlohmann::json::exception& e) {
      return bad(absl::StrCat("layer entry: ", e.what()));
    }
    if (layer.bits.size() != n || layer.error.size() != n) return bad(absl::StrCat(layer.name, ": not one value per candidate"));
    for (size_t c = 0; c < n; ++c) {
      if (!std::isfinite(layer.error[c]) || layer.error[c] < 0) return bad(absl::StrCat(layer.name, ": a negative or non-finite error"));
    }
    if (!std::isfinite(layer.probe_kl) || layer.probe_kl < 0 || !std::isfinite(layer.probe_error) || layer.probe_error < 0) {
      return bad(absl::StrCat(layer.name, ": a negative or non-finite probe"));
    }
    m.layers.push_back(std::move(layer));
  }
  if (j.contains("seconds") && j["seconds"].is_number()) m.seconds = j["seconds"];
  return m;
}

std::string MeasurementKey(const CheckpointReader& reader, const std::string& calibration, const std::vector<std::string>& candidates,
                           OutputFormat format, int sensitivity_windows) {
  std::string text = absl::StrCat("format=", FormatName(format), "\ncalibration=", calibration, "\nsensitivity_windows=",
                                  sensitivity_windows, "\ncandidates=", absl::StrJoin(candidates, ","), "\n");
  for (const TensorInfo& t : reader.tensors()) {
    absl::StrAppend(&text, t.name, " ", DTypeName(t.dtype), " ", absl::StrJoin(t.shape, "x"), "\n");
  }
  return Sha256Hex(text);
}

absl::StatusOr<Measurement> MeasureLayers(const CheckpointReader& reader, const std::vector<std::vector<int>>& windows,
                                          OutputFormat format, const std::vector<std::string>& candidates,
                                          const std::function<bool(const std::string&)>& include,
                                          const MeasureOptions& options) {
  const auto started = std::chrono::steady_clock::now();
  const OutputFormatTraits& traits = FormatTraits(format);
  std::vector<QuantConfig> configs;
  std::vector<std::unique_ptr<Quantizer>> quantizers;
  for (const std::string& name : candidates) {
    ASSIGN_OR_RETURN(QuantConfig q, ParseCandidate(name));
    ASSIGN_OR_RETURN(std::unique_ptr<Quantizer> quantizer, CreateQuantizer(q));
    configs.push_back(q);
    quantizers.push_back(std::move(quantizer));
  }
  ASSIGN_OR_RETURN(const std::unique_ptr<Quantizer> probe, CreateQuantizer(ProbeConfig()));
  const int n = static_cast<int>(candidates.size());

  // The layers, each with the candidates the format can hold at its shape; slots filled by the tasks.
  Measurement m;
  m.candidates = candidates;
  std::map<std::string, size_t> index;
  std::vector<const TensorInfo*> infos;  // parallel to m.layers
  for (const TensorInfo& t : reader.tensors()) {
    if (t.shape.size() != 2 || !include(t.name)) continue;
    LayerMeasurement l{t.name, t.shape[0], t.shape[1], std::vector<uint64_t>(n), std::vector<double>(n)};
    bool any = false;
    for (int c = 0; c < n; ++c) any |= (l.bits[c] = StoredBits(traits, t.name, l.rows, l.cols, configs[c])) > 0;
    if (!any) continue;
    index[t.name] = m.layers.size();
    infos.push_back(&t);
    m.layers.push_back(std::move(l));
  }
  if (m.layers.empty()) return absl::InvalidArgumentError("budget: no linear layer can be written with any candidate");

  BlockCalibratorOptions o;
  o.mode = BlockCalibratorOptions::Mode::kMeasure;
  o.include = [&index](const std::string& name) { return index.count(name) > 0; };
  MeasuringContext context(options.context);
  o.pool = options.pool;
  o.context = &context;
  const int64_t rows_per_chunk = options.rows_per_chunk > 0 ? options.rows_per_chunk : kDefaultRowsPerChunk;
  o.rows_per_chunk = rows_per_chunk;
  o.measure_tasks = n + 1;  // the candidates, then the probe
  o.measure = [&](const std::string& name, const Matrix& w, const CalibrationStats& stats, int task,
                  const JobContext* ctx) -> absl::Status {
    LayerMeasurement& l = m.layers[index.at(name)];
    if (task < n && l.bits[task] == 0) return absl::OkStatus();
    const Quantizer& q = task < n ? *quantizers[task] : *probe;
    absl::StatusOr<QuantizedLayer> r = q.Quantize(w, task < n ? &stats : nullptr, ctx);
    if (!r.ok()) {
      return absl::Status(r.status().code(), absl::StrCat(name, " with ", task < n ? candidates[task] : "the probe", ": ",
                                                          r.status().message()));
    }
    (task < n ? l.error[task] : l.probe_error) = LayerOutputError(w, *r, stats);
    return absl::OkStatus();
  };
  {
    ASSIGN_OR_RETURN(std::unique_ptr<BlockCalibrator> calibrator, BlockCalibrator::Create(reader, windows, std::move(o)));
    while (calibrator->next_block() < calibrator->num_blocks()) RETURN_IF_ERROR(calibrator->Next().status());
  }

  // Sensitivity: each layer alone probed, the model's KL to the float model on the first windows.
  EvaluationWindows eval;
  for (size_t i = 0; i < windows.size() && static_cast<int>(i) < options.sensitivity_windows; ++i) {
    if (windows[i].size() < 2) continue;
    eval.inputs.emplace_back(windows[i].begin(), windows[i].end() - 1);
    eval.targets.emplace_back(windows[i].begin() + 1, windows[i].end());
  }
  if (eval.inputs.empty()) return absl::InvalidArgumentError("budget: the calibration windows are too short to measure sensitivity");
  for (size_t i = 0; i < m.layers.size(); ++i) {
    LayerMeasurement& l = m.layers[i];
    RETURN_IF_ERROR(context.CheckCancelled());
    context.Progress({JobPhase::kMeasuring, static_cast<int64_t>(i), static_cast<int64_t>(m.layers.size()),
                      absl::StrCat("sensitivity of ", l.name)});
    ASSIGN_OR_RETURN(const Tensor tensor, reader.Read(*infos[i]));
    ASSIGN_OR_RETURN(const Matrix w, ToMatrix(tensor));
    ASSIGN_OR_RETURN(const QuantizedLayer q, probe->Quantize(w, nullptr));
    PerturbedReader perturbed(reader, l.name, Dequantize(q));
    // The job's context: a cancel stops the evaluation within a block.
    ASSIGN_OR_RETURN(const EvalResult r, Evaluate(perturbed, &reader, eval, &context, rows_per_chunk));
    l.probe_kl = std::max(0.0, r.kl_divergence);
  }
  m.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return m;
}

namespace {

std::vector<std::vector<AllocationCandidate>> Knapsack(const Measurement& m, std::vector<std::vector<int>>* offered) {
  std::vector<std::vector<AllocationCandidate>> layers;
  offered->clear();
  for (const LayerMeasurement& l : m.layers) {
    layers.emplace_back();
    offered->emplace_back();
    for (size_t c = 0; c < l.bits.size(); ++c) {
      if (l.bits[c] == 0) continue;
      layers.back().push_back({l.bits[c], l.predicted_kl(static_cast<int>(c))});
      offered->back().push_back(static_cast<int>(c));
    }
  }
  return layers;
}

BudgetPlan PlanOf(const Measurement& m, const Allocation& a, const std::vector<std::vector<int>>& offered, uint64_t budget_bits) {
  BudgetPlan p;
  p.budget_bits = budget_bits;
  p.bits = a.bits;
  p.predicted_kl = a.cost;
  p.lower_bound_kl = a.lower_bound;
  p.exact = a.exact;
  for (size_t i = 0; i < m.layers.size(); ++i) {
    p.choice.push_back(offered[i][a.choice[i]]);
    p.weights += static_cast<uint64_t>(m.layers[i].rows * m.layers[i].cols);
  }
  return p;
}

}  // namespace

absl::StatusOr<BudgetPlan> PlanBudget(const Measurement& m, const BitBudget& budget) {
  std::vector<std::vector<int>> offered;
  const std::vector<std::vector<AllocationCandidate>> layers = Knapsack(m, &offered);
  uint64_t weights = 0, least = 0, most = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    weights += static_cast<uint64_t>(m.layers[i].rows * m.layers[i].cols);
    uint64_t lo = UINT64_MAX, hi = 0;
    for (const AllocationCandidate& c : layers[i]) lo = std::min(lo, c.bits), hi = std::max(hi, c.bits);
    least += lo, most += hi;
  }
  auto at = [&](uint64_t bits) -> absl::StatusOr<BudgetPlan> {
    absl::StatusOr<Allocation> a = AllocateBits(layers, bits);
    if (!a.ok()) {
      return absl::OutOfRangeError(absl::StrFormat("budget: %.3f bits per weight is below the smallest candidates' %.3f",
                                                   static_cast<double>(bits) / static_cast<double>(weights),
                                                   static_cast<double>(least) / static_cast<double>(weights)));
    }
    return PlanOf(m, *a, offered, bits);
  };
  if (budget.bits_per_weight > 0) return at(static_cast<uint64_t>(std::floor(budget.bits_per_weight * static_cast<double>(weights))));
  if (budget.max_bytes > 0) return at(8 * budget.max_bytes);
  // The smallest budget whose allocation is predicted within max_kl: bisection over the bits.
  ASSIGN_OR_RETURN(BudgetPlan best, at(most));
  if (best.predicted_kl > budget.max_kl) {
    return absl::OutOfRangeError(absl::StrFormat("budget.max_kl: %g is below the least predicted KL of these candidates, %g",
                                                 budget.max_kl, best.predicted_kl));
  }
  uint64_t lo = least, hi = most;  // the allocation at hi meets max_kl
  while (hi - lo > std::max<uint64_t>(1, weights / 10000)) {
    const uint64_t mid = lo + (hi - lo) / 2;
    ASSIGN_OR_RETURN(BudgetPlan p, at(mid));
    if (p.predicted_kl <= budget.max_kl) hi = mid, best = std::move(p);
    else lo = mid;
  }
  return best;
}

BudgetPlan UniformPlan(const Measurement& m, int c) {
  BudgetPlan p;
  for (const LayerMeasurement& l : m.layers) {
    int pick = c;
    if (l.bits[c] == 0) {
      for (size_t k = 0; k < l.bits.size(); ++k) {
        if (l.bits[k] > 0 && (l.bits[pick] == 0 || l.bits[k] < l.bits[pick])) pick = static_cast<int>(k);
      }
    }
    p.choice.push_back(pick);
    p.bits += l.bits[pick];
    p.weights += static_cast<uint64_t>(l.rows * l.cols);
    p.predicted_kl += l.predicted_kl(pick);
  }
  p.budget_bits = p.bits;
  p.lower_bound_kl = p.predicted_kl;
  return p;
}

}  // namespace lowbit

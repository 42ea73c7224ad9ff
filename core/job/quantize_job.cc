#include "core/job/quantize_job.h"

#include <fnmatch.h>

#include <chrono>
#include <deque>
#include <future>
#include <optional>
#include <set>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/checkpoint/checkpoint_reader.h"
#include "core/checkpoint/safetensors.h"
#include "core/job/job_plan.h"
#include "core/job/output_transaction.h"
#include "absl/strings/str_join.h"
#include "core/quant/ggml_types.h"
#include "core/job/gguf_output.h"
#include "core/checkpoint/gguf.h"
#include "core/job/servable_output.h"
#include "core/pack/awq.h"
#include "core/pack/dequantized_reader.h"
#include "core/pack/gptq.h"
#include "core/pack/native.h"
#include "core/quant/error_metrics.h"
#include "core/runtime/block_calibrator.h"
#include "core/runtime/evaluation.h"
#include "core/runtime/token_windows.h"
#include "core/util/status_macros.h"

namespace lowbit {
namespace {


struct PlannedTensor {
  TensorInfo info;
  const QuantConfig* quant = nullptr;  ///< null: kept in high precision
  const Quantizer* quantizer = nullptr;
  OutputFormat format = OutputFormat::kGptq;
  const CalibratedLayer* calibrated = nullptr;        ///< computed by the block calibrator (calibrated methods)
  const std::vector<float>* replacement = nullptr;    ///< float values changed by calibration (AWQ's folded scales)
  std::vector<TensorSpec> outputs;
  std::string kept_reason;        ///< a linear layer left in high precision: why
  std::string note;               ///< for the layer's report (a GGUF type's fallback)
  bool per_channel = false;       ///< its group is wider than the layer: stored (and declared) per output channel
  // kGguf only: the tensor's GGUF name, ggml type and row order (core/job/gguf_output.h).
  std::string gguf_name;
  GgmlType gguf_type = GgmlType::kF32;
  std::vector<int64_t> row_order;
};

// The job's quantizers: one for the main config and one per override, created and validated up front;
// for GGUF, one per quantized ggml type (a file's mixture and fallbacks use several).
struct Quantizers {
  std::unique_ptr<Quantizer> main;
  std::vector<std::unique_ptr<Quantizer>> overrides;  ///< parallel to spec.overrides
  struct OnGgmlType {
    QuantConfig config;
    std::unique_ptr<Quantizer> quantizer;
  };
  std::map<GgmlType, OnGgmlType> ggml;
};

// `quant` with its codes on t's blocks. The uniform-grid fields are t's nearest uniform grid, used where a
// method searches with RTN before its final rounding (AWQ's scale and clip searches).
QuantConfig OnGgmlGrid(QuantConfig quant, const GgmlTypeTraits& t) {
  quant.ggml = &t;
  quant.bits = 2;
  while ((1 << quant.bits) < t.grid.levels) ++quant.bits;
  quant.group_size = t.grid.sub_block;
  quant.symmetric = !t.grid.has_min();
  quant.act_order = false;
  quant.static_groups = false;
  return quant;
}

// What a worker hands back for one tensor.
struct ProcessedTensor {
  std::vector<Tensor> outputs;
  std::optional<LayerReport> layer;
};

bool MatchesAny(const std::vector<std::string>& patterns, const std::string& name) {
  for (const std::string& p : patterns) {
    if (fnmatch(p.c_str(), name.c_str(), 0) == 0) return true;
  }
  return false;
}

std::string LayerPrefix(const std::string& weight_name) {
  return weight_name.substr(0, weight_name.size() - absl::string_view(".weight").size());
}

// The tensors' specs in the job's (safetensors) output format, and the file metadata they need.
std::vector<TensorSpec> OutputSpecs(const PlannedTensor& p, std::map<std::string, std::string>* metadata) {
  return FormatTraits(p.format).tensor_specs(LayerPrefix(p.info.name), p.info.shape[0], p.info.shape[1], *p.quant, metadata);
}

// Why the request keeps a linear layer in high precision, whatever its settings ("" if it does not).
std::string RequestKeptReason(const TensorInfo& info, const QuantizeJobSpec& spec) {
  if (!spec.include.empty() && !MatchesAny(spec.include, info.name)) return "not matched by an include pattern";
  for (const std::string& pattern : spec.exclude) {
    if (fnmatch(pattern.c_str(), info.name.c_str(), 0) == 0) return absl::StrCat("excluded by the pattern ", pattern);
  }
  if (!IsFloatDType(info.dtype)) return "not a float tensor";
  if (info.shape[0] == 0 || info.shape[1] == 0) return "has no values (a zero dimension)";
  return "";
}

// Why a linear layer stays in high precision ("" if it is quantized with `quant`): the request's patterns,
// or a shape the output format's engines refuse (core/pack/gptq.h, awq.h), which is never padded.
std::string KeptReason(const TensorInfo& info, const QuantizeJobSpec& spec, OutputFormat format, const QuantConfig& quant) {
  if (std::string reason = RequestKeptReason(info, spec); !reason.empty()) return reason;
  const OutputFormatTraits& traits = FormatTraits(format);
  const std::string problem = traits.shape_problem ? traits.shape_problem(info.shape[0], info.shape[1], quant) : "";
  return problem.empty() ? "" : absl::StrCat(FormatName(format), " engines cannot load it: ", problem);
}

// How a tensor goes into a GGUF file: its name, type (the file type's, its mixture's, or llama.cpp's
// fallback for rows its blocks do not divide) and row order, and whether it stays quantized (`quant`
// cleared otherwise); false for a tensor llama.cpp has no name for (dropped).
bool PlanGguf(const CheckpointReader& reader, const QuantizeJobSpec& spec, const Quantizers& quantizers, PlannedTensor* p) {
  const Architecture* arch = FindArchitecture(reader.descriptor().architecture);
  absl::StatusOr<BlockGeometry> g = BlockGeometry::Of(reader.descriptor());
  if (arch == nullptr || !g.ok()) return false;  // refused before planning (RunQuantizeJob)
  p->gguf_name = GgufTensorName(*arch, p->info.name);
  if (p->gguf_name.empty()) return false;
  const GgufFileType& file_type = *FindGgufFileType(spec.gguf_type);
  const GgmlTypeTraits& base = TraitsOf(file_type.base);
  const bool candidate = p->quant != nullptr && p->kept_reason.empty() && base.quantized();
  GgmlType type = candidate ? GgufTensorType(file_type, p->gguf_name, g->layers)
                  : p->info.shape.size() < 2 ? GgmlType::kF32  // norms and biases: llama.cpp computes them in F32
                  : base.quantized()         ? GgmlType::kF16
                                             : base.type;
  if (candidate) {
    const GgmlType wanted = type;
    type = GgufFallbackType(wanted, p->info.shape[1]);
    const GgmlTypeTraits& t = TraitsOf(wanted);
    if (type == GgmlType::kF16) {
      p->kept_reason = absl::StrCat(t.name, " blocks need rows of multiples of ", t.block_size, " values, and no ggml type's blocks fit ",
                                    p->info.shape[1], ": written as F16");
    } else if (type != wanted) {
      p->note = absl::StrCat(t.name, " needs rows of multiples of ", t.block_size, " values: written as ", TraitsOf(type).name,
                             " (llama.cpp's fallback)");
    }
  }
  if (!base.quantized()) p->kept_reason.clear();  // a float file: nothing is set apart
  p->gguf_type = type;
  if (TraitsOf(type).quantized()) {
    const Quantizers::OnGgmlType& q = quantizers.ggml.at(type);
    p->quant = &q.config;
    p->quantizer = q.quantizer.get();
  } else {
    p->quant = nullptr;
    p->quantizer = nullptr;
  }
  p->row_order = GgufRowOrder(*arch, g->heads, g->kv_heads, g->head_dim, p->info.name);
  return true;
}

std::vector<PlannedTensor> Plan(const CheckpointReader& reader, const QuantizeJobSpec& spec, const Quantizers& quantizers,
                                std::map<std::string, std::string>* metadata, std::vector<KeptLayer>* dropped) {
  std::vector<PlannedTensor> plan;
  const OutputFormat format = JobFormat(spec);
  for (const TensorInfo& info : reader.tensors()) {
    PlannedTensor p;
    p.info = info;
    p.format = format;
    const TensorRole role = RoleOf(info.name, info.shape.size());
    const bool candidate = (role == TensorRole::kLinear || (role == TensorRole::kLmHead && spec.quantize_lm_head)) &&
                           info.shape.size() == 2;
    if (candidate) {
      p.quant = &spec.quant;
      p.quantizer = quantizers.main.get();
      for (size_t i = 0; i < spec.overrides.size(); ++i) {
        if (MatchesAny({spec.overrides[i].pattern}, info.name)) {
          p.quant = &spec.overrides[i].quant;
          p.quantizer = quantizers.overrides[i].get();
          break;
        }
      }
      p.kept_reason = KeptReason(info, spec, format, *p.quant);
    }
    if (format == OutputFormat::kGguf) {
      if (!PlanGguf(reader, spec, quantizers, &p)) {
        dropped->push_back({info.name, "dropped: llama.cpp has no tensor for it"});
        continue;
      }
      p.outputs = {{p.gguf_name, DType::kF32, info.shape}};
      plan.push_back(std::move(p));
      continue;
    }
    if (candidate && p.kept_reason.empty()) {
      p.per_channel = p.quant->group_size > info.shape[1];
      p.outputs = OutputSpecs(p, metadata);
    } else {
      p.quant = nullptr;
      p.quantizer = nullptr;
      // Quantized checkpoints keep unquantized weights in FP16, the activation dtype of their kernels.
      p.outputs = {{info.name, IsFloatDType(info.dtype) ? DType::kF16 : info.dtype, info.shape}};
    }
    plan.push_back(std::move(p));
  }
  return plan;
}

// A tensor kept in high precision becomes FP16, converted in chunks: checked for NaN/Inf and FP16
// overflow on the way, with no full float32 copy (embeddings are the largest tensors of a model).
absl::StatusOr<Tensor> ToF16(const PlannedTensor& p, const Tensor& tensor) {
  constexpr size_t kChunk = 1 << 16;
  const size_t n = static_cast<size_t>(NumElements(tensor.shape));
  if (tensor.bytes.size() != n * DTypeSize(tensor.dtype)) {
    return absl::DataLossError(absl::StrCat("holds ", tensor.bytes.size(), " bytes, its shape needs ", n * DTypeSize(tensor.dtype)));
  }
  Tensor out{p.info.name, DType::kF16, p.info.shape, std::string(n * 2, '\0')};
  std::vector<float> chunk(kChunk);
  for (size_t begin = 0; begin < n; begin += kChunk) {
    const size_t len = std::min(kChunk, n - begin);
    ConvertToF32(tensor.dtype, tensor.bytes.data() + begin * DTypeSize(tensor.dtype), len, chunk.data());
    RETURN_IF_ERROR(CheckFinite(chunk.data(), static_cast<int64_t>(len), absl::StrCat("weights (from element ", begin, ")")));
    for (size_t i = 0; i < len; ++i) {
      if (std::abs(chunk[i]) > 65504.0f) {
        return absl::InvalidArgumentError(absl::StrCat("value ", chunk[i], " at element ", begin + i, " overflows FP16"));
      }
    }
    ConvertFromF32(DType::kF16, chunk.data(), len, out.bytes.data() + begin * 2);
  }
  return out;
}

absl::StatusOr<std::vector<Tensor>> Pack(const PlannedTensor& p, const QuantizedLayer& q) {
  if (p.format == OutputFormat::kGguf) {
    const GgmlTensor* blocks = std::get_if<GgmlTensor>(&q);
    if (blocks == nullptr || blocks->type != p.gguf_type) return absl::InternalError("a GGUF tensor's codes are not on its ggml type's blocks");
    return std::vector<Tensor>{Tensor{p.gguf_name, DType::kU8, p.info.shape, GgmlRowsInOrder(*blocks, p.row_order)}};
  }
  return FormatTraits(p.format).pack(LayerPrefix(p.info.name), q);
}

// `tensor` is the checkpoint's, except for layers the calibrator quantized: those come without bytes, the
// calibrator having measured their error on the float weights it held.
absl::StatusOr<ProcessedTensor> ProcessTensor(const PlannedTensor& p, Tensor tensor, const JobContext* context) {
  const auto started = std::chrono::steady_clock::now();
  ProcessedTensor result;
  if (!IsFloatDType(tensor.dtype) && p.calibrated == nullptr) {
    result.outputs.push_back(std::move(tensor));
    return result;
  }
  if (p.replacement != nullptr) {  // the values calibration changed, in place of the checkpoint's
    if (p.replacement->size() != static_cast<size_t>(NumElements(tensor.shape))) {
      return absl::InternalError("a replaced tensor changed size");
    }
    tensor = Tensor{tensor.name, DType::kF32, tensor.shape,
                    std::string(reinterpret_cast<const char*>(p.replacement->data()), p.replacement->size() * sizeof(float))};
  }
  if (p.quantizer == nullptr && p.format == OutputFormat::kGguf) {
    ASSIGN_OR_RETURN(Matrix m, ToMatrix(tensor));
    RETURN_IF_ERROR(CheckFinite(m.data.data(), static_cast<int64_t>(m.data.size()), "weights"));
    // A permuted vector (q/k biases) is permuted value by value: rows of one.
    const int64_t cols = p.info.shape.size() == 1 && !p.row_order.empty() ? 1 : p.info.shape.back();
    const int64_t rows = static_cast<int64_t>(m.data.size()) / std::max<int64_t>(1, cols);
    result.outputs.push_back({p.gguf_name, DType::kU8, p.info.shape, EncodeFloatRows(m.data.data(), rows, cols, p.gguf_type, p.row_order)});
    return result;
  }
  if (p.quantizer == nullptr) {
    ASSIGN_OR_RETURN(Tensor out, ToF16(p, tensor));
    result.outputs.push_back(std::move(out));
    return result;
  }
  std::string note = p.note;
  QuantizedLayer computed;
  const QuantizedLayer* q = nullptr;
  double error = 0;
  if (p.calibrated != nullptr) {
    if (!p.calibrated->relative_error) return absl::InternalError("a calibrated layer without its error");
    q = &p.calibrated->tensor;
    note = p.note.empty() ? p.calibrated->note : absl::StrCat(p.note, "; ", p.calibrated->note);
    error = *p.calibrated->relative_error;
  } else {
    ASSIGN_OR_RETURN(Matrix w, ToMatrix(tensor));
    tensor.bytes.clear();
    tensor.bytes.shrink_to_fit();
    RETURN_IF_ERROR(CheckFinite(w.data.data(), static_cast<int64_t>(w.data.size()), "weights"));
    ASSIGN_OR_RETURN(computed, p.quantizer->Quantize(w, nullptr, context));
    q = &computed;
    error = RelativeFrobeniusError(w, *q);
  }
  ASSIGN_OR_RETURN(result.outputs, Pack(p, *q));
  if (const auto* onebit = std::get_if<OneBitTensor>(q); onebit != nullptr && note.empty()) {
    // The OneBit paper divides by the parameter count including a and b; say both.
    const double r = static_cast<double>(onebit->rows), c = static_cast<double>(onebit->cols);
    note = absl::StrFormat("1 sign bit per weight + FP16 a[%d] and b[%d]; per parameter incl. a and b (the paper's count): %.4f",
                           onebit->rows, onebit->cols, (r * c + 16 * (r + c)) / (r * c + r + c));
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  // Bits per weight as stored: every byte of the layer's tensors in the file.
  uint64_t stored = 0;
  for (const Tensor& t : result.outputs) stored += t.bytes.size();
  const double bits = 8.0 * static_cast<double>(stored) / static_cast<double>(p.info.shape[0] * p.info.shape[1]);
  result.layer = LayerReport{p.info.name, std::string(MethodName(p.quant->method)), p.info.shape,
                             bits, error, seconds + (p.calibrated ? p.calibrated->seconds : 0.0), note};
  return result;
}

nlohmann::json ToJson(const QuantConfig& quant) {
  nlohmann::json j = {{"method", MethodName(quant.method)}};
  switch (quant.method) {
    case Method::kLut: {
      const LutOptions& o = quant.lut;
      static const char* kModes[] = {"kmeans", "uniform", "unique"};
      j.update({{"bits", o.bits}, {"mode", kModes[static_cast<int>(o.mode)]},
                {"granularity", o.granularity == LutGranularity::kPerTensor ? "per_tensor" : "per_grouped_channel"},
                {"group_size", o.group_size}, {"cluster_dim", o.cluster_dim}, {"per_channel_scale", o.per_channel_scale},
                {"sensitive", o.sensitive}, {"seed", o.seed}, {"max_iterations", o.max_iterations}});
      return j;
    }
    case Method::kVq: {
      const VqOptions& o = quant.vq;
      j.update({{"dim", o.dim}, {"bits", o.bits}, {"group_cols", o.group_cols}, {"group_rows", o.group_rows},
                {"em_iterations", o.em_iterations}, {"update_iterations", o.update_iterations},
                {"damp_percent", o.damp_percent}, {"seed", o.seed}, {"codebook_dtype", "int8"}});
      return j;
    }
    case Method::kOneBit:
      j.update({{"decomposition", quant.onebit.decomposition == OneBitDecomposition::kSvd ? "svd" : "nmf"},
                {"max_iterations", quant.onebit.max_iterations}, {"refine_iterations", quant.onebit.refine_iterations}});
      return j;
    default: break;
  }
  j.update({{"bits", quant.bits}, {"group_size", quant.group_size}, {"sym", quant.symmetric}});
  if (quant.method == Method::kGptq) {
    j["damp_percent"] = quant.damp_percent;
    j["desc_act"] = quant.act_order;
    j["static_groups"] = quant.static_groups;
  } else if (quant.method == Method::kAwq) {
    j["zero_point"] = !quant.symmetric;
    j["grid"] = quant.awq_grid;
    j["clip"] = quant.awq_clip;
  } else {
    j["mse_clip"] = quant.mse_clip;
  }
  return j;
}

nlohmann::json ConfigJson(const QuantizeJobSpec& spec) {
  nlohmann::json config = ToJson(spec.quant);
  config["format"] = FormatName(JobFormat(spec));
  config["quantize_lm_head"] = spec.quantize_lm_head;
  config["include"] = spec.include;
  config["exclude"] = spec.exclude;
  nlohmann::json overrides = nlohmann::json::array();
  for (const LayerOverride& o : spec.overrides) overrides.push_back({{"pattern", o.pattern}, {"config", ToJson(o.quant)}});
  config["overrides"] = overrides;
  return config;
}

// `name` as a regex matching only itself (engines re.match dynamic rules against module names).
std::string ExactRegex(const std::string& name) {
  std::string regex = "^";
  for (const char c : name) {
    if (std::string_view(".+*?()[]{}^$|\\").find(c) != std::string_view::npos) regex += '\\';
    regex += c;
  }
  return regex + "$";
}

// The quantization_config engines read, with every layer the request or the shapes set apart declared:
// - GPTQ: GPTQModel's `dynamic` (read by GPTQModel, vLLM's gptq/gptq_marlin through get_dynamic_override,
//   and transformers through optimum): "-:^module$" for a linear layer kept in FP16, "+:^module$" with its
//   own bits/group_size/sym for one quantized otherwise than the top level (overrides; groups wider than
//   the layer, stored per channel); optimum's modules_in_block_to_quantize when every block quantizes the
//   same layers; `lm_head` when it is quantized;
// - AWQ: modules_to_not_convert (transformers' AwqConfig, vLLM's awq.py);
// - native: lowbit's own (docs/native-format.md).
nlohmann::json QuantizationConfig(const QuantizeJobSpec& spec, const CheckpointReader& reader,
                                  const std::vector<PlannedTensor>& plan) {
  const OutputFormat format = JobFormat(spec);
  std::vector<std::string> kept_modules;
  for (const PlannedTensor& p : plan) {
    if (!p.kept_reason.empty() && LayerIndexOf(p.info.name) >= 0) kept_modules.push_back(LayerPrefix(p.info.name));
  }
  if (format == OutputFormat::kNative) {
    nlohmann::json c = NativeQuantizeConfig(spec.quant);
    c["config"] = ToJson(spec.quant);
    return c;
  }
  if (format == OutputFormat::kAwq) return AwqQuantizeConfig(spec.quant.group_size, !spec.quant.symmetric, kept_modules);

  GptqConfigFields f;
  f.bits = spec.quant.bits;
  f.group_size = spec.quant.group_size;
  f.symmetric = spec.quant.symmetric;
  if (spec.quant.method == Method::kGptq) {
    f.desc_act = spec.quant.act_order;
    f.static_groups = spec.quant.static_groups;
    f.damp_percent = spec.quant.damp_percent;
  }
  f.dynamic = nlohmann::json::object();
  for (const std::string& m : kept_modules) f.dynamic["-:" + ExactRegex(m)] = nlohmann::json::object();
  std::map<int, std::set<std::string>> quantized_by_block;
  for (const PlannedTensor& p : plan) {
    if (p.quant == nullptr) continue;
    const std::string module = LayerPrefix(p.info.name);
    if (const int block = LayerIndexOf(p.info.name); block >= 0) {
      const std::string marker = absl::StrCat(".", block, ".");  // "model.layers.3.mlp.up_proj" -> "mlp.up_proj"
      quantized_by_block[block].insert(module.substr(module.find(marker) + marker.size()));
    } else if (RoleOf(p.info.name, 2) == TensorRole::kLmHead) {
      f.lm_head = true;
    }
    const int64_t group = p.per_channel ? -1 : p.quant->group_size;
    if (p.quant->bits != f.bits || group != f.group_size || p.quant->symmetric != f.symmetric) {
      f.dynamic["+:" + ExactRegex(module)] = {{"bits", p.quant->bits}, {"group_size", group}, {"sym", p.quant->symmetric}};
    }
  }
  // Every block the same: optimum converts only these modules (in the architecture's true-sequential groups).
  bool uniform = !kept_modules.empty() && !quantized_by_block.empty();
  for (const auto& [block, names] : quantized_by_block) uniform = uniform && names == quantized_by_block.begin()->second;
  if (uniform && static_cast<int64_t>(quantized_by_block.size()) == reader.descriptor().num_layers) {
    const std::set<std::string>& names = quantized_by_block.begin()->second;
    nlohmann::json groups = nlohmann::json::array();
    if (const Architecture* arch = FindArchitecture(reader.descriptor().architecture)) {
      for (const LinearGroup& g : arch->groups) {
        nlohmann::json group = nlohmann::json::array();
        for (const std::string& l : g.linears) {
          const std::string module = LayerPrefix(l);
          if (names.count(module)) group.push_back(module);
        }
        if (!group.empty()) groups.push_back(group);
      }
    } else {
      groups.push_back(names);
    }
    f.modules_in_block = groups;
  }
  return GptqQuantizeConfig(f);
}

// The block-wise calibrator for the job's method over the layers the plan quantizes.
absl::StatusOr<std::vector<std::vector<int>>> CalibrationWindowsOf(const CheckpointReader& reader, ObjectStore* store,
                                                                   const QuantizeJobSpec& spec) {
  const CalibrationSpec& c = spec.calibration;
  std::unique_ptr<Tokenizer> tokenizer;
  ASSIGN_OR_RETURN(const TokenSource source,
                   OpenTokenSource(store, TokenizerFor(store, spec.tokenizer_uri, spec.source_uri, c.text_uri),
                                   reader.descriptor(), &tokenizer));
  return CalibrationWindows(store, c.text_uri, source, {c.samples, c.seqlen, c.seed});
}

// A name as a glob pattern that matches only itself.
std::string ExactGlob(const std::string& name) {
  std::string glob;
  for (const char c : name) {
    if (c == '*' || c == '?' || c == '[' || c == '\\') glob += '\\';
    glob += c;
  }
  return glob;
}

// A budget job's measurement (made, or reused from budget.measurement_uri) and allocation; turns the
// allocation into the spec's settings: one exact override per allocated layer, the most frequent setting
// as the job's own, the format made explicit.
struct Allocated {
  Measurement measurement;
  AllocationReport report;
};

}  // namespace

std::vector<std::string> BudgetCandidates(const QuantizeJobSpec& spec) {
  return spec.budget.candidates.empty() ? DefaultCandidates(JobFormat(spec)) : spec.budget.candidates;
}

absl::StatusOr<Measurement> MeasurementFor(const QuantizeJobSpec& spec, const CheckpointReader& reader, ObjectStore* store,
                                           const JobOptions& options, JobContext* context) {
  const BitBudget& budget = spec.budget;
  const OutputFormat format = JobFormat(spec);
  const std::vector<std::string> candidates = BudgetCandidates(spec);
  const CalibrationSpec& c = spec.calibration;
  const std::string key = MeasurementKey(reader, absl::StrCat(c.text_uri, " samples=", c.samples, " seqlen=", c.seqlen, " seed=", c.seed),
                                         candidates, format, budget.sensitivity_windows);
  Measurement m;
  if (!budget.measurement_uri.empty()) {
    ASSIGN_OR_RETURN(const std::string text, store->ReadAll(budget.measurement_uri));
    ASSIGN_OR_RETURN(m, Measurement::FromJson(text));
    if (m.key != key) {
      return absl::FailedPreconditionError(absl::StrCat("budget.measurement_uri: ", budget.measurement_uri,
                                                        " was measured on another model, calibration, candidate set or format; "
                                                        "leave it out to measure this job's"));
    }
    std::map<std::string, const TensorInfo*> tensors;
    for (const TensorInfo& t : reader.tensors()) tensors[t.name] = &t;
    for (const LayerMeasurement& l : m.layers) {
      auto t = tensors.find(l.name);
      if (t == tensors.end() || t->second->shape != std::vector<int64_t>{l.rows, l.cols}) {
        return absl::InvalidArgumentError(absl::StrCat("budget.measurement_uri: its layer ", l.name, " is not in the checkpoint as measured"));
      }
    }
    return m;
  }
  std::set<std::string> layers;
  for (const TensorInfo& t : reader.tensors()) {
    if (RoleOf(t.name, t.shape.size()) == TensorRole::kLinear && t.shape.size() == 2 && RequestKeptReason(t, spec).empty()) {
      layers.insert(t.name);
    }
  }
  ASSIGN_OR_RETURN(const std::vector<std::vector<int>> windows, CalibrationWindowsOf(reader, store, spec));
  MeasureOptions mo{options.pool, context, options.rows_per_chunk, budget.sensitivity_windows};
  ASSIGN_OR_RETURN(m, MeasureLayers(reader, windows, format, candidates,
                                    [&layers](const std::string& name) { return layers.count(name) > 0; }, mo));
  m.key = key;
  return m;
}

namespace {

absl::StatusOr<Allocated> AllocateBudget(QuantizeJobSpec* spec, const CheckpointReader& reader, ObjectStore* store,
                                         const JobOptions& options, JobObserver* observer) {
  const BitBudget& budget = spec->budget;
  const OutputFormat format = JobFormat(*spec);
  Allocated a;
  ASSIGN_OR_RETURN(a.measurement, MeasurementFor(*spec, reader, store, options, observer));
  const std::vector<std::string>& candidates = a.measurement.candidates;
  a.report.measurement = budget.measurement_uri.empty() ? "measured" : budget.measurement_uri;
  ASSIGN_OR_RETURN(const BudgetPlan plan, PlanBudget(a.measurement, budget));

  std::map<std::string, int> uses;
  spec->overrides.clear();
  for (size_t i = 0; i < a.measurement.layers.size(); ++i) {
    const LayerMeasurement& l = a.measurement.layers[i];
    const int choice = plan.choice[i];
    const std::string& setting = candidates[choice];
    ASSIGN_OR_RETURN(const QuantConfig q, ParseCandidate(setting));
    spec->overrides.push_back({ExactGlob(l.name), q});
    ++uses[setting];
    a.report.layers.push_back({l.name, setting, static_cast<double>(l.bits[choice]) / static_cast<double>(l.rows * l.cols),
                               l.error[choice], l.sensitivity(), l.predicted_kl(choice)});
  }
  const auto most = std::max_element(uses.begin(), uses.end(), [](const auto& x, const auto& y) { return x.second < y.second; });
  ASSIGN_OR_RETURN(spec->quant, ParseCandidate(most->first));
  spec->format = format;
  a.report.target = budget.bits_per_weight > 0 ? absl::StrFormat("%g bits per weight", budget.bits_per_weight)
                    : budget.max_bytes > 0     ? absl::StrCat("at most ", budget.max_bytes, " bytes")
                                               : absl::StrFormat("predicted KL at most %g", budget.max_kl);
  a.report.budget_bits_per_weight = static_cast<double>(plan.budget_bits) / static_cast<double>(plan.weights);
  a.report.bits_per_weight = plan.bits_per_weight();
  a.report.predicted_kl = plan.predicted_kl;
  a.report.lower_bound_kl = plan.lower_bound_kl;
  a.report.exact = plan.exact;
  a.report.measurement_seconds = a.measurement.seconds;
  observer->OnAllocation(a.report);
  return a;
}

absl::StatusOr<std::unique_ptr<BlockCalibrator>> StartCalibration(const CheckpointReader& reader, ObjectStore* store,
                                                                  const QuantizeJobSpec& spec, const std::vector<PlannedTensor>& plan,
                                                                  const JobOptions& options, JobContext* context) {
  ASSIGN_OR_RETURN(std::vector<std::vector<int>> windows, CalibrationWindowsOf(reader, store, spec));
  // The layers the plan quantizes (include/exclude applied), each with its config and quantizer (GGUF
  // mixtures and fallbacks differ by layer).
  auto planned = std::make_shared<std::map<std::string, std::pair<const QuantConfig*, const Quantizer*>>>();
  for (const PlannedTensor& p : plan) {
    if (p.quant != nullptr) (*planned)[p.info.name] = {p.quant, p.quantizer};
  }
  BlockCalibratorOptions o;
  o.include = [planned](const std::string& name) { return planned->count(name) > 0; };
  o.pool = options.pool;
  o.context = context;
  o.rows_per_chunk = options.rows_per_chunk;
  const QuantConfig& q = spec.quant;
  if (q.method == Method::kAwq) {
    o.mode = BlockCalibratorOptions::Mode::kAwq;
    o.awq = AwqOptionsOf(q);
    o.awq_ggml = [planned](const std::string& name) { return planned->at(name).first->ggml; };
  } else {
    o.quantize = [planned](const std::string& name, const Matrix& w, const CalibrationStats& stats,
                           const JobContext* ctx) -> absl::StatusOr<CalibratedLayer> {
      CalibratedLayer layer;
      const auto& [config, quantizer] = planned->at(name);
      const QuantConfig& q = *config;
      if (q.method != Method::kGptq) {
        ASSIGN_OR_RETURN(layer.tensor, quantizer->Quantize(w, &stats, ctx));
        return layer;
      }
      ASSIGN_OR_RETURN(GptqResult r, QuantizeGptq(w, stats, GptqOptionsOf(q), ctx));
      layer.tensor = std::move(r.layer);
      if (r.cholesky_retries > 0) {
        layer.note = absl::StrCat("H was not positive definite: damping raised to ", r.damp_percent_used, " after ",
                                  r.cholesky_retries, " retries");
      }
      return layer;
    };
  }
  return BlockCalibrator::Create(reader, windows, std::move(o));
}

// Perplexity and KL of the model as written to `output_dir` (read back through the dequantizing reader)
// against the source model, both advanced block by block.
absl::StatusOr<Evaluation> EvaluateOutput(const CheckpointReader& source_reader, ObjectStore* source,
                                          ObjectStore* destination, const std::string& output_dir,
                                          const QuantizeJobSpec& spec, JobContext* context, const JobOptions& options) {
  ASSIGN_OR_RETURN(std::unique_ptr<CheckpointReader> written, OpenDequantized(destination, output_dir));
  std::unique_ptr<Tokenizer> tokenizer;
  ASSIGN_OR_RETURN(const TokenSource tokens,
                   OpenTokenSource(source, TokenizerFor(source, spec.tokenizer_uri, spec.source_uri, spec.evaluation.text_uri),
                                   source_reader.descriptor(), &tokenizer));
  ASSIGN_OR_RETURN(const EvaluationWindows windows, MakeEvaluationWindows(source, spec.evaluation.text_uri, tokens,
                                                                          spec.evaluation.windows, spec.evaluation.seqlen));
  ASSIGN_OR_RETURN(EvalResult r, Evaluate(*written, &source_reader, windows, context, options.rows_per_chunk));
  return Evaluation{r.perplexity, r.reference_perplexity, r.kl_divergence, r.tokens, spec.evaluation.text_uri};
}

// Where the stream's tensors go: safetensors shards with their index, or one GGUF file.
class ModelSink {
 public:
  virtual ~ModelSink() = default;
  virtual absl::Status Append(const std::string& name, absl::string_view bytes) = 0;
  virtual uint64_t bytes_written() const = 0;
  // Commits what is left and records the files written.
  virtual absl::Status Finish(OutputTransaction* output, JobReport* report) = 0;
  // The shard writer when the output is shards a later attempt can resume from; null otherwise.
  virtual const ShardedSafetensorsWriter* shards() const { return nullptr; }
};

class SafetensorsSink final : public ModelSink {
 public:
  explicit SafetensorsSink(std::unique_ptr<ShardedSafetensorsWriter> writer) : writer_(std::move(writer)) {
    resumed_shards_ = static_cast<int>(writer_->files().size());
  }
  absl::Status Append(const std::string& name, absl::string_view bytes) override {
    // A resumed run recomputes the tensor that straddles the last committed shard; what it holds is kept.
    if (resumed_shards_ > 0 && writer_->ShardOf(name) < resumed_shards_) return absl::OkStatus();
    return writer_->Append(name, bytes);
  }
  const ShardedSafetensorsWriter* shards() const override { return writer_.get(); }
  uint64_t bytes_written() const override { return writer_->bytes_written(); }
  absl::Status Finish(OutputTransaction* output, JobReport* report) override {
    RETURN_IF_ERROR(writer_->Finish());
    for (const ShardedSafetensorsWriter::File& f : writer_->files()) {
      report->files.push_back({f.name, f.bytes});
      report->summary.bytes_written += f.bytes;
    }
    if (writer_->num_shards() > 1) return output->WriteAll("model.safetensors.index.json", writer_->IndexJson(), report);
    return absl::OkStatus();
  }

 private:
  std::unique_ptr<ShardedSafetensorsWriter> writer_;
  int resumed_shards_ = 0;
};

class GgufSink final : public ModelSink {
 public:
  static constexpr char kFile[] = "model.gguf";
  // `extra`: tensors of llama.cpp's own beyond the checkpoint's, written after them.
  static absl::StatusOr<std::unique_ptr<ModelSink>> Create(OutputTransaction* output, const GgufMetadata& metadata,
                                                           std::vector<GgufTensorSpec> tensors,
                                                           std::vector<std::pair<GgufTensorSpec, std::string>> extra) {
    auto sink = std::unique_ptr<GgufSink>(new GgufSink());
    for (const auto& [spec, bytes] : extra) tensors.push_back(spec);
    sink->extra_ = std::move(extra);
    ASSIGN_OR_RETURN(sink->out_, output->NewWriter(kFile));
    ASSIGN_OR_RETURN(sink->writer_, GgufWriter::Create(sink->out_.get(), metadata, std::move(tensors)));
    return std::unique_ptr<ModelSink>(std::move(sink));
  }
  absl::Status Append(const std::string& name, absl::string_view bytes) override { return writer_->Append(name, bytes); }
  uint64_t bytes_written() const override { return out_->bytes_written(); }
  absl::Status Finish(OutputTransaction*, JobReport* report) override {
    for (const auto& [spec, bytes] : extra_) RETURN_IF_ERROR(writer_->Append(spec.name, bytes));
    RETURN_IF_ERROR(writer_->Finish());
    RETURN_IF_ERROR(out_->Commit());
    report->files.push_back({kFile, out_->bytes_written()});
    report->summary.bytes_written += out_->bytes_written();
    return absl::OkStatus();
  }

 private:
  GgufSink() = default;
  std::unique_ptr<ObjectWriter> out_;
  std::unique_ptr<GgufWriter> writer_;
  std::vector<std::pair<GgufTensorSpec, std::string>> extra_;
};

// The sink for the job's format. GGUF's metadata is the architecture's and the tokenizer's.
absl::StatusOr<std::unique_ptr<ModelSink>> OpenSink(const QuantizeJobSpec& spec, const CheckpointReader& reader,
                                                    ObjectStore* source, const std::vector<PlannedTensor>& plan,
                                                    const std::vector<TensorSpec>& specs,
                                                    const std::map<std::string, std::string>& metadata,
                                                    const std::vector<OutputFile>& resumed_shards, OutputTransaction* output) {
  if (JobFormat(spec) != OutputFormat::kGguf) {
    std::vector<ShardedSafetensorsWriter::File> committed;
    for (const OutputFile& f : resumed_shards) committed.push_back({f.name, f.bytes});
    ASSIGN_OR_RETURN(std::unique_ptr<ShardedSafetensorsWriter> writer,
                     ShardedSafetensorsWriter::Create([output](const std::string& file) { return output->NewWriter(file); },
                                                      specs, metadata, spec.shard_bytes, std::move(committed)));
    return std::unique_ptr<ModelSink>(new SafetensorsSink(std::move(writer)));
  }
  ASSIGN_OR_RETURN(const Architecture* arch, ArchitectureOf(reader.descriptor()));
  ASSIGN_OR_RETURN(const BlockGeometry g, BlockGeometry::Of(reader.descriptor()));
  const std::string tokenizer_uri = spec.tokenizer_uri.empty() ? FindTokenizerBeside(source, spec.source_uri) : spec.tokenizer_uri;
  if (tokenizer_uri.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("gguf: the model's tokenizer goes into the file; none is beside ",
                                                   spec.source_uri, ": give tokenizer_uri"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, LoadTokenizer(source, tokenizer_uri, static_cast<int>(g.vocab)));
  GgufTokenizerSource tokenizer_source{tokenizer.get(), nullptr, nullptr, reader.descriptor().config};
  if (absl::EndsWith(tokenizer_uri, ".json")) {
    ASSIGN_OR_RETURN(const std::string json, source->ReadAll(tokenizer_uri));
    tokenizer_source.tokenizer_json = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
    if (absl::StatusOr<std::string> c = source->ReadAll(JoinUri(CheckpointDirectory(tokenizer_uri), "tokenizer_config.json")); c.ok()) {
      tokenizer_source.tokenizer_config = nlohmann::json::parse(*c, nullptr, /*allow_exceptions=*/false);
    }
  }
  ASSIGN_OR_RETURN(const GgufMetadata gguf_metadata, GgufModelMetadata(*arch, g, *FindGgufFileType(spec.gguf_type),
                                                                    CheckpointName(spec.source_uri), tokenizer_source));
  std::vector<GgufTensorSpec> tensors;
  for (const PlannedTensor& p : plan) tensors.push_back({p.gguf_name, p.info.shape, p.gguf_type});
  return GgufSink::Create(output, gguf_metadata, std::move(tensors), GgufExtraTensors(g));
}

// The job as it runs: a GGUF file type puts the codes on its ggml type's blocks.
QuantizeJobSpec WithFormatGrid(QuantizeJobSpec spec) {
  if (JobFormat(spec) != OutputFormat::kGguf) return spec;
  const GgufFileType* t = FindGgufFileType(spec.gguf_type);
  if (t == nullptr || !TraitsOf(t->base).quantized()) return spec;
  spec.quant = OnGgmlGrid(spec.quant, TraitsOf(t->base));
  return spec;
}

}  // namespace

OutputFormat JobFormat(const QuantizeJobSpec& spec) {
  if (spec.budget.active() && spec.format == OutputFormat::kAuto) return OutputFormat::kNative;
  return ResolveFormat(spec.format, spec.quant.method);
}

bool Calibrates(const QuantizeJobSpec& spec) {
  if (spec.budget.active()) return true;  // measured on the calibration text
  // rtn onto ggml's blocks weighs its search by the inputs' second moments when given a calibration text
  // (what llama-quantize does with an imatrix).
  const bool weighted_rtn = spec.quant.method == Method::kRtn && JobFormat(spec) == OutputFormat::kGguf;
  auto calibrates = [&](const QuantConfig& q) {
    const CalibrationUse use = weighted_rtn ? CalibrationUse::kIfGiven : CalibrationUseOf(q);
    return use == CalibrationUse::kRequired || (use == CalibrationUse::kIfGiven && !spec.calibration.text_uri.empty());
  };
  bool any = calibrates(spec.quant);
  for (const LayerOverride& o : spec.overrides) any |= calibrates(o.quant);
  return any;
}

absl::Status ValidateJobSpec(const QuantizeJobSpec& spec) {
  if (spec.source_uri.empty()) return absl::InvalidArgumentError("source_uri: must not be empty");
  if (spec.destination_uri.empty()) return absl::InvalidArgumentError("destination_uri: must not be empty");
  // However spelled ("models/./x", "models//x"), the output is never the source's directory (its files
  // would replace the source's) nor around it (an overwrite clears the destination first).
  const std::string source_dir = CheckpointDirectory(spec.source_uri);
  if (UriWithin(source_dir, spec.destination_uri)) {
    return absl::InvalidArgumentError(absl::StrCat("destination_uri: ", spec.destination_uri, " is or holds the source checkpoint's directory ",
                                                   NormalizedUri(source_dir), "; write the output elsewhere"));
  }
  const CalibrationUse calibration = CalibrationUseOf(spec.quant);
  if (calibration == CalibrationUse::kRequired && spec.calibration.text_uri.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("calibration: ", MethodName(spec.quant.method),
                                                   " needs a calibration text (with the model's tokenizer) or .ids.json"));
  }
  if (spec.write_imatrix && !Calibrates(spec)) {
    return absl::InvalidArgumentError(absl::StrCat("write_imatrix: the statistics come from calibration; ", MethodName(spec.quant.method),
                                                   " without a calibration text collects none"));
  }
  if (Calibrates(spec) && spec.quantize_lm_head) {
    return absl::InvalidArgumentError(absl::StrCat("quantize_lm_head: calibration covers the decoder blocks only, not with ",
                                                   MethodName(spec.quant.method)));
  }
  const OutputFormat format = JobFormat(spec);
  if (spec.budget.active()) {
    RETURN_IF_ERROR(ValidateBudget(spec.budget, format));
    if (spec.calibration.text_uri.empty()) {
      return absl::InvalidArgumentError("calibration: a budget job measures its candidates on a calibration text (or .ids.json)");
    }
    if (!spec.overrides.empty()) return absl::InvalidArgumentError("overrides: a budget job chooses every layer's setting itself");
  }
  // AWQ's scales are searched and folded per block (core/runtime/block_calibrator.h), not per layer.
  if (!spec.overrides.empty() && spec.quant.method == Method::kAwq) {
    return absl::InvalidArgumentError(absl::StrCat("overrides: not supported with ", MethodName(spec.quant.method)));
  }
  const OutputFormatTraits& traits = FormatTraits(format);
  if (!traits.accepts(spec.quant.method)) {
    return absl::InvalidArgumentError(absl::StrCat("output_format: ", traits.name, " takes ", traits.methods, " results, not ",
                                                   MethodName(spec.quant.method), "'s",
                                                   IsUniformGridMethod(spec.quant.method) ? "" : " (written as native)"));
  }
  if (format == OutputFormat::kGguf && FindGgufFileType(spec.gguf_type) == nullptr) {
    std::vector<std::string> names;
    for (const GgufFileType& t : GgufFileTypes()) names.push_back(t.name);
    return absl::InvalidArgumentError(absl::StrCat("gguf_type: unknown ggml type or mixture '", spec.gguf_type, "' (",
                                                   absl::StrJoin(names, ", "), ")"));
  }
  if (!traits.overrides && !spec.overrides.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("overrides: not supported with the ", traits.name, " format"));
  }
  if (!traits.quantized_lm_head && spec.quantize_lm_head) {
    return absl::InvalidArgumentError(absl::StrCat("quantize_lm_head: the ", traits.name, " format's engines load lm_head in FP16 only"));
  }
  for (const LayerOverride& o : spec.overrides) {
    if (o.quant.method == Method::kAwq || (o.quant.method != spec.quant.method && !traits.accepts(o.quant.method))) {
      return absl::InvalidArgumentError(absl::StrCat("overrides: ", MethodName(o.quant.method), " layers cannot go into a ",
                                                     traits.name, " ", MethodName(spec.quant.method), " job"));
    }
  }
  std::vector<const QuantConfig*> configs = {&spec.quant};
  for (const LayerOverride& o : spec.overrides) configs.push_back(&o.quant);
  for (const QuantConfig* config : configs) {
    RETURN_IF_ERROR(ValidateQuantConfig(*config));
    if (traits.check) RETURN_IF_ERROR(traits.check(*config));
  }
  return absl::OkStatus();
}

// The calibrated resume's scratch objects, relative to the staging directory.
std::string BlockScratchName(int block) { return absl::StrFormat("%s/block-%05d.safetensors", kScratchDir, block); }
std::string HiddenScratchName(int block) { return absl::StrFormat("%s/hidden-%05d.f32", kScratchDir, block); }

// Hidden states as bytes: rows and cols (int64, little-endian) and the floats.
std::string EncodeMatrix(const Matrix& m) {
  std::string out(16 + m.data.size() * sizeof(float), '\0');
  std::memcpy(out.data(), &m.rows, 8);
  std::memcpy(out.data() + 8, &m.cols, 8);
  std::memcpy(out.data() + 16, m.data.data(), m.data.size() * sizeof(float));
  return out;
}

absl::StatusOr<Matrix> DecodeMatrix(absl::string_view bytes) {
  Matrix m;
  if (bytes.size() < 16) return absl::DataLossError("saved hidden states: truncated");
  std::memcpy(&m.rows, bytes.data(), 8);
  std::memcpy(&m.cols, bytes.data() + 8, 8);
  if (m.rows < 0 || m.cols < 0 || (bytes.size() - 16) / sizeof(float) != static_cast<uint64_t>(m.rows) * static_cast<uint64_t>(m.cols) ||
      (bytes.size() - 16) % sizeof(float) != 0) {
    return absl::DataLossError("saved hidden states: size does not match their shape");
  }
  m.data.resize(static_cast<size_t>(m.rows * m.cols));
  std::memcpy(m.data.data(), bytes.data() + 16, m.data.size() * sizeof(float));
  return m;
}

// A calibrated job can be resumed at a block when its caller holds the lock across attempts and nothing
// it writes needs every block's calibration at the end (imatrix.gguf does).
bool CalibratedResumable(const QuantizeJobSpec& spec) { return !spec.lock_owner.empty() && !spec.write_imatrix; }

absl::Status CheckDestinationApart(const QuantizeJobSpec& spec, ObjectStore* source, ObjectStore* destination) {
  if (UriWithin(source->Identity(CheckpointDirectory(spec.source_uri)), destination->Identity(spec.destination_uri))) {
    return absl::InvalidArgumentError(absl::StrCat("destination_uri: ", spec.destination_uri,
                                                   " is or holds the source checkpoint's directory (through a link)"));
  }
  return absl::OkStatus();
}

// The part of spec.resume this run can go on from: for a calibrated job the block whose hidden states and
// predecessors' outputs are all still staged; for a data-free one the recorded shards, if each is still
// staged with its recorded size (never for GGUF, one file). Nothing when anything is missing.
ResumePoint ResumableFrom(const QuantizeJobSpec& spec, const BlockCalibrator* calibrator, ObjectStore* destination,
                          const std::string& staging, size_t plan_size) {
  const ResumePoint& r = spec.resume;
  if (calibrator != nullptr) {
    if (!CalibratedResumable(spec) || r.block <= 0 || r.block >= calibrator->num_blocks()) return {};
    std::vector<std::string> needed = {HiddenScratchName(r.block)};
    for (int b = 0; b < r.block; ++b) needed.push_back(BlockScratchName(b));
    for (const std::string& name : needed) {
      if (!destination->Stat(JoinUri(staging, name)).ok()) return {};
    }
    ResumePoint calibrated;
    calibrated.block = r.block;
    calibrated.layers = r.layers;
    calibrated.attempt = r.attempt;
    return calibrated;
  }
  const bool shards_out = JobFormat(spec) != OutputFormat::kGguf;
  if (spec.lock_owner.empty() || !shards_out || r.shards.empty() || r.tensors_done < 0 ||
      static_cast<size_t>(r.tensors_done) > plan_size) {
    return {};
  }
  for (const OutputFile& f : r.shards) {
    absl::StatusOr<ObjectInfo> staged = destination->Stat(JoinUri(staging, f.name));
    if (!staged.ok() || staged->size != f.bytes) return {};
  }
  return r;
}

absl::StatusOr<JobReport> RunQuantizeJob(const QuantizeJobSpec& requested, ObjectStore* source, ObjectStore* destination,
                                         const JobOptions& options, JobObserver* observer) {
  const auto started = std::chrono::steady_clock::now();
  RETURN_IF_ERROR(ValidateJobSpec(requested));
  QuantizeJobSpec spec = WithFormatGrid(requested);
  JobObserver no_observer;
  if (observer == nullptr) observer = &no_observer;
  observer->Progress({JobPhase::kPlanning, 0, 0, spec.source_uri});
  ASSIGN_OR_RETURN(std::unique_ptr<CheckpointReader> reader, OpenCheckpoint(source, spec.source_uri));
  RETURN_IF_ERROR(CheckDestinationApart(spec, source, destination));
  const std::string lock_owner = spec.lock_owner.empty() ? NewLockOwner() : spec.lock_owner;
  bool held_before = false;
  RETURN_IF_ERROR(LockDestination(destination, spec.destination_uri, lock_owner, &held_before));
  // A lock of this run's own goes on every way out; a caller's lock stays for the job's next attempt.
  absl::Cleanup unlock = [&] {
    if (spec.lock_owner.empty()) UnlockDestination(destination, spec.destination_uri, lock_owner).IgnoreError();
  };
  // Taken now: the destination must be free. Held before: it was checked when taken, and what is there
  // beside the old output is this job's own.
  if (!held_before) RETURN_IF_ERROR(CheckDestination(destination, spec.destination_uri, spec.overwrite));
  ASSIGN_OR_RETURN(const ResourceEstimate estimate,
                   EstimateResources(reader->descriptor(), reader->tensors(), spec, options));
  RETURN_IF_ERROR(CheckMemoryLimit(estimate, options.memory_limit_bytes));
  // A plain text needs a tokenizer: given, or found beside the checkpoint. Checked before any work.
  const std::string calibration_text = Calibrates(spec) ? spec.calibration.text_uri : "";
  for (const auto& [field, text] : {std::pair<std::string, std::string>{"calibration", calibration_text},
                                    {"evaluation", spec.evaluation.text_uri}}) {
    if (!text.empty() && !IsPreTokenized(text) && TokenizerFor(source, spec.tokenizer_uri, spec.source_uri, text).empty()) {
      return absl::InvalidArgumentError(absl::StrCat(field, ": the plain text ", text, " needs the model's tokenizer; none (tokenizer.json or "
                                                     "tokenizer.bin) is beside ", spec.source_uri,
                                                     ": give tokenizer_uri, or a pre-tokenized .ids.json"));
    }
  }

  // A budget job's settings, layer by layer, before anything is quantized.
  std::optional<Allocated> allocated;
  if (spec.budget.active()) {
    ASSIGN_OR_RETURN(allocated, AllocateBudget(&spec, *reader, source, options, observer));
  }
  Quantizers quantizers;
  ASSIGN_OR_RETURN(quantizers.main, CreateQuantizer(spec.quant));
  for (const LayerOverride& o : spec.overrides) {
    ASSIGN_OR_RETURN(std::unique_ptr<Quantizer> q, CreateQuantizer(o.quant));
    quantizers.overrides.push_back(std::move(q));
  }
  if (spec.quant.ggml != nullptr) {
    for (const GgmlTypeTraits& t : GgmlTypes()) {
      if (!t.quantized()) continue;
      Quantizers::OnGgmlType& q = quantizers.ggml[t.type];
      q.config = OnGgmlGrid(spec.quant, t);
      ASSIGN_OR_RETURN(q.quantizer, CreateQuantizer(q.config));
    }
  }

  std::map<std::string, std::string> metadata = {{"format", "pt"}};
  std::vector<KeptLayer> dropped;
  std::vector<PlannedTensor> plan = Plan(*reader, spec, quantizers, &metadata, &dropped);
  // Calibrated methods: the calibrator runs each decoder block just before the stream writes it.
  std::unique_ptr<BlockCalibrator> calibrator;
  if (Calibrates(spec)) {
    ASSIGN_OR_RETURN(calibrator, StartCalibration(*reader, source, spec, plan, options, observer));
  }
  int64_t layers_total = 0;
  std::vector<TensorSpec> specs;
  for (const PlannedTensor& p : plan) {
    layers_total += p.quantizer != nullptr ? 1 : 0;
    specs.insert(specs.end(), p.outputs.begin(), p.outputs.end());
  }
  observer->OnStart(layers_total, reader->total_bytes());

  JobReport report;
  report.source = spec.source_uri;
  report.destination = spec.destination_uri;
  report.config = ConfigJson(spec);
  if (allocated) report.allocation = allocated->report;
  report.summary.tensors_total = static_cast<int64_t>(plan.size());
  for (const PlannedTensor& p : plan) {
    if (!p.kept_reason.empty()) report.kept.push_back({p.info.name, p.kept_reason});
  }
  report.kept.insert(report.kept.end(), dropped.begin(), dropped.end());
  // A caller that holds the destination across attempts keeps what this attempt staged if it fails.
  OutputTransaction output(destination, spec.destination_uri, /*keep_on_failure=*/!spec.lock_owner.empty());
  // Resume where the previous attempt got to, if it left whole shards that are still there as it wrote them.
  const ResumePoint resume = ResumableFrom(spec, calibrator.get(), destination, output.staging(), plan.size());
  std::vector<std::string> kept;
  for (const OutputFile& f : resume.shards) kept.push_back(f.name);
  for (int b = 0; b < resume.block; ++b) kept.push_back(BlockScratchName(b));
  if (resume.block > 0) kept.push_back(HiddenScratchName(resume.block));
  RETURN_IF_ERROR(output.Begin(kept));
  ASSIGN_OR_RETURN(std::unique_ptr<ModelSink> model,
                   OpenSink(spec, *reader, source, plan, specs, metadata, resume.shards, &output));
  report.layers = resume.layers;
  if (!resume.shards.empty()) {
    report.resumed = absl::StrCat("resumed from attempt ", resume.attempt, ": ", resume.shards.size(), " of ",
                                  model->shards()->num_shards(), " shards (", resume.tensors_done, " of ", plan.size(),
                                  " tensors) kept");
  }
  if (resume.block > 0) {
    ASSIGN_OR_RETURN(const std::string hidden, destination->ReadAll(JoinUri(output.staging(), HiddenScratchName(resume.block))));
    ASSIGN_OR_RETURN(Matrix x, DecodeMatrix(hidden));
    RETURN_IF_ERROR(calibrator->ResumeAt(resume.block, std::move(x)));
    report.resumed = absl::StrCat("resumed from attempt ", resume.attempt, " at block ", resume.block, " of ",
                                  calibrator->num_blocks(), " (the blocks before replayed from its scratch)");
  }
  // Calibrated jobs a caller may resume keep each block's packed outputs and, now and then, the hidden
  // states entering the next block, in the staging's scratch (kScratchDir, never part of the output).
  const bool checkpoint_blocks = calibrator && CalibratedResumable(spec);
  std::map<int, std::vector<Tensor>> block_outputs;  // outputs of the block being written, for its scratch
  auto last_hidden_save = std::chrono::steady_clock::now();
  auto checkpoint_block = [&](int next_block) -> absl::Status {
    if (!checkpoint_blocks || next_block == 0) return absl::OkStatus();
    // The block just written; a replayed block's scratch is there already and stays as it is.
    if (auto done = block_outputs.find(next_block - 1); done != block_outputs.end()) {
      RETURN_IF_ERROR(WriteSafetensors(destination, JoinUri(output.staging(), BlockScratchName(done->first)), done->second));
      block_outputs.erase(done);
    }
    if (next_block <= resume.block) return absl::OkStatus();  // resumed from these hidden states
    const auto now = std::chrono::steady_clock::now();
    if (now - last_hidden_save < absl::ToChronoSeconds(options.hidden_state_interval)) return absl::OkStatus();
    last_hidden_save = now;
    RETURN_IF_ERROR(destination->WriteAll(JoinUri(output.staging(), HiddenScratchName(next_block)),
                                          EncodeMatrix(calibrator->hidden_states())));
    ResumePoint point;
    point.block = next_block;
    point.layers = report.layers;  // everything before this block is written
    observer->OnShardCommitted(point);
    return absl::OkStatus();
  };
  // For OnShardCommitted: the plan tensor of each layer report, and how many shards are committed.
  std::vector<size_t> layer_tensor(report.layers.size(), 0);
  size_t shards_seen = resume.shards.size();
  auto note_commits = [&](size_t written_through) {
    const ShardedSafetensorsWriter* shards = model->shards();
    if (calibrator || shards == nullptr || shards->files().size() == shards_seen) return;
    shards_seen = shards->files().size();
    ResumePoint point;
    for (const ShardedSafetensorsWriter::File& f : shards->files()) point.shards.push_back({f.name, f.bytes});
    // The leading tensors whose outputs all lie in the committed shards.
    for (size_t t = 0; t <= written_through && t < plan.size(); ++t) {
      bool all_committed = true;
      for (const TensorSpec& out : plan[t].outputs) all_committed &= shards->ShardOf(out.name) < static_cast<int>(shards_seen);
      if (!all_committed) break;
      point.tensors_done = static_cast<int64_t>(t + 1);
    }
    for (size_t l = 0; l < report.layers.size(); ++l) {
      if (layer_tensor[l] < static_cast<size_t>(point.tensors_done)) point.layers.push_back(report.layers[l]);
    }
    observer->OnShardCommitted(point);
  };

  // The window of tensors read and not yet written; the front is always the next to write.
  std::deque<std::pair<size_t, std::future<absl::StatusOr<ProcessedTensor>>>> window;
  // Workers hold references into this frame: on any early return, let them finish first.
  absl::Cleanup wait_for_workers = [&window] {
    for (auto& entry : window) entry.second.wait();
  };
  uint64_t bytes_in_flight = 0;  // checkpoint bytes of the tensors in `window`
  auto write_oldest = [&]() -> absl::Status {
    auto [index, future] = std::move(window.front());
    window.pop_front();
    bytes_in_flight -= plan[index].info.size;
    absl::StatusOr<ProcessedTensor> processed = future.get();
    const TensorInfo& info = plan[index].info;
    if (!processed.ok()) {
      return absl::Status(processed.status().code(), absl::StrCat("tensor ", info.name, " in ", info.uri, ": ",
                                                                  processed.status().message()));
    }
    for (const Tensor& t : processed->outputs) RETURN_IF_ERROR(model->Append(t.name, t.bytes));
    if (const int block_index = LayerIndexOf(info.name); checkpoint_blocks && block_index >= 0) {
      std::vector<Tensor>& kept_outputs = block_outputs[block_index];
      for (Tensor& t : processed->outputs) kept_outputs.push_back(std::move(t));
    }
    if (processed->layer) {
      report.layers.push_back(*processed->layer);
      layer_tensor.push_back(index);
    }
    observer->OnTensorDone(info.name, processed->layer ? &report.layers.back() : nullptr,
                           report.summary.bytes_read, model->bytes_written());
    note_commits(index);
    return absl::OkStatus();
  };
  // The calibrated block being written: its results and the tensors it read, handed to the stream.
  CalibratedBlock block;
  std::vector<ImatrixEntry> imatrix;  // write_imatrix: each calibrated layer's input statistics
  const Architecture* arch = FindArchitecture(reader->descriptor().architecture);
  std::map<std::string, Tensor*> block_tensors;
  const size_t max_in_flight = static_cast<size_t>(std::max(1, options.max_tensors_in_flight));
  int replayed_block = -1;
  for (size_t i = static_cast<size_t>(resume.tensors_done); i < plan.size(); ++i) {
    PlannedTensor& p = plan[i];
    const int layer = LayerIndexOf(p.info.name);
    if (layer >= 0 && layer < resume.block) {
      // A block the interrupted attempt finished: its outputs as that attempt packed them.
      if (layer != replayed_block) {
        while (!window.empty()) RETURN_IF_ERROR(write_oldest());
        replayed_block = layer;
        ASSIGN_OR_RETURN(std::unique_ptr<CheckpointReader> scratch,
                         OpenSafetensors(destination, JoinUri(output.staging(), BlockScratchName(layer))));
        std::vector<TensorInfo> in_write_order = scratch->tensors();  // the header lists them by name
        std::sort(in_write_order.begin(), in_write_order.end(),
                  [](const TensorInfo& a, const TensorInfo& b) { return a.offset < b.offset; });
        for (const TensorInfo& t : in_write_order) {
          ASSIGN_OR_RETURN(Tensor tensor, scratch->Read(t));
          RETURN_IF_ERROR(model->Append(tensor.name, tensor.bytes));
        }
      }
      continue;
    }
    if (calibrator && layer >= calibrator->next_block()) {
      // Everything of the previous block is written before its results go.
      while (!window.empty()) RETURN_IF_ERROR(write_oldest());
      RETURN_IF_ERROR(checkpoint_block(calibrator->next_block()));
      while (calibrator->next_block() <= layer) {
        ASSIGN_OR_RETURN(block, calibrator->Next());
      }
      block_tensors.clear();
      for (Tensor& t : block.tensors) block_tensors[t.name] = &t;
      for (PlannedTensor& q : plan) {
        if (LayerIndexOf(q.info.name) != block.index) continue;
        if (auto it = block.layers.find(q.info.name); it != block.layers.end()) {
          q.calibrated = &it->second;
          if (spec.write_imatrix && arch != nullptr) {
            imatrix.push_back({GgufTensorName(*arch, q.info.name), it->second.input_sum2, it->second.input_tokens});
          }
        }
        if (auto it = block.replaced.find(q.info.name); it != block.replaced.end()) q.replacement = &it->second;
      }
    }
    // Make room before reading: the window never holds more than the bounds allow (beyond one tensor).
    while (!window.empty() && (window.size() >= max_in_flight ||
                               bytes_in_flight + p.info.size > options.max_bytes_in_flight)) {
      RETURN_IF_ERROR(write_oldest());
    }
    RETURN_IF_ERROR(observer->CheckCancelled());
    // Calibrated jobs report by block, from the calibrator; data-free ones by tensor.
    if (!calibrator) observer->Progress({JobPhase::kQuantizing, static_cast<int64_t>(i), static_cast<int64_t>(plan.size()), p.info.name});
    Tensor tensor;
    if (p.calibrated != nullptr) {
      tensor = Tensor{p.info.name, p.info.dtype, p.info.shape, {}};  // read, quantized and measured by the calibrator
    } else if (auto it = block_tensors.find(p.info.name); it != block_tensors.end()) {
      tensor = std::move(*it->second);
      block_tensors.erase(it);
    } else {
      ASSIGN_OR_RETURN(tensor, reader->Read(p.info));
    }
    report.summary.bytes_read += p.info.size;
    bytes_in_flight += p.info.size;
    auto work = [&p, t = std::move(tensor), observer]() mutable { return ProcessTensor(p, std::move(t), observer); };
    if (options.pool != nullptr) {
      window.emplace_back(i, options.pool->Submit(std::move(work)));
    } else {
      std::promise<absl::StatusOr<ProcessedTensor>> done;
      done.set_value(work());
      window.emplace_back(i, done.get_future());
    }
  }
  while (!window.empty()) RETURN_IF_ERROR(write_oldest());
  observer->Progress({JobPhase::kWriting, 0, 1, "model"});
  RETURN_IF_ERROR(model->Finish(&output, &report));

  const bool gguf = JobFormat(spec) == OutputFormat::kGguf;
  const nlohmann::json quantize_config =
      gguf ? nlohmann::json{{"format", "gguf"}, {"gguf_type", spec.gguf_type}} : QuantizationConfig(spec, *reader, plan);
  if (!gguf) {  // a GGUF file carries its own metadata
    nlohmann::json config = reader->descriptor().config;
    config["quantization_config"] = quantize_config;
    // The stored scales and every tensor kept in high precision are FP16 (transformers 4.x read
    // torch_dtype, newer releases dtype).
    config["torch_dtype"] = "float16";
    config["dtype"] = "float16";
    RETURN_IF_ERROR(output.WriteAll("config.json", config.dump(2), &report));
    RETURN_IF_ERROR(output.WriteAll("quantize_config.json", quantize_config.dump(2), &report));
  }

  if (allocated) RETURN_IF_ERROR(output.WriteAll(kMeasurementFile, allocated->measurement.ToJson().dump(1), &report));
  if (spec.write_imatrix) {
    static constexpr char kImatrixFile[] = "imatrix.gguf";
    ASSIGN_OR_RETURN(std::unique_ptr<ObjectWriter> out, output.NewWriter(kImatrixFile));
    RETURN_IF_ERROR(WriteImatrix(out.get(), imatrix, spec.calibration.text_uri, spec.calibration.samples, spec.calibration.seqlen));
    report.files.push_back({kImatrixFile, out->bytes_written()});
    report.summary.bytes_written += out->bytes_written();
  }
  RETURN_IF_ERROR(CopyServingFiles(source, spec, &output, &report));
  if (!spec.evaluation.text_uri.empty()) {
    ASSIGN_OR_RETURN(report.evaluation,
                     EvaluateOutput(*reader, source, destination, output.staging(), spec, observer, options));
  }
  Summarize(&report);
  RETURN_IF_ERROR(output.WriteAll("README.md", ModelCard(spec, report, quantize_config), &report));
  report.summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  RETURN_IF_ERROR(output.WriteAll(kReportFile, ToJson(report).dump(2), &report));
  if (observer != nullptr) RETURN_IF_ERROR(observer->BeforeCommit());
  RETURN_IF_ERROR(output.Commit(kReportFile));
  return report;
}

}  // namespace lowbit

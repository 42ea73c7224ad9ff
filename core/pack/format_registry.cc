#include "core/pack/format_registry.h"

#include "absl/strings/str_cat.h"
#include "core/pack/awq.h"
#include "core/pack/gptq.h"
#include "core/pack/native.h"

namespace lowbit {
namespace {

bool UniformGrid(Method m) { return IsUniformGridMethod(m); }
bool AnyMethod(Method) { return true; }
bool GgufMethod(Method m) { return m == Method::kRtn || m == Method::kGptq || m == Method::kAwq; }

const QuantizedTensor* GridOf(const QuantizedLayer& layer) { return std::get_if<QuantizedTensor>(&layer); }

OutputFormatTraits Gptq() {
  OutputFormatTraits t{OutputFormat::kGptq, "gptq", "rtn, int8, gptq or awq", UniformGrid};
  t.shape_problem = [](int64_t rows, int64_t cols, const QuantConfig& q) {
    return GptqShapeProblem(rows, cols, q.group_size > cols ? -1 : q.group_size);
  };
  t.check = [](const QuantConfig& q) {
    if (GptqSupportsBits(q.bits)) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat("bits: the GPTQ format packs 2, 3, 4 or 8 bits, not ", q.bits));
  };
  t.tensor_specs = [](const std::string& prefix, int64_t rows, int64_t cols, const QuantConfig& q, std::map<std::string, std::string>*) {
    return GptqTensorSpecs(prefix, rows, cols, q.bits, q.group_size);
  };
  t.pack = [](const std::string& prefix, const QuantizedLayer& layer) -> absl::StatusOr<std::vector<Tensor>> {
    const QuantizedTensor* grid = GridOf(layer);
    if (grid == nullptr) return absl::InternalError("the GPTQ format got a codebook, OneBit or ggml layer");
    return PackGptq(prefix, *grid, GptqZerosFor(grid->symmetric));
  };
  return t;
}

OutputFormatTraits Awq() {
  OutputFormatTraits t{OutputFormat::kAwq, "awq", "rtn, int8, gptq or awq", UniformGrid};
  t.quantized_lm_head = false;  // transformers and vLLM load AWQ's lm_head in FP16
  t.shape_problem = [](int64_t rows, int64_t cols, const QuantConfig& q) { return AwqShapeProblem(rows, cols, q.group_size); };
  t.check = [](const QuantConfig& q) {
    if (q.bits == 4 && !q.act_order) return absl::OkStatus();
    return absl::InvalidArgumentError("output_format: the AWQ format packs 4-bit codes in sequential groups only");
  };
  t.tensor_specs = [](const std::string& prefix, int64_t rows, int64_t cols, const QuantConfig& q, std::map<std::string, std::string>*) {
    return AwqTensorSpecs(prefix, rows, cols, q.group_size);
  };
  t.pack = [](const std::string& prefix, const QuantizedLayer& layer) -> absl::StatusOr<std::vector<Tensor>> {
    const QuantizedTensor* grid = GridOf(layer);
    if (grid == nullptr) return absl::InternalError("the AWQ format got a codebook, OneBit or ggml layer");
    return PackAwq(prefix, *grid);
  };
  return t;
}

OutputFormatTraits Native() {
  OutputFormatTraits t{OutputFormat::kNative, "native", "any method", AnyMethod};
  t.tensor_specs = [](const std::string& prefix, int64_t rows, int64_t cols, const QuantConfig& q,
                      std::map<std::string, std::string>* metadata) {
    const NativeLayout layout = NativeLayoutFor(rows, cols, q);
    (*metadata)[kNativeLayoutKeyPrefix + prefix] = layout.ToJson().dump();
    return NativeTensorSpecs(prefix, layout);
  };
  t.pack = PackNative;
  return t;
}

OutputFormatTraits Gguf() {
  OutputFormatTraits t{OutputFormat::kGguf, "gguf", "rtn, gptq or awq", GgufMethod};
  t.overrides = false;  // a file's types come from its gguf_type (a mixture names them per tensor)
  return t;
}

}  // namespace

const std::vector<OutputFormatTraits>& OutputFormats() {
  static const std::vector<OutputFormatTraits> formats = {Gptq(), Awq(), Native(), Gguf()};
  return formats;
}

const OutputFormatTraits& FormatTraits(OutputFormat format) {
  for (const OutputFormatTraits& t : OutputFormats()) {
    if (t.format == format) return t;
  }
  return OutputFormats().front();
}

absl::string_view FormatName(OutputFormat format) {
  return format == OutputFormat::kAuto ? "auto" : FormatTraits(format).name;
}

std::optional<OutputFormat> ParseFormat(absl::string_view name) {
  if (name == "auto") return OutputFormat::kAuto;
  for (const OutputFormatTraits& t : OutputFormats()) {
    if (t.name == name) return t.format;
  }
  return std::nullopt;
}

OutputFormat ResolveFormat(OutputFormat format, Method method) {
  if (format != OutputFormat::kAuto) return format;
  return IsUniformGridMethod(method) ? OutputFormat::kGptq : OutputFormat::kNative;
}

}  // namespace lowbit

// The output formats as one table (DESIGN.md, "The four tables"), in the manner of ggml's type_traits[]:
// for each, the method results it takes, the layer shapes its engines load, the configs its layout holds,
// and — for the safetensors formats — a layer's tensors and their packing. The job looks everything up
// here; GGUF, whose container names, orders and types its own tensors, has its own half in
// core/job/gguf_output.h.
#ifndef LOWBIT_CORE_PACK_FORMAT_REGISTRY_H_
#define LOWBIT_CORE_PACK_FORMAT_REGISTRY_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/checkpoint/safetensors.h"
#include "core/quant/quantized_tensor.h"
#include "core/quant/quantizer.h"

namespace lowbit {

// kAuto: GPTQ for the uniform-grid methods (rtn, int8, gptq, awq), native for lut, vq and onebit.
// kGguf: one model.gguf for llama.cpp, its linear layers in `QuantizeJobSpec::gguf_type` blocks.
enum class OutputFormat { kAuto, kGptq, kAwq, kNative, kGguf };

struct OutputFormatTraits {
  OutputFormat format;
  const char* name;               ///< "gptq"
  const char* methods;            ///< the methods it takes, in words, for errors
  bool (*accepts)(Method method);
  bool quantized_lm_head = true;  ///< its engines load a quantized lm_head
  bool overrides = true;          ///< per-layer configs (--override)
  // Why its engines cannot load a rows x cols layer quantized with `quant`; "" if they can. Null: any shape.
  std::string (*shape_problem)(int64_t rows, int64_t cols, const QuantConfig& quant) = nullptr;
  // INVALID_ARGUMENT, naming the field, for a config its layout cannot hold. Null: any.
  absl::Status (*check)(const QuantConfig& quant) = nullptr;
  // The safetensors formats: a layer's tensors (and the file metadata they need), and their packing.
  // Null for GGUF.
  std::vector<TensorSpec> (*tensor_specs)(const std::string& prefix, int64_t rows, int64_t cols, const QuantConfig& quant,
                                          std::map<std::string, std::string>* metadata) = nullptr;
  absl::StatusOr<std::vector<Tensor>> (*pack)(const std::string& prefix, const QuantizedLayer& layer) = nullptr;
};

// The written formats (kAuto resolves to one of them).
const std::vector<OutputFormatTraits>& OutputFormats();
const OutputFormatTraits& FormatTraits(OutputFormat format);  ///< `format` must not be kAuto

absl::string_view FormatName(OutputFormat format);
std::optional<OutputFormat> ParseFormat(absl::string_view name);
// The format a job writes: `format`, or for kAuto the method's natural one.
OutputFormat ResolveFormat(OutputFormat format, Method method);

}  // namespace lowbit

#endif  // LOWBIT_CORE_PACK_FORMAT_REGISTRY_H_

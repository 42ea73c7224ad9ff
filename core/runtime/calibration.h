// Calibration for data-aware quantizers: token windows from a text; layer-wise methods run block by block
// on the model itself, each block seeing the outputs of the already-quantized blocks before it (as GPTQ
// does), and inside a block true-sequentially: q/k/v, then o, then gate/up, then down, each on inputs that
// come through the layers quantized just before. AWQ instead calibrates on the float model's activations.
#ifndef LOWBIT_CORE_RUNTIME_CALIBRATION_H_
#define LOWBIT_CORE_RUNTIME_CALIBRATION_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/quant/awq.h"
#include "core/quant/gptq.h"
#include "core/quant/quantized_tensor.h"
#include "core/runtime/llama_model.h"
#include "core/runtime/tokenizer.h"
#include "core/storage/object_store.h"

namespace lowbit {

struct CalibrationOptions {
  int samples = 32;     ///< token windows
  int seqlen = 128;     ///< tokens per window (starting with BOS)
  uint32_t seed = 0;    ///< picks the windows
};

// `samples` windows of `seqlen` tokens drawn with `seed` from the text at `uri` (tokenized line by line),
// or, for a URI ending in ".ids.json", from pre-tokenized ids: one JSON array of token ids (a stream
// windows are drawn from) or an array of arrays (windows used as given, cut to `seqlen`). INVALID_ARGUMENT
// if there are too few tokens or an id is outside the vocabulary.
absl::StatusOr<std::vector<std::vector<int>>> CalibrationWindows(ObjectStore* store, absl::string_view uri,
                                                                 const Llama2cTokenizer& tokenizer,
                                                                 const CalibrationOptions& options);

// A layer quantized on calibration data, with what the report should say about it.
struct CalibratedLayer {
  QuantizedLayer tensor;
  std::string note;
  std::optional<double> relative_error;  ///< set when `tensor` approximates other weights than the checkpoint's (AWQ)
  double seconds = 0;                    ///< time spent quantizing this layer
};

// Quantizes one layer from the statistics of its inputs.
using LayerQuantizeFn =
    std::function<absl::StatusOr<CalibratedLayer>(const std::string& name, const Matrix& w, const CalibrationStats& stats)>;

// Quantizes every decoder-block linear layer of `model` that `include` accepts with `quantize` (GPTQ, VQ,
// sensitive LUT, refined OneBit), replacing its weights in the model by the dequantized values as it goes.
// Returns the results by weight name. `progress` is told each layer as it is done.
absl::StatusOr<std::map<std::string, CalibratedLayer>> RunSequential(
    LlamaModel& model, const std::vector<std::vector<int>>& windows, const LayerQuantizeFn& quantize,
    const std::function<bool(const std::string&)>& include,
    const std::function<void(const std::string&)>& progress = nullptr);

// AWQ on the whole model: per decoder block, on inputs from the float model (as AutoAWQ), the scale search
// for q/k/v on the attention's output (folded into the attention RMSNorm), v→o on o_proj's output (when v's
// outputs are o's inputs, i.e. without grouped-query attention), gate/up on the MLP's output (into the MLP
// RMSNorm) and up→down on down_proj's output; then each included layer is clip-searched and quantized on
// its scaled input. The model's weights are left unchanged.
struct AwqModelResult {
  std::map<std::string, CalibratedLayer> layers;     ///< quantized layers by weight name
  std::map<std::string, std::vector<float>> replaced;  ///< tensors whose float values the scales changed
};
absl::StatusOr<AwqModelResult> RunAwq(LlamaModel& model, const std::vector<std::vector<int>>& windows,
                                      const AwqOptions& options, const std::function<bool(const std::string&)>& include);

}  // namespace lowbit

#endif  // LOWBIT_CORE_RUNTIME_CALIBRATION_H_

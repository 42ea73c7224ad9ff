// Calibration for data-aware quantizers: token windows from a text, and GPTQ run block by block on the
// model itself, each block seeing the outputs of the already-quantized blocks before it (as GPTQ does),
// and inside a block true-sequentially: q/k/v, then o, then gate/up, then down, each on inputs that
// come through the layers quantized just before.
#ifndef LOWBIT_CORE_RUNTIME_CALIBRATION_H_
#define LOWBIT_CORE_RUNTIME_CALIBRATION_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/quant/gptq.h"
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

// Quantizes every decoder-block linear layer of `model` with GPTQ (replacing its weights in the model
// by the quantized values as it goes). `include` decides which layers are quantized. Returns the
// quantized tensors by weight name. `progress` is told each layer as it is done.
absl::StatusOr<std::map<std::string, GptqResult>> RunSequentialGptq(
    LlamaModel& model, const std::vector<std::vector<int>>& windows, const GptqOptions& options,
    const std::function<bool(const std::string&)>& include,
    const std::function<void(const std::string&)>& progress = nullptr);

}  // namespace lowbit

#endif  // LOWBIT_CORE_RUNTIME_CALIBRATION_H_

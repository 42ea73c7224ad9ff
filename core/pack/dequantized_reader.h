// A reader over a quantized checkpoint (GPTQ, AWQ or lowbit native layout) that presents every quantized
// layer as its dequantized float32 `<prefix>.weight` and every other tensor as stored, so any method's
// output is evaluated by the same forward pass as the source model.
//
// Layers are recognised by their parts: `.qweight` with `.g_idx` is GPTQ, `.qweight` without it AWQ (group
// size from config.json's quantization_config), and a "lowbit.layout.<prefix>" metadata entry the native
// layout. Parts are read and checked when the layer is read.
#ifndef LOWBIT_CORE_PACK_DEQUANTIZED_READER_H_
#define LOWBIT_CORE_PACK_DEQUANTIZED_READER_H_

#include <memory>

#include "absl/status/statusor.h"
#include "core/checkpoint/checkpoint_reader.h"
#include "core/storage/object_store.h"

namespace lowbit {

absl::StatusOr<std::unique_ptr<CheckpointReader>> OpenDequantized(ObjectStore* store, absl::string_view uri);

}  // namespace lowbit

#endif  // LOWBIT_CORE_PACK_DEQUANTIZED_READER_H_

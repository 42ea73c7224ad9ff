// GGUF v3, the container llama.cpp, Ollama and LM Studio load (ggml's docs/gguf.md): a header (magic,
// version, tensor count, metadata key/values, tensor infos with offsets), then every tensor's data,
// 32-byte aligned. Everything but the data is known before the data is written, so the writer streams:
// header first, then each tensor as it arrives. The reader presents a GGUF file as a checkpoint like any
// other: Hugging Face names and layout (q/k rows back in HF's order), every tensor dequantized to F32
// through the ggml table's dequantization.
#ifndef LOWBIT_CORE_CHECKPOINT_GGUF_H_
#define LOWBIT_CORE_CHECKPOINT_GGUF_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "core/checkpoint/checkpoint_reader.h"
#include "core/quant/ggml_types.h"
#include "core/storage/object_store.h"

namespace lowbit {

// A metadata value of the kinds lowbit writes (gguf_type UINT32, INT32, FLOAT32, BOOL, STRING and arrays).
// Read back, any unsigned integer is kU32, any signed one kI32, FLOAT64 kF32, and an array of another
// element type kArray with its length in `integer`.
struct GgufValue {
  enum class Kind { kU32, kI32, kF32, kBool, kString, kStrings, kF32s, kI32s, kArray };
  Kind kind = Kind::kU32;
  uint64_t integer = 0;
  double number = 0;
  std::string text;
  std::vector<std::string> texts;
  std::vector<float> floats;
  std::vector<int32_t> ints;

  static GgufValue U32(uint32_t v);
  static GgufValue I32(int32_t v);
  static GgufValue F32(float v);
  static GgufValue Bool(bool v);
  static GgufValue String(std::string v);
  static GgufValue Strings(std::vector<std::string> v);
  static GgufValue F32s(std::vector<float> v);
  static GgufValue I32s(std::vector<int32_t> v);
};
using GgufMetadata = std::vector<std::pair<std::string, GgufValue>>;

// A tensor of the file: `shape` as HF writes it ([rows, cols]; written reversed, ggml's ne[0] first).
struct GgufTensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  GgmlType type = GgmlType::kF32;
  uint64_t Bytes() const;
};

class GgufWriter {
 public:
  static constexpr uint64_t kAlignment = 32;  // general.alignment's default

  // Writes the header. INVALID_ARGUMENT for a tensor whose rows are not whole blocks of its type.
  static absl::StatusOr<std::unique_ptr<GgufWriter>> Create(ObjectWriter* out, const GgufMetadata& metadata,
                                                            std::vector<GgufTensorSpec> tensors);
  // The next tensor's data, in spec order, of exactly its size.
  absl::Status Append(absl::string_view name, absl::string_view bytes);
  // FAILED_PRECONDITION unless every tensor was appended.
  absl::Status Finish() const;

 private:
  GgufWriter(ObjectWriter* out, std::vector<GgufTensorSpec> tensors) : out_(out), tensors_(std::move(tensors)) {}
  ObjectWriter* const out_;
  const std::vector<GgufTensorSpec> tensors_;
  size_t next_ = 0;
};

// A GGUF file's header as read.
struct GgufHeader {
  struct Entry {
    std::string name;
    std::vector<int64_t> shape;  ///< HF order ([rows, cols]), ggml's ne reversed
    GgmlType type = GgmlType::kF32;
    uint64_t offset = 0;         ///< absolute, in the file
    uint64_t bytes = 0;
  };
  uint32_t version = 0;
  GgufMetadata metadata;
  std::vector<Entry> tensors;
  const GgufValue* Find(absl::string_view key) const;  ///< null if absent
};

// INVALID_ARGUMENT for a file that is not GGUF v2/v3 or whose header is cut short or inconsistent;
// UNIMPLEMENTED for a tensor type outside the ggml table, naming it.
absl::StatusOr<GgufHeader> ReadGgufHeader(ObjectStore* store, absl::string_view uri);

// A GGUF file of an architecture in the architecture table, as a checkpoint. UNIMPLEMENTED for another
// architecture or rope scaling lowbit does not read.
absl::StatusOr<std::unique_ptr<CheckpointReader>> OpenGguf(ObjectStore* store, absl::string_view uri);

}  // namespace lowbit

#endif  // LOWBIT_CORE_CHECKPOINT_GGUF_H_

// GGUF v3, the container llama.cpp, Ollama and LM Studio load (ggml's docs/gguf.md): a header (magic,
// version, tensor count, metadata key/values, tensor infos with offsets), then every tensor's data,
// 32-byte aligned. Everything but the data is known before the data is written, so the writer streams:
// header first, then each tensor as it arrives.
#ifndef LOWBIT_CORE_CHECKPOINT_GGUF_H_
#define LOWBIT_CORE_CHECKPOINT_GGUF_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "core/pack/ggml_types.h"
#include "core/storage/object_store.h"

namespace lowbit {

// A metadata value of the kinds lowbit writes (gguf_type UINT32, INT32, FLOAT32, BOOL, STRING and arrays).
struct GgufValue {
  enum class Kind { kU32, kI32, kF32, kBool, kString, kStrings, kF32s, kI32s };
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

}  // namespace lowbit

#endif  // LOWBIT_CORE_CHECKPOINT_GGUF_H_

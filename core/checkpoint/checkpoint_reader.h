// CheckpointReader: the tensors of a model checkpoint, listed from its header(s) and read one at a time.
//
// Opening reads only headers; Read() fetches one tensor's byte range from the object store, so memory
// follows the largest tensor, not the model. Every reader presents tensors under Hugging Face names and
// in the HF layout, whatever the file format. Thread-safe after creation (Read may run concurrently).
#ifndef LOWBIT_CORE_CHECKPOINT_CHECKPOINT_READER_H_
#define LOWBIT_CORE_CHECKPOINT_CHECKPOINT_READER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/checkpoint/model_descriptor.h"
#include "core/storage/object_store.h"
#include "core/tensor/tensor.h"

namespace lowbit {

struct TensorInfo {
  std::string name;             ///< Hugging Face name, e.g. "model.layers.0.self_attn.q_proj.weight"
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::string uri;              ///< object holding the bytes
  uint64_t offset = 0;          ///< absolute byte offset inside `uri`
  uint64_t size = 0;            ///< bytes = NumElements(shape) * DTypeSize(dtype)
};

class CheckpointReader {
 public:
  virtual ~CheckpointReader() = default;

  // Tensors in the order they are best streamed (decoder block by decoder block).
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const ModelDescriptor& descriptor() const { return descriptor_; }
  // The file's string metadata (safetensors `__metadata__`; empty for other formats).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Total bytes of all tensors.
  uint64_t total_bytes() const;

  // Reads one tensor. DATA_LOSS if the store returns fewer bytes than the header promised.
  virtual absl::StatusOr<Tensor> Read(const TensorInfo& info) const;

 protected:
  explicit CheckpointReader(ObjectStore* store) : store_(store) {}
  ObjectStore* const store_;  ///< not owned
  std::vector<TensorInfo> tensors_;
  ModelDescriptor descriptor_;
  std::map<std::string, std::string> metadata_;
};

// Sorts tensors into streaming order: embeddings, then decoder block by decoder block (by name inside a
// block), then everything else. Every reader uses it, so outputs do not depend on the input format.
void SortForStreaming(std::vector<TensorInfo>* tensors);

// Opens a checkpoint by URI: a `.safetensors` file, a `model.safetensors.index.json`, a llama2.c `.bin`,
// or a directory holding one of them. NOT_FOUND if nothing is there.
// The directory of a checkpoint given as a file (.safetensors, .index.json, llama2.c .bin) or as a folder,
// and its name (that directory's last path part, or for a file at the store's root its name without the
// extension): where its companion files sit, what the output is called.
std::string CheckpointDirectory(absl::string_view uri);
std::string CheckpointName(absl::string_view uri);

absl::StatusOr<std::unique_ptr<CheckpointReader>> OpenCheckpoint(ObjectStore* store, absl::string_view uri);

}  // namespace lowbit

#endif  // LOWBIT_CORE_CHECKPOINT_CHECKPOINT_READER_H_

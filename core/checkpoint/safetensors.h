// safetensors: reader (single file or sharded through model.safetensors.index.json) and streaming writer.
//
// Format: an 8-byte little-endian header length N, N bytes of JSON
// {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {...}},
// then the data; offsets are relative to the end of the header. Untrusted headers are validated here:
// length past the end, bad JSON, unknown dtypes, offsets out of range or overlapping, byte size vs shape.
#ifndef LOWBIT_CORE_CHECKPOINT_SAFETENSORS_H_
#define LOWBIT_CORE_CHECKPOINT_SAFETENSORS_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/checkpoint/checkpoint_reader.h"
#include "core/storage/object_store.h"

namespace lowbit {

// Parses the header of one safetensors object; offsets in the result are absolute. The string map of
// `__metadata__`, if any, is added to `metadata` (may be null).
absl::StatusOr<std::vector<TensorInfo>> ReadSafetensorsHeader(ObjectStore* store, absl::string_view uri,
                                                               std::map<std::string, std::string>* metadata = nullptr);

// Opens `uri` (a .safetensors file or a model.safetensors.index.json); config.json is read from the same
// directory if present.
absl::StatusOr<std::unique_ptr<CheckpointReader>> OpenSafetensors(ObjectStore* store, absl::string_view uri);

// What the writer is told up front about each tensor: the header is written before any data.
struct TensorSpec {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
};

// INVALID_ARGUMENT naming the tensor unless `t` has the spec's dtype and shape and the bytes they need.
absl::Status ExpectSpec(const Tensor& t, const TensorSpec& spec);

// Streams a safetensors object: the header from the full list of specs, then each tensor's bytes in the
// same order. Not thread-safe. The ObjectWriter is owned by the caller, who commits it after Finish().
class SafetensorsWriter {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsWriter>> Create(
      ObjectWriter* out, std::vector<TensorSpec> specs,
      const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

  // Appends the next tensor's bytes; INVALID_ARGUMENT if `name` or the size is not the one expected next.
  absl::Status Append(absl::string_view name, absl::string_view bytes);
  // FAILED_PRECONDITION unless every tensor was appended.
  absl::Status Finish() const;

 private:
  SafetensorsWriter(ObjectWriter* out, std::vector<TensorSpec> specs) : out_(out), specs_(std::move(specs)) {}
  ObjectWriter* const out_;
  const std::vector<TensorSpec> specs_;
  size_t next_ = 0;
};

// A model's tensors streamed into Hugging Face shards: consecutive tensors fill files of at most
// `shard_bytes` of tensor data (a tensor larger than that gets a file of its own), named as
// save_pretrained names them: "model.safetensors" when one file holds everything, else
// "model-0000k-of-0000n.safetensors" plus "model.safetensors.index.json" ({"metadata": {"total_size"},
// "weight_map": {tensor: file}}). Shard boundaries follow from the specs alone, so every header is known
// before data is written; each shard is committed as soon as its last tensor is appended.
class ShardedSafetensorsWriter {
 public:
  using OpenFile = std::function<absl::StatusOr<std::unique_ptr<ObjectWriter>>(const std::string& file_name)>;
  struct File {
    std::string name;
    uint64_t bytes = 0;  ///< as written, header included
  };

  // `metadata` goes into every shard's header. `committed`: the first shards, already written whole by an
  // earlier attempt with the same specs (a resumed job); writing starts at the next. INVALID_ARGUMENT if
  // they are not the plan's first shards by name.
  static absl::StatusOr<std::unique_ptr<ShardedSafetensorsWriter>> Create(OpenFile open, std::vector<TensorSpec> specs,
                                                                         std::map<std::string, std::string> metadata,
                                                                         uint64_t shard_bytes,
                                                                         std::vector<File> committed = {});
  // The next tensor in spec order.
  absl::Status Append(absl::string_view name, absl::string_view bytes);
  // FAILED_PRECONDITION unless every tensor was appended; the last shard is committed.
  absl::Status Finish();
  // The files written so far (committed shards), and the index JSON when there is more than one shard.
  const std::vector<File>& files() const { return files_; }
  std::string IndexJson() const;
  int num_shards() const { return static_cast<int>(shards_.size()); }
  // The shard tensor `name` goes to (its position in the plan), or -1.
  int ShardOf(absl::string_view name) const;
  // Bytes written so far, over every shard.
  uint64_t bytes_written() const;

 private:
  struct Shard {
    std::string name;
    std::vector<TensorSpec> specs;
  };
  ShardedSafetensorsWriter(OpenFile open, std::vector<Shard> shards, std::map<std::string, std::string> metadata)
      : open_(std::move(open)), shards_(std::move(shards)), metadata_(std::move(metadata)) {}
  absl::Status OpenNext();
  absl::Status CommitCurrent();

  OpenFile open_;
  std::vector<Shard> shards_;
  std::map<std::string, std::string> metadata_;
  size_t current_ = 0;     ///< shard being written
  size_t in_shard_ = 0;    ///< tensors appended to it
  std::unique_ptr<ObjectWriter> out_;
  std::unique_ptr<SafetensorsWriter> writer_;
  std::vector<File> files_;
};

// Writes a complete in-memory list of tensors as one committed safetensors object (small files, tests).
absl::Status WriteSafetensors(ObjectStore* store, absl::string_view uri, const std::vector<Tensor>& tensors);

}  // namespace lowbit

#endif  // LOWBIT_CORE_CHECKPOINT_SAFETENSORS_H_
